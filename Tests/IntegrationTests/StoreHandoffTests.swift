import Foundation
import Locking
import Testing
import VMM
import XenABI
import XenStore
#if canImport(Glibc)
import Glibc
#endif

/// Issue 12's guest process against a daemon's store: this test process
/// plays the daemon (a `XenStoreServer`, two socketpairs served as dom0 and
/// as the guest's domain) and starts `pvh run` with the hidden handover
/// options, the far ends inherited as descriptors 3 and 4. As the daemon
/// does, it writes the toolstack's nodes first (the home with its
/// permissions, name, vm, domid; Toolstack's DomainStoreNodes); the guest's
/// XenStore scenario runs over the relay, the rest of its tree and its
/// disk's xenbus handshake land in this process's store. Every wait is bounded.
@Suite("a guest process on a daemon's store (pvh run --store-fd)", .serialized,
       .enabled(if: Env.hasKVM, "needs /dev/kvm (read-write)"),
       .enabled(if: Env.hasPVHBinary, "needs .build/debug/pvh: run `swift build` first"))
struct StoreHandoffTests {
    static let domain: UInt16 = 7

    /// Starts `path` with `descriptors` (source → number in the child) and
    /// stdin from /dev/null, stdout and stderr to files: Foundation's
    /// Process closes every descriptor above 2, which is the point here.
    static func spawn(_ path: String, _ arguments: [String], descriptors: [(Int32, Int32)],
                      stdout: String, stderr: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        for (source, target) in descriptors {
            // dup2 clears close-on-exec on the copy; the sources are high numbers.
            posix_spawn_file_actions_adddup2(&actions, source, target)
        }
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
        guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO) }
        return pid
    }

    /// Waits up to `timeout` for `pid` to exit (a thread in waitpid); kills it past that.
    static func wait(_ pid: pid_t, timeout: Duration) -> Int32? {
        let status = Lock<Int32?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            var s: Int32 = 0
            while waitpid(pid, &s, 0) < 0 && errno == EINTR {}
            status.withLock { $0 = (s & 0x7f) == 0 ? (s >> 8) & 0xff : 128 + (s & 0x7f) }
            done.signal()
        }.start()
        let seconds = Int(timeout.components.seconds)
        if done.wait(timeout: .now() + .seconds(seconds)) == .timedOut {
            kill(pid, SIGKILL)
            _ = done.wait(timeout: .now() + .seconds(30))
            return nil
        }
        return status.withLock { $0 }
    }

    @Test("the xenstore scenario passes over the relay; /local/domain/7 and the vbd's Connected handshake are in the daemon's store; @releaseDomain at the end")
    func guestProcessOnDaemonStore() throws {
        let elf = try Env.testGuest.get()
        let server = XenStoreServer()
        let (controlNear, controlFar) = try UnixSocket.pair()
        let (guestNear, guestFar) = try UnixSocket.pair()
        defer {
            controlFar.close()
            guestFar.close()
        }
        let control = try #require(XenStoreStreamConnection.start(socket: controlNear, server: server, domain: .controlDomain,
                                                                privileged: true, flowControl: false))
        let guestEnd = try #require(XenStoreStreamConnection.start(socket: guestNear, server: server,
                                                                 domain: DomainID(rawValue: Self.domain),
                                                                 privileged: false, flowControl: true))
        defer {
            control.hangUp()
            guestEnd.hangUp()
        }
        let home = "/local/domain/\(Self.domain)"
        let name = "handoff-\(getpid())"
        let vm = "/vm/00000000-0000-4000-8000-00000000000\(Self.domain)"
        // The daemon's part of the tree, before the guest process starts.
        let readOnly = XenStorePermissions(owner: .controlDomain, defaultAccess: .none, entries: [(DomainID(rawValue: Self.domain), .read)])
        for path in [home, vm] {
            try server.mkdir(path)
            try server.setPermissions(path, readOnly)
        }
        try server.write("\(home)/name", name)
        try server.write("\(home)/vm", vm)
        try server.write("\(home)/domid", String(Self.domain))
        let vbd = "/local/domain/0/backend/vbd/\(Self.domain)/51712"
        // What the daemon's store saw while the guest ran (the tree goes when it ends).
        struct Seen: Sendable {
            var homeTree: [String] = []
            var name: String?
            var domid: String?
            var guestWrote: String?
            var consoleType: String?
            var vbdStates: [String] = []
            var released = false
        }
        let seen = Lock(Seen())
        _ = try server.watch(home, token: "home") { path, _ in
            if path == "\(home)/data/pvhtest", seen.withLock({ $0.guestWrote == nil }) {
                let tree = (try? server.directory(home)) ?? []
                let name = try? server.read("\(home)/name"), domid = try? server.read("\(home)/domid")
                let value = try? server.read(path), console = try? server.read("\(home)/console/type")
                seen.withLock { s in
                    s.homeTree = tree
                    s.name = name
                    s.domid = domid
                    s.guestWrote = value
                    s.consoleType = console
                }
            }
        }
        _ = try server.watch("\(vbd)/state", token: "vbd") { path, _ in
            if let v = try? server.read(path) { seen.withLock { $0.vbdStates.append(v) } }
        }
        _ = try server.watch("@releaseDomain", token: "rel") { _, _ in
            if !server.isIntroduced(DomainID(rawValue: Self.domain)) { seen.withLock { $0.released = true } }
        }

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-handoff-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let disk = "\(dir)/disk.img"
        #expect(FileManager.default.createFile(atPath: disk, contents: nil))
        try FileHandle(forWritingTo: URL(fileURLWithPath: disk)).truncate(atOffset: 16 << 20)
        let pid = try Self.spawn(
            Env.pvhBinary,
            ["run", "--kernel", elf, "--memory", "32", "--name", name,
             "--cmdline", "pvh.scenarios=xenstore,blk_rw pvh.blkseed=3", "--hypervisor-console", "stdout", "--disk", "\(disk),raw,xvda,w",
             "--store-fd", "3", "--guest-store-fd", "4", "--domid", String(Self.domain)],
            descriptors: [(controlFar.fd, 3), (guestFar.fd, 4)], stdout: "\(dir)/out", stderr: "\(dir)/err")
        let status = Self.wait(pid, timeout: .seconds(180))
        let out = (try? String(contentsOfFile: "\(dir)/out", encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: "\(dir)/err", encoding: .utf8)) ?? ""
        #expect(status == 0, "exit \(String(describing: status))\n\(out)\n\(err)")
        let lines = out.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).map(String.init)
        let checks = lines.filter { $0.hasPrefix("PVHTEST xenstore.") }
        #expect(checks.count >= 30, "\(out)")
        for line in checks { #expect(line.hasSuffix(" PASS"), "\(line)") }
        #expect(lines.contains("PVHTEST xenstore.domid PASS"), "the guest read its own domid, 7")
        #expect(lines.contains { $0.hasPrefix("PVHTEST blk_rw PASS") }, "\(out)")
        #expect(lines.contains("PVHTEST SUMMARY 2 passed, 0 failed"), "\(out)")
        // No socket of its own: the daemon serves xenstored's.
        #expect(!err.contains("xenstored.sock"), "\(err)")

        let s = seen.withLock { $0 }
        #expect(s.guestWrote == "hello", "the guest's own write reached the daemon's store")
        #expect(s.name == name)
        #expect(s.domid == String(Self.domain))
        #expect(s.consoleType == "xenconsoled")
        for node in ["name", "domid", "vm", "memory", "cpu", "store", "console", "data", "control", "device"] {
            #expect(s.homeTree.contains(node), "\(node) in \(s.homeTree)")
        }
        #expect(s.vbdStates.contains("4"), "the vbd backend reached Connected over the remote store: \(s.vbdStates)")
        #expect(s.released, "@releaseDomain for d\(Self.domain) when the guest ended")
        // The guest process removed what it wrote and left the daemon's nodes (the daemon removes the home when it reaps it).
        #expect((try? server.directory(home))?.sorted() == ["domid", "name", "vm"], "\((try? server.directory(home)) ?? [])")
        #expect((try? server.read("\(home)/vm")) == vm)
        #expect((try? server.read("\(vbd)/state")) == nil, "the vbd backend's nodes went with it")
    }
}
