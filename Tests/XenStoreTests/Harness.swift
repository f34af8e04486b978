import XenABI
import XenStore

/// Drives a `XenStoreCore` with wire requests from three clients: dom0
/// (privileged), d1 and d2 (guests).
struct Harness {
    var core: XenStoreCore
    static let dom0 = XenStoreConnectionID(rawValue: 100)
    static let d1 = XenStoreConnectionID(rawValue: 101)
    static let d2 = XenStoreConnectionID(rawValue: 102)

    init(quota: XenStoreQuota = .default) {
        core = XenStoreCore(quota: quota)
        core.connect(Self.dom0, domain: DomainID(rawValue: 0), privileged: true)
        core.connect(Self.d1, domain: DomainID(rawValue: 1), privileged: false)
        core.connect(Self.d2, domain: DomainID(rawValue: 2), privileged: false)
    }

    /// What one request produced: the reply, and the watch events per connection.
    struct Outcome {
        var reply: XenStoreMessage
        var events: [(XenStoreConnectionID, String, String)]
        var ok: Bool { reply.type != .error }
        var error: XenStoreError? {
            reply.type == .error ? XenStoreError(wireName: XenStoreWire.strings(reply.payload).first ?? "") : nil
        }
        var strings: [String] { XenStoreWire.strings(reply.payload) }
        var text: String { String(decoding: reply.payload, as: UTF8.self) }
        func events(for c: XenStoreConnectionID) -> [String] {
            events.filter { $0.0 == c }.map { "\($0.1) \($0.2)" }
        }
    }

    @discardableResult
    mutating func send(_ c: XenStoreConnectionID, _ type: XenStoreMessageType, _ strings: [String],
                       tx: UInt32 = 0, requestID: UInt32 = 7) -> Outcome {
        send(c, XenStoreMessage(type: type, requestID: requestID, transactionID: tx, strings: strings))
    }

    @discardableResult
    mutating func send(_ c: XenStoreConnectionID, _ m: XenStoreMessage) -> Outcome {
        let out = core.handle(m, from: c)
        precondition(!out.isEmpty && out[0].connection == c, "no reply")
        let events = out.dropFirst().map { d -> (XenStoreConnectionID, String, String) in
            precondition(d.message.type == .watchEvent)
            let s = XenStoreWire.strings(d.message.payload)
            return (d.connection, s[0], s[1])
        }
        return Outcome(reply: out[0].message, events: Array(events))
    }

    @discardableResult
    mutating func write(_ c: XenStoreConnectionID, _ path: String, _ value: String, tx: UInt32 = 0) -> Outcome {
        send(c, XenStoreMessage(type: .write, requestID: 7, transactionID: tx,
                                payload: XenStoreWire.nulTerminated([path]) + Array(value.utf8)))
    }

    mutating func read(_ c: XenStoreConnectionID, _ path: String, tx: UInt32 = 0) -> Outcome {
        send(c, .read, [path], tx: tx)
    }

    /// The usual toolstack set-up of a guest's home: /local/domain/<id>
    /// owned by the guest, readable by nobody else.
    mutating func makeHome(_ id: UInt16) {
        send(Self.dom0, .mkdir, ["/local/domain/\(id)"])
        send(Self.dom0, .setPermissions, ["/local/domain/\(id)", "n\(id)"])
    }

    mutating func startTransaction(_ c: XenStoreConnectionID) -> UInt32 {
        UInt32(send(c, .transactionStart, [""]).strings.first ?? "") ?? 0
    }
}
