import BlockFrontend
import EventChannels
import GuestMemory
import NetBackend
import XenABI
import XenBus
import XenRing
import XenStore

/// Why the netif frontend failed.
public enum NetFrontendError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The ring's indices or memory are broken (a backend bug).
    case ring(XenRingError)
    /// An event-channel operation failed.
    case eventChannel(XenErrno)
    /// A store request failed.
    case store(XenStoreError)
    /// The packet does not fit the TX ring now.
    case ringFull
    /// Nothing came within the time given.
    case timedOut(Duration)

    public var description: String {
        switch self {
        case .ring(let e): "ring: \(e)"
        case .eventChannel(let e): "event channel: \(e)"
        case .store(let e): "store: \(e)"
        case .ringFull: "TX ring full"
        case .timedOut(let d): "nothing within \(d)"
        }
    }
}

/// A frame the frontend received: its bytes (the data responses' buffers
/// in order), the first response's flags, its GSO extra, and whether any
/// response carried an error status.
public struct NetfrontFrame: Hashable, Sendable {
    public var bytes: [UInt8]
    public var flags: NetifRxFlags
    public var gso: NetifExtraInfo?
    /// Responses the frame took (data and extra).
    public var slots: Int
    public var failed: Bool
}

/// One queue of a netif frontend, as Linux's xen-netfront sets up a
/// `netfront_queue`: a TX and an RX ring page granted to domain 0, one
/// unbound port (or two, split), RX buffers posted one page per slot.
/// Packets go out with `send`, frames come in with `receive`.
///
/// Not thread-safe: one thread drives a queue, as netfront does under its locks.
public final class NetfrontQueue {
    public typealias TxRing = FrontRing<NetifTxSlot, NetifTxResponse>
    public typealias RxRing = FrontRing<NetifRxRequest, NetifRxSlot>
    /// The guest the queue lives in.
    public let guest: FrontendGuest
    public let tx: TxRing
    public let rx: RxRing
    public let txRef: GrantReference
    public let rxRef: GrantReference
    /// Where the RX ring's page is (a test rewrites posted requests there,
    /// as a hostile guest may while the backend uses them).
    public let rxRingAddress: GuestPhysicalAddress
    /// Where the TX ring's page is (a test rewrites requests the backend
    /// has read, as a hostile guest may).
    public let txRingAddress: GuestPhysicalAddress
    /// The TX port; the only one when not split.
    public let txPort: EventChannelPort
    /// The RX port (`txPort` when not split).
    public let rxPort: EventChannelPort
    public var isSplit: Bool { txPort != rxPort }

    /// Per TX slot (index & mask): a data page, granted read-only, reused.
    private var txPages: [Int: (frame: GuestFrameNumber, ref: GrantReference)] = [:]
    /// Per RX id: a buffer page, granted writable, reused.
    private var rxPages: [Int: (frame: GuestFrameNumber, ref: GrantReference)] = [:]
    /// Responses taken that do not yet complete a frame.
    private var pendingRx: [NetifRxSlot] = []

    /// Allocates and grants the rings, initialises them, allocates the port(s).
    public init(guest: FrontendGuest, split: Bool = true) throws {
        self.guest = guest
        let txFrame = guest.allocatePages()
        let rxFrame = guest.allocatePages()
        do {
            tx = try TxRing(memory: guest.memory, base: guest.address(txFrame))
            rx = try RxRing(memory: guest.memory, base: guest.address(rxFrame))
        } catch { throw NetFrontendError.ring(error) }
        rxRingAddress = guest.address(rxFrame)
        txRingAddress = guest.address(txFrame)
        txRef = try guest.grant(txFrame)
        rxRef = try guest.grant(rxFrame)
        do {
            txPort = try guest.events.allocateUnbound(domain: FrontendGuest.domain, remote: .controlDomain)
            rxPort = split ? try guest.events.allocateUnbound(domain: FrontendGuest.domain, remote: .controlDomain) : txPort
        } catch { throw NetFrontendError.eventChannel(error) }
        guest.notifications.listen(txPort)
        guest.notifications.listen(rxPort)
    }

