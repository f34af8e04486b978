import DeviceSpecs
import Foundation
import HostIO
import PVHAPI
import Toolstack
import VMM
import XenABI
import XenBus
import XenStore

/// Hot-plug, the toolstack's half (libxl's libxl__device_disk_add,
/// libxl__device_nic_add and libxl__initiate_device_generic_remove; the
/// backend driver's half is the guest process's, VMM/Hotplug.swift):
///
/// - attach: both directories written in one transaction
///   (`HotplugDevice.storeRequests`: the frontend's in the guest's home,
///   the backend's under dom0's, `online` 1, `state` 1), then a bounded
///   wait until the backend offers the device (InitWait or beyond) or
///   refuses it (`hotplug-error`, Closed: both directories removed, 400);
/// - detach: `online` 0 and `state` 5 (Closing) on the backend, then a
///   bounded wait until the guest process's backend has closed with the
///   frontend and removed its directory (so the image is released before
///   the answer: the same image may be attached again at once), then the
///   frontend's directory removed; `force` removes both at once, as
///   `xl block-detach --force` does after its own wait.
/// What a hot-plug wait found.
enum HotplugWait: Sendable {
    case done
    case failed(String)
}

extension Supervisor: DeviceService {
    /// How often a hot-plug wait looks at the store.
    static let hotplugPoll = Duration.milliseconds(50)

    func devices(_ kind: DeviceKind, of name: String) async throws(APIError) -> [DeviceListingEntry] {
        let record = try hotplugTarget(named: name)
        return indices(kind, record.id).compactMap { entry(kind, domain: record.id, index: $0) }
    }

    func attach(_ kind: DeviceKind, spec: String, to name: String, timeout: Double) async throws(APIError) -> DeviceListingEntry {
        let record = try hotplugTarget(named: name)
        // A paused domain's process is stopped, and with it the backend
        // that would take the device: the wait could only run out
        // (api-check found the 60 s default outliving its requests).
        guard record.state != .paused else {
            throw APIError(.conflict, "\(name) is paused: its guest process serves no new device until unpause")
        }
        let (device, index) = try hotplugDevice(kind, spec: spec, domain: record.id)
        let address = XenbusDeviceAddress(type: kind.xenbusType, frontend: record.id, index: index)
        guard (try? store.directory(address.backendPath)) == nil, (try? store.directory(address.frontendPath)) == nil else {
            throw APIError(.conflict, "\(name): \(kind == .disks ? "vdev" : "devid") \(index) is in use")
        }
        if case .disk(let disk) = device { try passImage(disk, spec: spec, index: index, to: record) }
        do {
            try store.transaction(device.storeRequests(address: address))
        } catch {
            throw APIError(.internalError, "\(name): writing \(address.backendPath): \(error)")
        }
        let outcome = await waitFor(timeout) { [store] () -> HotplugWait? in
            let be = address.backendPath
            guard (try? store.directory(be)) != nil else { return .failed("the guest's backend removed the device") }
            if let error = try? store.read("\(be)/hotplug-error") { return .failed(error) }
            switch (try? store.read("\(be)/state")).flatMap(XenbusState.init(storeValue:)) {
            case .initWait?, .initialised?, .connected?: return .done
            case .closing?, .closed?: return .failed("the guest's backend closed the device")
            default: return nil
            }
        }
        switch outcome {
        case .done?:
            publishDeviceEvent(.deviceConnected, record, device: "\(address.type) \(index)")
            guard let entry = entry(kind, domain: record.id, index: index) else {
                throw APIError(.internalError, "\(name): \(address.backendPath) went away")
            }
            return entry
        case .failed(let why)?:
            removeDevice(address)
            throw APIError(.badRequest, "\(spec): \(why)")
        case nil:
            removeDevice(address)
            throw APIError(.timedOut, "\(name): the guest's backend did not take \(address.type) \(index) within \(Int(timeout)) s (is the guest process stopped?)")
        }
    }

