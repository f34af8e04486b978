import CSeccomp

/// The unprivileged user a jailed guest process runs as.
public struct JailUser: Sendable, Equatable, CustomStringConvertible {
    public let uid: UInt32
    public let gid: UInt32
    /// As the user wrote it (a name, or `UID[:GID]`).
    public let name: String

    public init(uid: UInt32, gid: UInt32, name: String) {
        self.uid = uid
        self.gid = gid
        self.name = name
    }

    /// A user name from the password database, or `UID[:GID]` (the gid
    /// defaults to the uid, as Firecracker's jailer takes both as numbers);
    /// uid or gid 0 is refused: the point is to leave root.
    public static func resolve(_ text: String) throws(SandboxError) -> JailUser {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        var uid: UInt32 = 0, gid: UInt32 = 0
        if let first = parts.first, let number = UInt32(first), parts.count <= 2 {
            uid = number
            gid = parts.count == 2 ? (UInt32(parts[1]) ?? 0) : number
            if parts.count == 2 && UInt32(parts[1]) == nil { throw SandboxError(step: "jail user '\(text)': not UID[:GID]", errno: 22) }
        } else {
            // SAFETY: the name converts to a NUL-terminated copy for the
            // call; uid and gid are live locals it writes.
            let r = unsafe pvh_jail_lookup_user(text, &uid, &gid)
            guard r == 0 else { throw SandboxError(step: "jail user '\(text)': no such user", errno: -r) }
        }
        guard uid != 0 && gid != 0 else { throw SandboxError(step: "jail user '\(text)': uid and gid must not be 0", errno: 22) }
        return JailUser(uid: uid, gid: gid, name: text)
    }

    public var description: String { "\(name) (uid \(uid), gid \(gid))" }
}

/// The uids (each with the gid of the same number) jailed guests get one
/// each when no `--jail-user` names a user for all of them (docs/
/// ARCHITECTURE.md: Sandbox, the jail's users): 65536 ids from `base`. A
/// daemon's guest is `base + domid` (domids 1 to 32751, DOMID_FIRST_RESERVED
/// in xen.h is 0x7FF0), so two of one daemon never share one and a uid in
/// `ps` names its domain; a guest process of its own (`pvh run`, `pvh
/// create -F` without a daemon), whose domid is always 1, takes a free slot
/// of the upper half, `base + 32768 + slot`, held by a lock (`pvh`'s
/// `StandaloneUIDSlot`).
///
/// The default base, 0x70000000 (1879048192), follows systemd's map of
/// the uid space (docs/UIDS-GIDS.md): above every 16-bit id (system and
/// regular users, systemd-homed's and DynamicUser's ranges, nobody), just
/// past systemd-nspawn's container ranges (524288 to 1879048191) and below
/// 2^31, which some tools still read as a signed number. No distribution
/// allocates users there; every id is still checked against the host's
/// user and group databases before use (`JailUser.perGuest`).
public struct JailUIDRange: Sendable, Equatable {
    public static let defaultBase: UInt32 = 0x7000_0000
    /// The ids in the range: two halves of 32768.
    public static let size: UInt32 = 0x1_0000
    /// Where a standalone guest's slots start.
    public static let standaloneOffset: UInt32 = 0x8000
    public let base: UInt32

    /// Refused: a range reaching 0 (root) or past 2^31 - 1.
    public init(base: UInt32) throws(SandboxError) {
        guard base >= 1, base <= 0x7FFF_FFFF - (Self.size - 1) else {
            throw SandboxError(step: "jail uid base \(base): must be 1 to \(0x7FFF_FFFF - (Self.size - 1)) (the range's 65536 ids below 2^31)", errno: 22)
        }
        self.base = base
    }