    /// This queue's xenbus nodes (`prefix` "queue-N/" for one of several),
    /// as netfront's `write_queue_xenstore_keys` writes them.
    public func nodes(prefix: String = "") -> [(String, String)] {
        var n: [(String, String)] = [("\(prefix)tx-ring-ref", String(txRef.rawValue)),
                                     ("\(prefix)rx-ring-ref", String(rxRef.rawValue))]
        if isSplit {
            n += [("\(prefix)event-channel-tx", String(txPort.rawValue)), ("\(prefix)event-channel-rx", String(rxPort.rawValue))]
        } else {
            n.append(("\(prefix)event-channel", String(txPort.rawValue)))
        }
        return n
    }

    private func ring<T>(_ body: () throws(XenRingError) -> T) throws(NetFrontendError) -> T {
        do { return try body() } catch { throw .ring(error) }
    }

    // MARK: TX

    /// Puts slots on the TX ring as given (any content: tests write
    /// hostile ones), publishes them and notifies if the backend asked.
    /// False if not all fitted (those before are published).
    @discardableResult
    public func sendSlots(_ slots: [NetifTxSlot], kick: Bool = false) throws -> Bool {
        var fitted = true
        for s in slots {
            guard try ring({ () throws(XenRingError) in try tx.enqueue(s) }) else {
                fitted = false
                break
            }
        }
        if try ring({ () throws(XenRingError) in try tx.pushRequests() }) || kick { try notify(txPort) }
        return fitted
    }

    /// The slot index the next request goes in.
    private var nextTxSlot: Int { Int(tx.requestProducerPrivate.rawValue & (tx.geometry.entries - 1)) }

    /// The data page of TX slot `slot` (allocated and granted once).
    private func txPage(_ slot: Int) throws -> (frame: GuestFrameNumber, ref: GrantReference) {
        if let p = txPages[slot] { return p }
        let frame = guest.allocatePages()
        let p = (frame, try guest.grant(frame, readOnly: true))
        txPages[slot] = p
        return p
    }

    /// The slots netfront's `xennet_start_xmit` makes of `packet`: its
    /// bytes cut into pieces of at most `slotBytes` (each in its own page,
    /// at `offset`), the first slot's size the whole packet's, `more_data`
    /// chaining them, a GSO extra after the first when `gso` is set,
    /// NETTXF_csum_blank when `checksumBlank`. Fills the pages; does not
    /// publish.
    public func packetSlots(_ packet: [UInt8], gso: NetifExtraInfo? = nil, checksumBlank: Bool = false,
                            slotBytes: Int = 4096, offset: Int = 0) throws -> [NetifTxSlot] {
        precondition(slotBytes > 0 && offset + slotBytes <= 4096, "a slot's bytes lie in one page")
        let pieces = packet.isEmpty ? 1 : (packet.count + slotBytes - 1) / slotBytes
        let mask = Int(tx.geometry.entries - 1)
        var slots: [NetifTxSlot] = []
        var index = nextTxSlot
        for k in 0..<pieces {
            let start = k * slotBytes
            let piece = Array(packet[min(start, packet.count)..<min(packet.count, start + slotBytes)])
            let page = try txPage(index)
            try guest.memory.write(piece, at: guest.address(page.frame, offset))
            var flags: NetifTxFlags = k < pieces - 1 ? [.moreData] : []
            if k == 0 {
                if checksumBlank { flags.formUnion([.checksumBlank, .dataValidated]) }
                if gso != nil { flags.insert(.extraInfo) }
            }
            let size = k == 0 ? packet.count : piece.count
            slots.append(NetifTxSlot(NetifTxRequest(grant: page.ref, offset: UInt16(offset), flags: flags,
                                                    id: UInt16(index), size: UInt16(truncatingIfNeeded: size))))
            index = (index + 1) & mask
            if k == 0, var extra = gso {
                extra.more = false
                slots.append(NetifTxSlot(extra))
                index = (index + 1) & mask
            }
        }
        return slots
    }

    /// Sends one packet (`packetSlots`, then published). Throws `.ringFull`
    /// when its slots do not fit now.
    public func send(_ packet: [UInt8], gso: NetifExtraInfo? = nil, checksumBlank: Bool = false, slotBytes: Int = 4096) throws {
        let slots = try packetSlots(packet, gso: gso, checksumBlank: checksumBlank, slotBytes: slotBytes)
        guard slots.count <= Int(tx.freeRequests) else { throw NetFrontendError.ringFull }
        try sendSlots(slots)
    }