    func detach(_ kind: DeviceKind, _ device: String, from name: String, force: Bool, timeout: Double) async throws(APIError) -> DeviceListingEntry {
        let record = try hotplugTarget(named: name)
        let index = try deviceIndex(kind, device, record: record)
        let address = XenbusDeviceAddress(type: kind.xenbusType, frontend: record.id, index: index)
        guard let before = entry(kind, domain: record.id, index: index) else {
            throw APIError(.notFound, "\(name) has no \(kind == .disks ? "disk" : "network interface") \(device)")
        }
        // As for attach: a stopped process closes nothing; --force still removes it.
        if !force, record.state == .paused {
            throw APIError(.conflict, "\(name) is paused: its guest process closes no device until unpause (force removes it)")
        }
        if !force {
            let be = address.backendPath
            do {
                try store.transaction([
                    (.write, XenStoreWire.nulTerminated(["\(be)/online"]) + Array("0".utf8)),
                    (.write, XenStoreWire.nulTerminated(["\(be)/state"]) + Array(XenbusState.closing.storeValue.utf8)),
                ])
            } catch {
                throw APIError(.internalError, "\(name): writing \(be): \(error)")
            }
            let closed = await waitFor(timeout) { [store] () -> HotplugWait? in
                (try? store.directory(be)) == nil ? .done : nil
            }
            guard closed != nil else {
                let now = entry(kind, domain: record.id, index: index)
                throw APIError(.timedOut, "\(name): \(address.type) \(index) not closed after \(Int(timeout)) s (backend state \(now?.backendState ?? -1), frontend state \(now?.state ?? -1)): the guest did not close its frontend; --force removes it anyway")
            }
        }
        removeDevice(address)
        publishDeviceEvent(.deviceClosed, record, device: "\(address.type) \(index)")
        return before
    }

    // MARK: Helpers

    /// Opens and locks the disk's image as the spec asks (read-only or
    /// read-write: BlockBackingFile's checks, the user's errors as 400) and
    /// passes it to the guest process over its reattach socket
    /// (ImagePassing), which may be jailed and unable to open it. Bounded:
    /// 5 s for the process's answer. This process's copy closes on return;
    /// the lock stays with the guest's.
    private func passImage(_ disk: HotplugDisk, spec: String, index: Int, to record: DomainRecord) throws(APIError) {
        guard let path = state.withLock({ $0.launches[record.id] })?.reattachSocket, let pid = record.processID else {
            throw APIError(.internalError, "\(record.name): its guest process has no socket to pass the image over")
        }
        let file: BlockBackingFile
        do {
            file = try BlockBackingFile.open(path: disk.target, writable: !disk.readOnly)
        } catch {
            throw APIError(.badRequest, "\(spec): \(error)")
        }
        let connection: UnixSocket
        do { connection = try UnixSocket.connect(to: path) } catch {
            throw APIError(.internalError, "\(record.name): \(path): \(error)")
        }
        defer { connection.close() }
        guard case .success(let peer) = DescriptorPassing.peer(of: connection.fd), peer.pid == pid else {
            throw APIError(.internalError, "\(path): not served by the guest process \(pid)")
        }
        let sent = file.sendDescriptor(tag: GuestReattachListener.imageTag, over: connection.fd)
        guard sent == 0, connection.writeAll(ImagePassing.request(index)) else {
            throw APIError(.internalError, "\(record.name): passing the image: errno \(sent)")
        }
        guard connection.waitReadable(timeout: 5), let answer = connection.read(max: ImagePassing.maximumLine),
              answer == ImagePassing.reply(index) else {
            throw APIError(.internalError, "\(record.name): the guest process did not take the image within 5 s")
        }
    }

    /// Both directories removed (libxl__device_destroy).
    private func removeDevice(_ address: XenbusDeviceAddress) {
        try? store.remove(address.backendPath)
        try? store.remove(address.frontendPath)
    }

    /// Polls `check` until it answers, at most `timeout` seconds; nil on timeout.
    private func waitFor(_ timeout: Double, _ check: @Sendable () -> HotplugWait?) async -> HotplugWait? {
        let deadline = ContinuousClock.now + .milliseconds(Int64(max(0, timeout) * 1000))
        while true {
            if let answer = check() { return answer }
            guard ContinuousClock.now < deadline else { return nil }
            try? await Task.sleep(for: Self.hotplugPoll)
        }
    }

    /// The devices of `kind` the store has for the domain: every index
    /// under its backend directory or its frontend directory.
    private func indices(_ kind: DeviceKind, _ domain: DomainID) -> [Int] {
        let type = kind.xenbusType
        let listed = ((try? store.directory("/local/domain/0/backend/\(type)/\(domain.rawValue)")) ?? [])
            + ((try? store.directory("/local/domain/\(domain.rawValue)/device/\(type)")) ?? [])
        return Set(listed.compactMap { name in
            guard (1...10).contains(name.count), name.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(name),
                  n <= Int(Int32.max) else { return nil }
            return n
        }).sorted()
    }

