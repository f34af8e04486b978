import Testing
import XenABI
@testable import XenStore

/// XenStoreRingHandover: what a guest's relayed connection carries over to a
/// new daemon's store (EAGAIN for the unanswered and the open transactions,
/// the watches sent again).
@Suite struct RingHandoverTests {
    func message(_ type: XenStoreMessageType, id: UInt32, tx: UInt32 = 0, _ strings: [String]) -> XenStoreMessage {
        XenStoreMessage(type: type, requestID: id, transactionID: tx, strings: strings)
    }

    @Test func watchesTransactionsAndUnansweredCarryOver() {
        var h = XenStoreRingHandover()
        func req(_ m: XenStoreMessage) -> XenStoreRingHandover.Decision { h.request(m) }
        func store(_ m: XenStoreMessage) -> Bool { h.fromStore(m) }
        // A watch the store accepted, one it refused, one removed again.
        #expect(req(message(.watch, id: 1, ["device", "tok1"])) == .forward)
        #expect(store(message(.watch, id: 1, ["OK"])))
        #expect(req(message(.watch, id: 2, ["bad", "tok2"])) == .forward)
        #expect(store(XenStoreWire.errorReply(.eacces, to: message(.watch, id: 2, []))))
        #expect(req(message(.watch, id: 3, ["control", "tok3"])) == .forward)
        #expect(store(message(.watch, id: 3, ["OK"])))
        #expect(req(message(.unwatch, id: 4, ["control", "tok3"])) == .forward)
        #expect(store(message(.unwatch, id: 4, ["OK"])))
        // An event always goes through.
        #expect(store(XenStoreWire.watchEvent(path: "device", token: "tok1")))
        #expect(h.watches == [.init(path: "device", token: "tok1")])
        // A transaction opened (id 7), one opened and closed (id 8).
        #expect(req(message(.transactionStart, id: 5, [""])) == .forward)
        #expect(store(message(.transactionStart, id: 5, ["7"])))
        #expect(req(message(.transactionStart, id: 6, [""])) == .forward)
        #expect(store(message(.transactionStart, id: 6, ["8"])))
        #expect(req(message(.transactionEnd, id: 9, tx: 8, ["T"])) == .forward)
        #expect(store(message(.transactionEnd, id: 9, tx: 8, ["OK"])))
        // Two requests the old store never answered.
        #expect(req(message(.read, id: 10, tx: 7, ["name"])) == .forward)
        #expect(req(message(.write, id: 11, ["x"])) == .forward)
        #expect(h.pendingCount == 2)

        let (answers, replays) = h.reattach()
        #expect(answers == [XenStoreMessage(type: .error, requestID: 10, transactionID: 7, strings: ["EAGAIN"]),
                            XenStoreMessage(type: .error, requestID: 11, transactionID: 0, strings: ["EAGAIN"])])
        #expect(replays == [XenStoreMessage(type: .watch, strings: ["device", "tok1"])])
        // The replay's reply is swallowed; the guest's next one is not.
        #expect(!store(message(.watch, id: 0, ["OK"])))
        // Transaction 7 is stale: answered here, EAGAIN, never forwarded; its end too, once.
        #expect(req(message(.read, id: 12, tx: 7, ["name"])) == .answer(XenStoreMessage(type: .error, requestID: 12, transactionID: 7, strings: ["EAGAIN"])))
        #expect(req(message(.transactionEnd, id: 13, tx: 7, ["T"])) == .answer(XenStoreMessage(type: .error, requestID: 13, transactionID: 7, strings: ["EAGAIN"])))
        #expect(req(message(.read, id: 14, tx: 7, ["name"])) == .forward)
        #expect(store(XenStoreWire.errorReply(.enoent, to: message(.read, id: 14, tx: 7, []))))
        #expect(h.pendingCount == 0)
    }

    @Test func aNewTransactionWithAStaleIDIsLive() {
        var h = XenStoreRingHandover()
        _ = h.request(message(.transactionStart, id: 1, [""]))
        _ = h.fromStore(message(.transactionStart, id: 1, ["1"]))
        _ = h.reattach()
        _ = h.request(message(.transactionStart, id: 2, [""]))
        _ = h.fromStore(message(.transactionStart, id: 2, ["1"]))
        let decision = h.request(message(.read, id: 3, tx: 1, ["a"]))
        #expect(decision == .forward)
    }

    @Test func resetForgetsEverythingAndPendingIsBounded() {
        var h = XenStoreRingHandover()
        _ = h.request(message(.watch, id: 1, ["a", "t"]))
        _ = h.fromStore(message(.watch, id: 1, ["OK"]))
        _ = h.request(message(.read, id: 2, ["a"]))
        h.reset()
        #expect(h.watches.isEmpty && h.pendingCount == 0)
        let (answers, replays) = h.reattach()
        #expect(answers.isEmpty && replays.isEmpty)
        for i in 0..<XenStoreRingHandover.maximumPending { _ = h.request(message(.read, id: UInt32(i), ["a"])) }
        #expect(!h.acceptsMore)
        // XS_RESET_WATCHES answered: the store forgot the watches.
        var g = XenStoreRingHandover()
        _ = g.request(message(.watch, id: 1, ["a", "t"]))
        _ = g.fromStore(message(.watch, id: 1, ["OK"]))
        _ = g.request(message(.resetWatches, id: 2, []))
        _ = g.fromStore(message(.resetWatches, id: 2, ["OK"]))
        #expect(g.watches.isEmpty)
    }
}