    /// A packet placed once in pages of its own, granted read-only, as
    /// netfront grants an skb's pages instead of copying them: `send(_:)`
    /// of it writes only ring slots (benchmarks send one packet many times).
    public struct StagedPacket {
        /// Each page's grant and the bytes of the packet in it (from offset 0).
        public let pieces: [(grant: GrantReference, size: Int)]
        public let length: Int
        public let gso: NetifExtraInfo?
        public let checksumBlank: Bool
        /// Ring slots one send takes (data and extra).
        public var slots: Int { pieces.count + (gso == nil ? 0 : 1) }
    }

    /// Stages `packet` (its bytes cut at page boundaries, each piece in a
    /// fresh granted page); see `StagedPacket`.
    public func stage(_ packet: [UInt8], gso: NetifExtraInfo? = nil, checksumBlank: Bool = false) throws -> StagedPacket {
        let page = 4096
        let count = packet.isEmpty ? 1 : (packet.count + page - 1) / page
        var pieces: [(grant: GrantReference, size: Int)] = []
        for k in 0..<count {
            let piece = Array(packet[min(k * page, packet.count)..<min(packet.count, (k + 1) * page)])
            let frame = guest.allocatePages()
            try guest.memory.write(piece, at: guest.address(frame))
            pieces.append((try guest.grant(frame, readOnly: true), piece.count))
        }
        return StagedPacket(pieces: pieces, length: packet.count, gso: gso, checksumBlank: checksumBlank)
    }

    /// Puts `packet`'s slots on the ring (ids: their slot indices, as
    /// `packetSlots` gives them) without publishing them. False, and
    /// nothing queued, when they do not fit now.
    public func enqueue(_ packet: StagedPacket) throws -> Bool {
        guard packet.slots <= Int(tx.freeRequests) else { return false }
        let mask = Int(tx.geometry.entries - 1)
        for (k, piece) in packet.pieces.enumerated() {
            var flags: NetifTxFlags = k < packet.pieces.count - 1 ? [.moreData] : []
            if k == 0 {
                if packet.checksumBlank { flags.formUnion([.checksumBlank, .dataValidated]) }
                if packet.gso != nil { flags.insert(.extraInfo) }
            }
            let size = k == 0 ? packet.length : piece.size
            let request = NetifTxRequest(grant: piece.grant, offset: 0, flags: flags, id: UInt16(nextTxSlot & mask),
                                         size: UInt16(truncatingIfNeeded: size))
            _ = try ring { () throws(XenRingError) in try tx.enqueue(NetifTxSlot(request)) }
            if k == 0, var extra = packet.gso {
                extra.more = false
                _ = try ring { () throws(XenRingError) in try tx.enqueue(NetifTxSlot(extra)) }
            }
        }
        return true
    }

    /// Publishes what `enqueue` queued; notifies if the backend asked.
    public func pushTx() throws {
        if try ring({ () throws(XenRingError) in try tx.pushRequests() }) { try notify(txPort) }
    }

    /// The TX responses published so far.
    public func txResponses() throws -> [NetifTxResponse] {
        try ring { () throws(XenRingError) in try tx.takeResponses() }
    }

    /// Waits (on the TX port, never a fixed sleep) until at least `count`
    /// TX responses have come; returns them all.
    public func waitForTxResponses(_ count: Int, timeout: Duration = .seconds(30)) throws -> [NetifTxResponse] {
        var out: [NetifTxResponse] = []
        while true {
            guest.notifications.clearPending(txPort)
            out += try txResponses()
            if out.count >= count { return out }
            if try ring({ () throws(XenRingError) in try tx.finalCheckForResponses() }) { continue }
            guard guest.notifications.wait(txPort, timeout: timeout) else { throw NetFrontendError.timedOut(timeout) }
        }
    }

    /// How a frontend waiting for TX responses asks for its event.
    public enum TxEventHoldOff: String, Sendable, CaseIterable {
        /// At the next response (`RING_FINAL_CHECK_FOR_RESPONSES`): Linux's
        /// netfront since 4.x (xennet_tx_buf_gc).
        case next
        /// Once half the outstanding requests are answered (`rsp_event =
        /// rsp_cons + outstanding / 2 + 1`): Linux's netfront before, so a
        /// full ring is refilled while the backend still works through its
        /// other half, with one wake-up per half ring.
        case half
    }

