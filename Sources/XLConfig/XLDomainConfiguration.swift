import DeviceSpecs

/// One PVH guest as an xl config file describes it, resolved the way xl's
/// `parse_config_data` (tools/xl/xl_parse.c) and libxl's defaults
/// (tools/libs/light/libxl_create.c) resolve it, for the keys pvh uses.
public struct XLDomainConfiguration: Sendable, Equatable {
    /// `name=`: required, as in xl.
    public var name: String
    /// `uuid=`; nil: one is made when the domain is created (as xl does).
    public var uuid: DomainUUID?
    /// `memory=`: the initial allocation (xl's target), MiB. Default 32, libxl's.
    public var memoryMiB: Int
    /// `maxmem=`: the most the guest may have, MiB. Default: `memory`.
    public var maximumMemoryMiB: Int
    /// `vcpus=`: the vCPUs online at boot (at least 1, as xl makes it).
    public var vcpus: Int
    /// `maxvcpus=`: the vCPUs the guest could have. Default: `vcpus`.
    public var maximumVCPUs: Int
    /// `cpus=`: each vCPU's hard affinity, by vCPU number (xl's
    /// `parse_vcpu_affinity`): a string gives every vCPU the same list, a
    /// list gives vCPU j its item j; a vCPU past the end has none (any
    /// CPU). Empty: no pinning.
    public var vcpuAffinity: [CPUList] = []
    /// `kernel=`: required, pvh boots it directly.
    public var kernel: String
    /// `ramdisk=`.
    public var ramdisk: String?
    /// The kernel command line: `cmdline=`, else `root=` and `extra=`
    /// joined as xl joins them; nil when none is given.
    public var commandLine: String?
    /// `disk=[...]`, in order.
    public var disks: [DiskSpecification]
    /// `vif=[...]`, in order.
    public var networks: [NetworkInterfaceSpecification]
    /// `on_poweroff=`, `on_reboot=`, ...: every event has an action.
    public var actions: [ShutdownEvent: ShutdownAction]
    /// `max_grant_frames=`; nil: pvh's default (Xen's `gnttab_max_frames`).
    public var maximumGrantFrames: Int?
    /// `max_event_channels=`: the highest event channel port the guest may
    /// use (libxl's `event_channels`, Xen's `max_evtchn_port`). Default 1023.
    public var maximumEventChannels: Int

    /// libxl's `event_channels` default.
    public static let defaultEventChannels = 1023
    /// libxl's `max_memkb` default when neither `memory` nor `maxmem` is given.
    public static let defaultMemoryMiB = 32

    /// The action for one event.
    public func action(on event: ShutdownEvent) -> ShutdownAction { actions[event] ?? event.defaultAction }

    /// A resolved config and what the resolution has to say about it.
    public struct Resolution: Sendable {
        public let configuration: XLDomainConfiguration
        /// One line each, as the CLI prints them to stderr.
        public let warnings: [String]
    }

    /// Resolves parsed settings. Throws the first problem, one line, in
    /// xl's words where xl has some (its fatal `parse_config_data` errors);
    /// a value of the wrong type or out of range names the key and line
    /// (xl warns and ignores such a value; pvh refuses it rather than boot
    /// something else than what was written).
    public static func resolve(_ settings: ConfigSettings) throws(XLConfigError) -> Resolution {
        var resolver = Resolver(settings: settings)
        return try resolver.resolve()
    }

    /// The resolved config as the dry run prints it: xl's key names, in a
    /// fixed order, `null` for what is not set.
    public var json: JSONValue {
        var members: [(key: String, value: JSONValue)] = [
            ("name", .string(name)),
            ("type", .string("pvh")),
            ("uuid", .optional(uuid?.description)),
            ("memory", .integer(memoryMiB)),
            ("maxmem", .integer(maximumMemoryMiB)),
            ("vcpus", .integer(vcpus)),
            ("maxvcpus", .integer(maximumVCPUs)),
            ("cpus", vcpuAffinity.isEmpty ? .null : .array(vcpuAffinity.map { .string($0.text) })),
            ("kernel", .string(kernel)),
            ("ramdisk", .optional(ramdisk)),
            ("cmdline", .optional(commandLine)),
            ("disk", .array(disks.map(Self.json))),
            ("vif", .array(networks.map(Self.json))),
        ]
        for event in ShutdownEvent.allCases { members.append((event.key, .string(action(on: event).rawValue))) }
        members.append(("max_grant_frames", .optional(maximumGrantFrames)))
        members.append(("max_event_channels", .integer(maximumEventChannels)))
        return .object(members)
    }

