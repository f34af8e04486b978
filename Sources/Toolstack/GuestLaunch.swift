/// How the daemon starts one guest's process: the one seam between the
/// supervisor and what runs the guest. Today the child is `pvh create -F`
/// with its own embedded XenStore; when a guest process can serve its ring
/// against the daemon's store (issue 12, item 1), the store's channel is
/// handed over here as inherited descriptors and nothing else changes.
public struct GuestLaunch: Hashable, Sendable {
    /// The pvh executable.
    public var executable: String
    /// The resolved config the child reads (written by the daemon, 0600).
    public var configPath: String
    /// Where the child's stderr goes (its stdin and stdout are the
    /// console's socketpair with the daemon: Supervisor.start).
    public var logPath: String
    /// More `KEY=VALUE` config lines after the file's.
    public var overrides: [String]

    public init(executable: String, configPath: String, logPath: String, overrides: [String] = []) {
        self.executable = executable
        self.configPath = configPath
        self.logPath = logPath
        self.overrides = overrides
    }

    /// `pvh create -F CONFIG KEY=VALUE...`; `on_reboot="destroy"` comes
    /// last so the child ends with status 3 on a reboot and the daemon
    /// applies the domain's real `on_reboot` (DomainEnd's contract).
    public var arguments: [String] {
        [executable, "create", "-F", configPath] + overrides + ["on_reboot=\"destroy\""]
    }
}