    /// Waits (on the TX port, bounded) until some TX responses have come,
    /// asking for the event as `holdOff` says; returns them.
    ///
    /// `polling`: before blocking on the port, look at `rsp_prod` for up to
    /// this long (once per call), as a guest vCPU that stays running (a
    /// busy guest, or Linux's `haltpoll` cpuidle) sees a response without
    /// taking an interrupt. Zero blocks at once, as a vCPU that halts does.
    public func collectTxResponses(holdOff: TxEventHoldOff, timeout: Duration = .seconds(30),
                                   polling: Duration = .zero) throws -> [NetifTxResponse] {
        var polled = polling <= .zero
        while true {
            guest.notifications.clearPending(txPort)
            let got = try txResponses()
            if !got.isEmpty { return got }
            let after: UInt32 = holdOff == .half ? tx.outstandingRequests / 2 + 1 : 1
            if try ring({ () throws(XenRingError) in try tx.finalCheckForResponses(eventAfter: after) }) { continue }
            if !polled {
                polled = true
                if try pollWaits(for: polling, until: { () throws(XenRingError) in try tx.hasUnconsumedResponses() }) { pollHits += 1 }
                continue
            }
            portWaits += 1
            guard guest.notifications.wait(txPort, timeout: timeout) else { throw NetFrontendError.timedOut(timeout) }
        }
    }

    /// Times a wait found what it waited for while polling, and times it
    /// blocked on a port (TX and RX together): what `polling` saved.
    public private(set) var pollHits = 0
    public private(set) var portWaits = 0

    /// BlockFrontend's `pollRing`, its ring errors as this frontend's.
    private func pollWaits(for duration: Duration, until ready: () throws(XenRingError) -> Bool) throws -> Bool {
        try ring { () throws(XenRingError) in try pollRing(for: duration, until: ready) }
    }

    /// Waits for RX responses as `collectTxResponses` waits for TX ones:
    /// true once some are published (taken by `consume`/`receive`), false
    /// if `timeout` passed. Asks for the event (RING_FINAL_CHECK) before it
    /// polls or blocks.
    public func waitForRxResponses(timeout: Duration, polling: Duration = .zero) throws -> Bool {
        guest.notifications.clearPending(rxPort)
        if try ring({ () throws(XenRingError) in try rx.finalCheckForResponses() }) { return true }
        if polling > .zero, try pollWaits(for: polling, until: { () throws(XenRingError) in try rx.hasUnconsumedResponses() }) {
            pollHits += 1
            return true
        }
        portWaits += 1
        return guest.notifications.wait(rxPort, timeout: timeout)
    }

    // MARK: RX

    /// Posts buffers (netfront's `xennet_alloc_rx_buffers`) in up to
    /// `count` free RX slots (all of them by default): id = slot index,
    /// one writable page each. Publishes and notifies if asked.
    public func postReceiveBuffers(_ count: Int = .max) throws {
        let mask = rx.geometry.entries - 1
        var posted = 0
        while posted < count, rx.freeRequests > 0 {
            let id = Int(rx.requestProducerPrivate.rawValue & mask)
            let page: (frame: GuestFrameNumber, ref: GrantReference)
            if let p = rxPages[id] {
                page = p
            } else {
                let frame = guest.allocatePages()
                page = (frame, try guest.grant(frame))
                rxPages[id] = page
            }
            _ = try ring { () throws(XenRingError) in try rx.enqueue(NetifRxRequest(id: UInt16(id), grant: page.ref)) }
            posted += 1
        }
        if try ring({ () throws(XenRingError) in try rx.pushRequests() }) { try notify(rxPort) }
    }

    /// Frames whose responses are all published (netfront's
    /// `xennet_poll`: the first response, its extras, the `more_data`
    /// chain); their buffers are posted again.
    public func receive() throws -> [NetfrontFrame] {
        pendingRx += try ring { () throws(XenRingError) in try rx.takeResponses() }
        var frames: [NetfrontFrame] = []
        var i = 0
        frameLoop: while i < pendingRx.count {
            var k = i
            let first = pendingRx[k].response
            k += 1
            var gso: NetifExtraInfo?
            if first.flags.contains(.extraInfo) {
                guard k < pendingRx.count else { break }
                let e = pendingRx[k].extra
                k += 1
                if e.type == NetifExtraInfo.typeGSO { gso = e }
            }
            var data = [first]
            var more = first.flags.contains(.moreData)
            while more {
                guard k < pendingRx.count else { break frameLoop }
                let r = pendingRx[k].response
                k += 1
                data.append(r)
                more = r.flags.contains(.moreData)
            }
            var bytes: [UInt8] = []
            var failed = false
            for r in data {
                guard r.status >= 0, let page = rxPages[Int(r.id)] else {
                    failed = true
                    continue
                }
                bytes += try guest.memory.read(at: guest.address(page.frame, Int(r.offset)), count: Int(r.status))
            }
            frames.append(NetfrontFrame(bytes: bytes, flags: first.flags, gso: gso, slots: k - i, failed: failed))
            i = k
        }
        pendingRx.removeFirst(i)
        if !frames.isEmpty { try postReceiveBuffers() }
        return frames
    }