    /// One device as the store has it (xl's block-list/network-list read).
    private func entry(_ kind: DeviceKind, domain: DomainID, index: Int) -> DeviceListingEntry? {
        let address = XenbusDeviceAddress(type: kind.xenbusType, frontend: domain, index: index)
        let be = address.backendPath, fe = address.frontendPath
        guard (try? store.directory(be)) != nil || (try? store.directory(fe)) != nil else { return nil }
        func read(_ path: String) -> String? { try? store.read(path) }
        /// A frontend node, or its first queue's (a multi-queue frontend's).
        func frontend(_ key: String) -> Int {
            let n = DeviceListingEntry.number(read("\(fe)/\(key)"))
            return n >= 0 ? n : DeviceListingEntry.number(read("\(fe)/queue-0/\(key)"))
        }
        let state = max(0, DeviceListingEntry.number(read("\(fe)/state")))
        let backendState = max(0, DeviceListingEntry.number(read("\(be)/state")))
        switch kind {
        case .disks:
            return DeviceListingEntry(
                devid: index, backendDomain: Int(address.backend.rawValue), handle: Int(domain.rawValue), state: state,
                backendState: backendState, eventChannel: frontend("event-channel"), ringRef: frontend("ring-ref"),
                rxRingRef: -1, backendPath: be, name: read("\(be)/dev") ?? "", target: read("\(be)/params") ?? "",
                hotplugError: read("\(be)/hotplug-error"))
        case .nics:
            let split = frontend("event-channel-tx")
            return DeviceListingEntry(
                devid: index, backendDomain: Int(address.backend.rawValue), handle: index, state: state,
                backendState: backendState, eventChannel: split >= 0 ? split : frontend("event-channel"),
                ringRef: frontend("tx-ring-ref"), rxRingRef: frontend("rx-ring-ref"), backendPath: be,
                name: read("\(be)/mac") ?? read("\(fe)/mac") ?? "", target: read("\(be)/pvh-link") ?? read("\(be)/link") ?? "",
                hotplugError: read("\(be)/hotplug-error"))
        }
    }

    /// A spec as the device to write and its index: xl's parsers, then
    /// what pvh's backends serve (a raw image by absolute path; a vif's
    /// devid the lowest free one unless given, its MAC made in Xen's OUI
    /// unless given, as libxl does).
    private func hotplugDevice(_ kind: DeviceKind, spec: String, domain: DomainID) throws(APIError) -> (HotplugDevice, Int) {
        switch kind {
        case .disks:
            let disk: DiskSpecification
            do { disk = try DiskSpecification(parsing: spec) } catch { throw APIError(.badRequest, "\(spec): \(error)") }
            guard let target = disk.target, target.hasPrefix("/") else {
                throw APIError(.badRequest, "\(spec): the target must be an absolute path (the daemon opens it, not the client)")
            }
            guard disk.format == .raw, disk.script == nil else {
                throw APIError(.badRequest, "\(spec): pvh serves raw images only, without block scripts")
            }
            return (.disk(HotplugDisk(target: target, readOnly: disk.isReadOnly, virtualDevice: disk.vdev.name,
                                      cdrom: disk.isCDROM, discard: disk.discardEnabled)),
                    Int(disk.vdev.number.rawValue))
        case .nics:
            let nic: NetworkInterfaceSpecification
            do { nic = try NetworkInterfaceSpecification(parsing: spec) } catch { throw APIError(.badRequest, "\(spec): \(error)") }
            let taken = Set(indices(.nics, domain))
            let devid = nic.devid ?? (0...).first { !taken.contains($0) } ?? 0
            var random = SystemRandomNumberGenerator()
            let mac = nic.mac ?? MACAddress.xenRandom(using: &random)
            return (.nic(HotplugNic(link: nic.type.rawValue, mac: mac.description, bridge: nic.bridge, vifname: nic.vifname,
                                    mtu: nic.mtu, ip: nic.ip)), devid)
        }
    }

    /// A device as `block-detach`/`network-detach` name it: a vdev name
    /// or number; a devid or a MAC address.
    private func deviceIndex(_ kind: DeviceKind, _ device: String, record: DomainRecord) throws(APIError) -> Int {
        if device.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(device), n <= Int(Int32.max) { return n }
        switch kind {
        case .disks:
            do { return Int(try VirtualDevice(parsing: device).number.rawValue) } catch {
                throw APIError(.badRequest, "\(device): not a virtual device (\(error))")
            }
        case .nics:
            guard let mac = MACAddress(parsing: device) else { throw APIError(.badRequest, "\(device): neither a devid nor a MAC address") }
            let match = indices(.nics, record.id).first { index in
                entry(.nics, domain: record.id, index: index).flatMap { MACAddress(parsing: $0.name) } == mac
            }
            guard let match else { throw APIError(.notFound, "\(record.name) has no network interface \(device)") }
            return match
        }
    }
}
