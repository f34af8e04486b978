import BlockBackend
import Locking
import NetBackend
import XenBus
import XenStore

/// A device backend as a domain keeps it: where it is, its counters, and
/// how it goes.
protocol ServedBackend: AnyObject, Sendable {
    associatedtype Counters: Sendable
    associatedtype HandshakeError: Error
    var address: XenbusDeviceAddress { get }
    var metrics: Counters { get }
    /// Offers the device to its frontend (InitWait).
    func startHandshake() throws(HandshakeError)
    func destroy()
}

extension ServedBackend {
    /// The last step of making a device's backend, a disk's or an
    /// interface's, boot-time or hot-plugged: `nodes`, what libxl writes
    /// beside the backend's own (tools/libs/light/libxl_disk.c,
    /// libxl_nic.c; for the toolstack's and the user's eyes, not the
    /// frontend's), then the device offered. If the offer fails the backend
    /// is destroyed.
    func offer(nodes: [(key: String, value: String)], store: any XenStoreService) throws(HandshakeError) {
        let be = address.backendPath
        for (key, value) in nodes { try? store.write("\(be)/\(key)", value) }
        do {
            try startHandshake()
        } catch {
            destroy()
            throw error
        }
    }
}

extension BlockBackend: ServedBackend {}
extension NetBackend: ServedBackend {}

/// The backends of one class a domain serves now: the boot-time ones,
/// then those hot-plugged and not yet unplugged. A backend leaves the list
/// before it is destroyed, and with the list goes the last reference to
/// what it holds (a disk's image and its lock).
///
/// Their counters by device name (`vbd-51712`, `vif-0`) follow the list
/// (a hot-plugged device's enter the metrics, a hot-unplugged one's leave)
/// but outlive `removeAll`, for a scrape after the domain ended.
final class ServedBackends<Backend: ServedBackend>: Sendable {
    private let list: Lock<[Backend]>
    private let served: Lock<[(device: String, metrics: Backend.Counters)]>

    init(_ initial: [Backend]) {
        list = Lock(initial)
        served = Lock(initial.map { (Self.deviceName($0.address), $0.metrics) })
    }

    /// A domain's boot-time backends of this class, one per item, made in
    /// order; if one cannot be made, those made before it are destroyed
    /// and its error is thrown.
    convenience init<Item>(making items: [Item], _ make: (Item) throws(DomainError) -> Backend) throws(DomainError) {
        var made: [Backend] = []
        for item in items {
            do {
                made.append(try make(item))
            } catch {
                made.forEach { $0.destroy() }
                throw error
            }
        }
        self.init(made)
    }

    /// The metrics' `device` label.
    static func deviceName(_ address: XenbusDeviceAddress) -> String { "\(address.type)-\(address.index)" }

    /// Each served device's counters, by device name.
    var counters: [(device: String, metrics: Backend.Counters)] { served.withLock { $0 } }

    var all: [Backend] { list.withLock { $0 } }
    var indices: [Int] { list.withLock { $0.map(\.address.index) } }

    func backend(_ index: Int) -> Backend? { list.withLock { $0.first { $0.address.index == index } } }

    func append(_ backend: Backend) {
        list.withLock { $0.append(backend) }
        served.withLock { $0.append((Self.deviceName(backend.address), backend.metrics)) }
    }

    /// Destroys the backend at `index`, if one serves it.
    func remove(_ index: Int) {
        let gone = list.withLock { l -> Backend? in
            guard let i = l.firstIndex(where: { $0.address.index == index }) else { return nil }
            return l.remove(at: i)
        }
        if let gone {
            let name = Self.deviceName(gone.address)
            served.withLock { $0.removeAll { $0.device == name } }
        }
        gone?.destroy()
    }

    /// Destroys every backend (the domain's end).
    func removeAll() {
        let all = list.withLock { l in defer { l = [] }; return l }
        all.forEach { $0.destroy() }
    }
}