    /// `PVH_JAIL_UID_BASE`/`--jail-uid-base`: a decimal number, or 0x hex.
    public init(parsing text: String) throws(SandboxError) {
        let value = text.hasPrefix("0x") ? UInt32(text.dropFirst(2), radix: 16) : UInt32(text)
        guard let value else { throw SandboxError(step: "jail uid base '\(text)': not a number", errno: 22) }
        try self.init(base: value)
    }

    /// A daemon's guest's uid: `base + domid` (domid 1 to 32751).
    public func uid(domain: UInt16) -> UInt32? {
        guard domain >= 1, domain < 0x7FF0 else { return nil }
        return base + UInt32(domain)
    }

    /// A standalone guest's uid for slot 0 to 32767.
    public func uid(standaloneSlot slot: UInt32) -> UInt32? {
        guard slot < Self.size - Self.standaloneOffset else { return nil }
        return base + Self.standaloneOffset + slot
    }
}

extension JailUser {
    /// The guest's own uid `uid`, gid the same number, once the host's
    /// user and group databases are checked not to name either: an id
    /// that a user of the host has would give the guest that user's
    /// files and processes.
    public static func perGuest(uid: UInt32, describing origin: String) throws(SandboxError) -> JailUser {
        let taken = pvh_jail_id_taken(uid, uid)
        guard taken >= 0 else { throw SandboxError(step: "jail: looking up uid \(uid)", errno: -taken) }
        guard taken == 0 else {
            throw SandboxError(step: "jail: per-guest id \(uid) (\(origin)) is \(taken & 1 != 0 ? "a user's uid" : "a group's gid") on this host: choose another range (--jail-uid-base, PVH_JAIL_UID_BASE) or a user (--jail-user)", errno: 17)
        }
        return JailUser(uid: uid, gid: uid, name: origin)
    }
}

/// One path the jailed process still reaches by name: bind-mounted at the
/// same path inside the jail.
public struct JailBind: Sendable, Equatable {
    public let path: String
    public let readOnly: Bool
    /// A device node (/dev/null, /dev/net/tun): its mount keeps device access.
    public let device: Bool

    public init(path: String, readOnly: Bool, device: Bool = false) {
        self.path = path
        self.readOnly = readOnly
        self.device = device
    }
}

/// What entering the jail did, for the guest's log.
public struct JailReport: Sendable, Equatable, CustomStringConvertible {
    public let user: JailUser
    /// pivot_root, or MS_MOVE and chroot where pivot_root failed.
    public let usedChroot: Bool
    /// Why the jail has no /proc, nil if it has one.
    public let procUnavailable: String?
    public let binds: [String]
    /// The host name in its own UTS namespace.
    public let hostname: String

    public var description: String {
        "jailed: \(user), own namespaces \(GuestProcessJail.namespaces.joined(separator: ",")) (host name \(hostname)), root a tmpfs (\(usedChroot ? "chroot: pivot_root failed" : "pivot_root")) holding "
            + (binds + (procUnavailable == nil ? ["/proc (its own processes only)"] : [])).joined(separator: ", ")
            + (procUnavailable.map { "; no /proc: \($0)" } ?? "")
    }
}

/// The guest process's jail (issue 13 item 4; docs/ARCHITECTURE.md:
/// Sandbox), in two steps: `unshareNamespaces` while the process has one
/// thread (namespaces are per thread: every thread made afterwards shares
/// the new ones), and `enter` once set-up opened everything: a tmpfs
/// becomes the root with only `binds` and a /proc of its own in it, the
/// bounding set goes, and the process becomes `user`. The capability drop
/// and the seccomp filter (GuestProcessSandbox) come after.
public enum GuestProcessJail {
    /// Where the jail's root is mounted before the switch: one directory
    /// for every guest (each mounts it in its own namespace).
    public static func rootMountPoint(runtimeDirectory: String) -> String { runtimeDirectory + "/.jail" }

    /// The next `enter` takes the chroot fallback as if pivot_root had
    /// failed: PVH_JAIL_SELFTEST=chroot, for a test only (the condition
    /// that needs it, an initramfs root, cannot be made under a test).
    public static func forceChrootFallback() { pvh_jail_force_chroot(1) }

