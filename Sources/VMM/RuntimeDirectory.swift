#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Where running guests are found: one directory per guest name holding its
/// XenStore socket. `PVH_RUNTIME_DIR` overrides; otherwise /run/pvh for
/// root, `$XDG_RUNTIME_DIR/pvh`, or /tmp/pvh-<uid>.
public struct RuntimeDirectory: Sendable, Equatable {
    public let path: String

    public init(path: String) { self.path = path }

    public static var `default`: RuntimeDirectory {
        let environment = ProcessInfo.processInfo.environment
        if let explicit = environment["PVH_RUNTIME_DIR"], !explicit.isEmpty { return RuntimeDirectory(path: explicit) }
        if getuid() == 0 { return RuntimeDirectory(path: "/run/pvh") }
        if let xdg = environment["XDG_RUNTIME_DIR"], !xdg.isEmpty { return RuntimeDirectory(path: xdg + "/pvh") }
        return RuntimeDirectory(path: "/tmp/pvh-\(getuid())")
    }

    /// A guest's directory.
    public func directory(for name: GuestName) -> String { "\(path)/\(name.rawValue)" }

    /// A guest's XenStore socket: what `XENSTORED_PATH` must name for
    /// Debian's xenstore-* tools.
    public func xenStoreSocket(for name: GuestName) -> String { directory(for: name) + "/xenstored.sock" }

    /// A guest's hypervisor console (`pvh dmesg`): `HypervisorConsoleFile`.
    public func hypervisorConsoleFile(for name: GuestName) -> String { directory(for: name) + "/dmesg" }

    /// Names of guests, running or ended, whose hypervisor console file is there.
    public func guestsWithHypervisorConsole() -> [GuestName] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return entries.sorted().compactMap { entry in
            guard let name = GuestName(entry), FileManager.default.fileExists(atPath: hypervisorConsoleFile(for: name)) else { return nil }
            return name
        }
    }

    /// Creates the guest's directory (mode 0700, parents too).
    public func prepare(for name: GuestName) throws(UnixSocketError) {
        for dir in [path, directory(for: name)] {
            // SAFETY: the String converts to a NUL-terminated path for the call.
            if unsafe mkdir(dir, 0o700) != 0 && errno != EEXIST {
                throw UnixSocketError(operation: "mkdir", path: dir, errno: errno)
            }
        }
    }

    /// Removes the guest's socket, and its directory if nothing else is
    /// left there (its hypervisor console file stays for `pvh dmesg`).
    public func cleanUp(for name: GuestName) {
        // SAFETY: as in prepare(for:).
        unsafe unlink(xenStoreSocket(for: name))
        unsafe rmdir(directory(for: name))
    }

    /// Names of guests whose socket answers.
    public func runningGuests() -> [GuestName] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return entries.sorted().compactMap { entry in
            guard let name = GuestName(entry), let socket = try? UnixSocket.connect(to: xenStoreSocket(for: name)) else { return nil }
            socket.close()
            return name
        }
    }
}

/// A guest's name (xl's `name=`): 1 to 64 of [A-Za-z0-9._-], not starting
/// with a dot, so it is safe as a directory name and a XenStore value.
public struct GuestName: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public init?(rawValue: String) {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        guard (1...64).contains(rawValue.count), !rawValue.hasPrefix("."), rawValue.allSatisfy(allowed.contains) else { return nil }
        self.rawValue = rawValue
    }

    public init?(_ string: String) { self.init(rawValue: string) }

    public var description: String { rawValue }

    /// Why a string is not a name, for the one-line usage error.
    public static let rule = "a name is 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
}