    static func json(_ disk: DiskSpecification) -> JSONValue {
        .object([
            ("spec", .string(disk.spec)),
            ("target", .optional(disk.target)),
            ("format", .string(disk.format.rawValue)),
            ("vdev", .string(disk.vdev.name)),
            ("devid", .integer(Int(disk.vdev.number.rawValue))),
            ("access", .string(disk.isReadOnly ? "ro" : "rw")),
            ("devtype", .string(disk.isCDROM ? "cdrom" : "disk")),
            ("direct_io_safe", .bool(disk.directIOSafe)),
            ("discard", .bool(disk.discardEnabled)),
            ("script", .optional(disk.script)),
        ])
    }

    static func json(_ vif: NetworkInterfaceSpecification) -> JSONValue {
        .object([
            ("spec", .string(vif.spec)),
            ("type", .string(vif.type.rawValue)),
            ("mac", .optional(vif.mac?.description)),
            ("bridge", .optional(vif.bridge)),
            ("vifname", .optional(vif.vifname)),
            ("mtu", .optional(vif.mtu)),
            ("rate", .optional(vif.rate.map { "\($0.bytesPerInterval)B/\($0.intervalMicroseconds)us" })),
            ("devid", .optional(vif.devid)),
            ("ip", .optional(vif.ip)),
        ])
    }
}

/// The resolution, key by key in xl's order.
private struct Resolver {
    let settings: ConfigSettings
    var warnings: [String] = []

    var source: String { settings.source }

    /// `FILE:LINE` of a key's setting in force, or `FILE`.
    func here(_ key: String) -> String { settings[key].map { "\(source):\($0.line)" } ?? source }

    enum DomainType { case hvm, pv, pvh }

    mutating func resolve() throws(XLConfigError) -> XLDomainConfiguration.Resolution {
        let legacyPVH = try domainType()
        guard let name = try settings.string("name") else { throw .invalid("Domain name must be specified.") }
        var uuid: DomainUUID?
        if let text = try settings.string("uuid") {
            guard let parsed = DomainUUID(parsing: text) else { throw .invalid("Failed to parse UUID: \(text)") }
            uuid = parsed
        }
        // memory/maxmem in MiB (xl multiplies by 1024 into KiB); libxl's
        // defaults fill whichever is missing from the other.
        let megabytes = 1...(Int.max >> 20)
        let memory = try settings.integer("memory", in: megabytes)
        let maxmem = try settings.integer("maxmem", in: megabytes)
        let target = memory ?? maxmem ?? XLDomainConfiguration.defaultMemoryMiB
        let maximum = maxmem ?? target
        if target > maximum {
            throw .invalid("\(here("maxmem")): maxmem (\(maximum) MiB) is below memory (\(target) MiB)")
        }
        if maximum > target {
            warnings.append("\(here("maxmem")): warning: maxmem (\(maximum) MiB) above memory (\(target) MiB): the guest gets \(target) MiB and cannot balloon above it (not implemented yet)")
        }
        let counts = Int(Int32.min)...Int(Int32.max)
        let vcpus = max(1, try settings.integer("vcpus", in: counts) ?? 1)
        let maximumVCPUs = try settings.integer("maxvcpus", in: counts) ?? vcpus
        guard maximumVCPUs >= vcpus else { throw .invalid("xl: maxvcpus < vcpus") }
        if maximumVCPUs > vcpus {
            warnings.append("\(here("maxvcpus")): warning: maxvcpus (\(maximumVCPUs)) above vcpus (\(vcpus)): vCPU hot-plug is not implemented, the guest gets \(vcpus)")
        }
        let affinity = try vcpuAffinity(maximumVCPUs: maximumVCPUs)
        let grantFrames = try settings.integer("max_grant_frames", in: 0...Int(Int32.max))
        var actions: [ShutdownEvent: ShutdownAction] = [:]
        for event in ShutdownEvent.allCases {
            let text = try settings.string(event.key) ?? event.defaultAction.rawValue
            guard let action = ShutdownAction(rawValue: text) else {
                throw .invalid("Unknown \(event.key) action \"\(text)\" specified")
            }
            actions[event] = action
        }
        let eventChannels = try settings.integer("max_event_channels", in: 0...Int(Int32.max))
        guard let kernel = try settings.string("kernel") else {
            throw .invalid("\(source): no kernel= given: pvh boots the guest's kernel directly (bootloader= and firmware= are not supported)")
        }
        let ramdisk = try settings.string("ramdisk")
        let commandLine = try self.commandLine()
        let disks = try self.disks()
        let networks = try self.networks()
        warnIgnoredKeys(legacyPVH: legacyPVH)
        let configuration = XLDomainConfiguration(
            name: name, uuid: uuid, memoryMiB: target, maximumMemoryMiB: maximum, vcpus: vcpus, maximumVCPUs: maximumVCPUs,
            vcpuAffinity: affinity,
            kernel: kernel, ramdisk: ramdisk, commandLine: commandLine, disks: disks, networks: networks, actions: actions,
            maximumGrantFrames: grantFrames,
            maximumEventChannels: eventChannels.flatMap { $0 == 0 ? nil : $0 } ?? XLDomainConfiguration.defaultEventChannels)
        return .init(configuration: configuration, warnings: warnings)
    }

