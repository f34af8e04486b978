// Fuzz target: the XenStore wire framer and XenStoreCore, driven by a byte
// stream as an unprivileged guest writes it into its ring (io/xs_wire.h).
// Input: byte 0 picks the chunk size the stream is fed in; the rest is the
// stream. Checks: framing does not depend on how the stream is chunked, every
// frame re-encodes to itself, the core answers every request of domain 1
// first to domain 1 with its ids echoed, and the store's invariants hold.
import FuzzSupport
import XenABI
import XenStore

private let dom0 = XenStoreConnectionID(rawValue: 100)
private let guest = XenStoreConnectionID(rawValue: 101)
private let other = XenStoreConnectionID(rawValue: 102)
private let connections: Set<XenStoreConnectionID> = [dom0, guest, other]

/// A store as the toolstack leaves it for a booting guest: domain 1 and 2
/// introduced, each owning its home (tools/xl's `libxl__domain_make`).
private func freshCore() -> XenStoreCore {
    var core = XenStoreCore()
    core.connect(dom0, domain: DomainID(rawValue: 0), privileged: true)
    core.connect(guest, domain: DomainID(rawValue: 1), privileged: false)
    core.connect(other, domain: DomainID(rawValue: 2), privileged: false)
    for d in ["1", "2"] {
        for m in [
            XenStoreMessage(type: .introduce, strings: [d, "0", "1"]),
            XenStoreMessage(type: .mkdir, strings: ["/local/domain/\(d)/device"]),
            XenStoreMessage(type: .setPermissions, strings: ["/local/domain/\(d)", "n\(d)"]),
            XenStoreMessage(type: .setPermissions, strings: ["/local/domain/\(d)/device", "n\(d)"]),
        ] {
            _ = core.handle(m, from: dom0)
        }
    }
    _ = core.handle(XenStoreMessage(type: .watch, strings: ["/local/domain/1", "t"]), from: other)
    return core
}

private func frames(_ stream: ArraySlice<UInt8>, chunk: Int) -> Result<[XenStoreFrame], XenStoreFramingError> {
    var framer = XenStoreFramer()
    var out: [XenStoreFrame] = []
    var i = stream.startIndex
    while i < stream.endIndex {
        let j = min(i + chunk, stream.endIndex)
        do throws(XenStoreFramingError) {
            out += try framer.feed(Array(stream[i..<j]))
        } catch {
            return .failure(error)
        }
        i = j
    }
    return .success(out)
}

@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzBytes(data, size, fuzzOne) }

@_cdecl("fuzz_xenstore_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { fuzzDriverMain(argc, argv) }

private func fuzzOne(_ input: [UInt8]) {
    guard let first = input.first else { return }
    let stream = input.dropFirst()
    let whole = frames(stream, chunk: max(stream.count, 1))
    let chunked = frames(stream, chunk: Int(first % 32) + 1)
    precondition(whole == chunked, "framing depends on chunking")
    let list: [XenStoreFrame]
    switch whole {
    case .success(let f): list = f
    case .failure: list = (try? frames(stream, chunk: 1).get()) ?? []
    }

    var core = freshCore()
    precondition(core.invariantViolations().isEmpty)
    for frame in list.prefix(256) {
        switch frame {
        case .unknownType(let type, let requestID, let transactionID):
            let reply = XenStoreCore.unknownTypeReply(requestID: requestID, transactionID: transactionID)
            precondition(reply.requestID == requestID && reply.transactionID == transactionID && type > 0)
        case .message(let message):
            var framer = XenStoreFramer()
            precondition((try? framer.feed(message.bytes)) == [.message(message)], "re-encoding changed the frame")
            let out = core.handle(message, from: guest)
            guard let reply = out.first else { preconditionFailure("no reply") }
            precondition(reply.connection == guest, "first delivery not the reply")
            precondition(reply.message.requestID == message.requestID
                && reply.message.transactionID == message.transactionID, "ids not echoed")
            precondition(reply.message.type == message.type || reply.message.type == .error, "reply type")
            for d in out {
                precondition(connections.contains(d.connection), "delivery to an unknown connection")
                precondition(d.message.payload.count <= XenStoreLimits.payloadMax, "oversized payload")
            }
            for d in out.dropFirst() { precondition(d.message.type == .watchEvent, "extra delivery not an event") }
            let problems = core.invariantViolations()
            precondition(problems.isEmpty, "store invariants: \(problems)")
        }
    }
}