    /// What `consume` counted: whole frames and their data bytes.
    public struct Consumed: Hashable, Sendable {
        public var frames = 0
        public var bytes = 0
        public var failed = 0
        public init() {}
    }

    /// Like `receive`, but counts frames and bytes without reading them
    /// (benchmarks): takes the published responses, groups them into
    /// frames the same way, posts the buffers of whole frames again.
    public func consume() throws -> Consumed {
        pendingRx += try ring { () throws(XenRingError) in try rx.takeResponses() }
        var out = Consumed()
        var i = 0
        frameLoop: while i < pendingRx.count {
            var k = i
            let first = pendingRx[k].response
            k += 1
            if first.flags.contains(.extraInfo) {
                guard k < pendingRx.count else { break }
                k += 1
            }
            var bytes = max(0, Int(first.status))
            var failed = first.status < 0
            var more = first.flags.contains(.moreData)
            while more {
                guard k < pendingRx.count else { break frameLoop }
                let r = pendingRx[k].response
                k += 1
                bytes += max(0, Int(r.status))
                failed = failed || r.status < 0
                more = r.flags.contains(.moreData)
            }
            out.frames += 1
            out.bytes += bytes
            if failed { out.failed += 1 }
            i = k
        }
        pendingRx.removeFirst(i)
        if i > 0 { try postReceiveBuffers() }
        return out
    }

    /// Waits (on the RX port) until at least `count` frames came.
    public func waitForFrames(_ count: Int, timeout: Duration = .seconds(30)) throws -> [NetfrontFrame] {
        var out: [NetfrontFrame] = []
        while true {
            guest.notifications.clearPending(rxPort)
            out += try receive()
            if out.count >= count { return out }
            if try ring({ () throws(XenRingError) in try rx.finalCheckForResponses() }) { continue }
            guard guest.notifications.wait(rxPort, timeout: timeout) else { throw NetFrontendError.timedOut(timeout) }
        }
    }

    /// Notifies the backend on `port` whatever it asked for.
    public func notify(_ port: EventChannelPort) throws {
        do { try guest.events.send(port) } catch { throw NetFrontendError.eventChannel(error) }
    }
}

/// What a netif frontend writes: its side of the xenbus handshake.
public enum Netfront {
    /// The features Linux's netfront writes in `talk_to_netback`.
    public static let features: [(String, String)] = [
        ("request-rx-copy", "1"), ("feature-rx-notify", "1"), ("feature-sg", "1"),
        ("feature-gso-tcpv4", "1"), ("feature-gso-tcpv6", "1"), ("feature-ipv6-csum-offload", "1"),
    ]

    /// Linux's netfront `talk_to_netback`: "multi-queue-num-queues", each
    /// queue's rings and channels (flat for one queue, under "queue-N/"
    /// for more), the `features`, then `state`: Connected (4) straight from
    /// Initialising as netfront does, or Initialised (3). A backend in
    /// InitWait connects before this returns.
    public static func connect(_ queues: [NetfrontQueue], device address: XenbusDeviceAddress,
                               features: [(String, String)] = Netfront.features, state: XenbusState = .connected) throws {
        guard let first = queues.first else { return }
        let fe = address.frontendPath
        // netfront writes the queue count whenever the backend offers
        // "multi-queue-max-queues" (this one does), the keys of a single
        // queue flat, of several under "queue-N/".
        var nodes = features + [("multi-queue-num-queues", String(queues.count))]
        if queues.count == 1 {
            nodes += first.nodes()
        } else {
            for (i, q) in queues.enumerated() { nodes += q.nodes(prefix: "queue-\(i)/") }
        }
        do {
            for (k, v) in nodes { try first.guest.storeWire.write("\(fe)/\(k)", v) }
            try first.guest.storeWire.write("\(fe)/state", state.storeValue)
        } catch {
            throw NetFrontendError.store(error)
        }
    }
}