    /// `cpus=` as xl's `parse_vcpu_affinity` reads it: a string is every
    /// vCPU's list (up to maxvcpus), a list's item j is vCPU j's; items
    /// past maxvcpus are ignored, as xl silently ignores them.
    func vcpuAffinity(maximumVCPUs: Int) throws(XLConfigError) -> [CPUList] {
        guard let setting = settings["cpus"] else { return [] }
        let here = "\(source):\(setting.line)"
        func parse(_ text: String) throws(XLConfigError) -> CPUList {
            do { return try CPUList(parsing: text) } catch { throw .invalid("\(here): cpus \(error)") }
        }
        switch setting.value {
        case .string(let text):
            return Array(repeating: try parse(text), count: max(0, maximumVCPUs))
        case .list(let items):
            var lists: [CPUList] = []
            for (j, item) in items.enumerated() where j < maximumVCPUs {
                guard case .string(let text) = item else { throw .invalid("\(here): cpus: item \(j + 1) is a list, not a CPU list string") }
                lists.append(try parse(text))
            }
            return lists
        }
    }

    /// `type=` and the deprecated `builder=`, as xl reads them: each value
    /// may be any prefix of a type's name (`strncmp(buf, "hvm",
    /// strlen(buf))`), checked in xl's order. `builder="hvm"` with
    /// `device_model_version="none"` is Xen 4.9's way of asking for PVH
    /// (before `type=` existed). Returns whether that legacy form was used.
    mutating func domainType() throws(XLConfigError) -> Bool {
        var type: DomainType?
        if let text = try settings.string("type") {
            if "hvm".hasPrefix(text) { type = .hvm }
            else if "pv".hasPrefix(text) { type = .pv }
            else if "pvh".hasPrefix(text) { type = .pvh }
            else { throw .invalid("Invalid domain type \(text).") }
        }
        var legacy = false
        if let text = try settings.string("builder") {
            var builderType: DomainType
            if "hvm".hasPrefix(text) { builderType = .hvm }
            else if "generic".hasPrefix(text) { builderType = .pv }
            else { throw .invalid("Invalid domain type \(text).") }
            if builderType == .hvm, try settings.string("device_model_version") == "none" {
                builderType = .pvh
                legacy = true
            }
            if let type, type != builderType {
                throw .invalid("Contradicting \"builder\" and \"type\" options specified.")
            }
            type = builderType
        }
        switch type {
        case .pvh:
            return legacy
        case nil:
            warnings.append("\(source): warning: no type= given (xl would make a PV guest): pvh makes PVH guests only, type=\"pvh\" assumed")
            return false
        case .hvm:
            throw .invalid("\(here(settings["type"] != nil ? "type" : "builder")): an HVM guest: pvh runs PVH guests only (type=\"pvh\")")
        case .pv:
            throw .invalid("\(here(settings["type"] != nil ? "type" : "builder")): a PV guest: pvh runs PVH guests only (type=\"pvh\")")
        }
    }