    /// The process's threads now (/proc/self/status), nil if unreadable.
    public static var threadCount: Int? {
        guard let text = readSmallFile("/proc/self/status") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("Threads:") {
            return Int(line.dropFirst("Threads:".count).trimmingPrefix(while: { $0 == " " || $0 == "\t" }))
        }
        return nil
    }

    /// The namespaces `unshareNamespaces` gives the process, as
    /// /proc/PID/ns names them: mounts, IPC, the host name.
    public static let namespaces = ["mnt", "ipc", "uts"]

    /// unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS), mounts private,
    /// the host name `hostname`. Refused with more than one thread: the
    /// others would stay in the host's namespaces.
    public static func unshareNamespaces(hostname: String) throws(SandboxError) {
        if let threads = threadCount, threads > 1 {
            throw SandboxError(step: "jail: unshare(CLONE_NEWNS|CLONE_NEWIPC|CLONE_NEWUTS) with \(threads) threads (the others would keep the host's)", errno: 22)
        }
        // SAFETY: the name converts to a NUL-terminated copy for the call;
        // the shim keeps no pointer.
        let r = unsafe pvh_jail_unshare(hostname)
        guard r == 0 else { throw SandboxError(step: "jail: unshare(CLONE_NEWNS|CLONE_NEWIPC|CLONE_NEWUTS), host name \(hostname)", errno: -r) }
    }

    /// Builds the root at `root`, switches to it and becomes `user`.
    /// Irreversible; a failure part-way leaves the process to exit.
    public static func enter(root: String, binds: [JailBind], user: JailUser, hostname: String) throws(SandboxError) -> JailReport {
        // SAFETY (each call below given Strings): Swift passes NUL-terminated
        // copies valid for the call; the shim keeps no pointer.
        var r = unsafe pvh_jail_mount_root(root)
        guard r == 0 else { throw SandboxError(step: "jail: tmpfs at \(root)", errno: -r) }
        var bound: [String] = []
        for bind in binds {
            r = unsafe pvh_jail_bind(bind.path, root + bind.path, bind.readOnly ? 1 : 0, bind.device ? 1 : 0)
            guard r == 0 else { throw SandboxError(step: "jail: bind-mounting \(bind.path)", errno: -r) }
            bound.append(bind.path + (bind.readOnly ? " (read-only)" : ""))
        }
        r = unsafe pvh_jail_mount_proc(root + "/proc")
        let noProc = r == 0 ? nil : "mount(proc) errno \(-r)"
        var chrooted: Int32 = 0
        r = unsafe pvh_jail_pivot(root, &chrooted)
        guard r == 0 else { throw SandboxError(step: "jail: switching the root", errno: -r) }
        r = pvh_jail_drop_bounding_set()
        guard r == 0 else { throw SandboxError(step: "jail: dropping the bounding set", errno: -r) }
        r = pvh_jail_set_ids(user.uid, user.gid)
        guard r == 0 else { throw SandboxError(step: "jail: becoming \(user)", errno: -r) }
        return JailReport(user: user, usedChroot: chrooted != 0, procUnavailable: noProc, binds: bound, hostname: hostname)
    }

    private static func readSmallFile(_ path: String) -> String? {
        var bytes = [UInt8](repeating: 0, count: 4096)
        // SAFETY: the path converts for the call; the buffer is live and
        // read() writes at most its count.
        let fd = unsafe pvh_jail_open_read(path)
        guard fd >= 0 else { return nil }
        defer { pvh_jail_close(fd) }
        let n = unsafe bytes.withUnsafeMutableBytes { unsafe pvh_jail_read(fd, $0.baseAddress, UInt($0.count)) }
        guard n > 0 else { return nil }
        return String(decoding: bytes.prefix(Int(n)), as: UTF8.self)
    }
}