    /// xl's `parse_cmdline`: `cmdline=` wins (with a warning when `root=`
    /// or `extra=` is also given); else `root=R extra` joined by a space.
    mutating func commandLine() throws(XLConfigError) -> String? {
        let cmdline = try settings.string("cmdline")
        let root = try settings.string("root")
        let extra = try settings.string("extra")
        if let cmdline {
            if root != nil || extra != nil { warnings.append("Warning: ignoring root= and extra= in favour of cmdline=") }
            return cmdline
        }
        switch (root, extra) {
        case (let root?, let extra?): return "root=\(root) \(extra)"
        case (let root?, nil): return "root=\(root)"
        case (nil, let extra?): return extra
        case (nil, nil): return nil
        }
    }

    /// A device list (`disk=`, `vif=`): each item a string, parsed by its
    /// DeviceSpecs parser, then all checked together. xl stops reading at
    /// the first item that is not a string (a nested list); pvh refuses it.
    /// An error names the list's line, the item and DeviceSpecs' reason.
    func devices<Device, Failure: Error>(
        _ key: String, item: String, parse: (String) throws(Failure) -> Device, validate: ([Device]) throws(Failure) -> Void,
        describe: (Failure) -> (spec: String, reason: String)
    ) throws(XLConfigError) -> [Device] {
        guard let (items, line) = try settings.list(key) else { return [] }
        func refusal(_ error: Failure) -> XLConfigError {
            let (spec, reason) = describe(error)
            return .invalid("\(source):\(line): \(key) '\(DiskSpecificationError.oneLine(spec))': \(reason)")
        }
        var devices: [Device] = []
        for (i, value) in items.enumerated() {
            guard case .string(let spec) = value else {
                throw .invalid("\(source):\(line): \(key): item \(i + 1) is a list, not a \(item) string")
            }
            do { devices.append(try parse(spec)) } catch { throw refusal(error) }
        }
        do { try validate(devices) } catch { throw refusal(error) }
        return devices
    }

    func disks() throws(XLConfigError) -> [DiskSpecification] {
        try devices("disk", item: "DISKSPEC", parse: DiskSpecification.init(parsing:), validate: DiskSpecification.validate,
                    describe: { ($0.spec, $0.reason) })
    }

    func networks() throws(XLConfigError) -> [NetworkInterfaceSpecification] {
        try devices("vif", item: "VIFSPEC", parse: NetworkInterfaceSpecification.init(parsing:),
                    validate: NetworkInterfaceSpecification.validate, describe: { ($0.spec, $0.reason) })
    }

    /// One warning per key xl knows and pvh does not use, in file order.
    mutating func warnIgnoredKeys(legacyPVH: Bool) {
        for key in settings.keys where IgnoredKeys.all.contains(key) {
            if legacyPVH && key == "device_model_version" { continue }
            warnings.append("\(here(key)): warning: `\(key)' ignored: \(Self.reason(key))")
        }
    }

    static func reason(_ key: String) -> String {
        if key == "cpus_soft" { return "soft affinity (a preferred CPU set) has no Linux counterpart for a thread: pin with cpus=" }
        if key.hasSuffix("seclabel") { return "pvh has no XSM/FLASK security labels" }
        if key.hasPrefix("device_model") || key.hasPrefix("stubdomain") { return "a PVH guest has no device model" }
        if key.hasPrefix("bootloader") || key == "firmware" { return "pvh boots kernel= directly" }
        return "no meaning for a PVH guest under pvh"
    }
}
