import BlockBackend
import EventChannels
import GuestMemory
import XenABI
import XenRing

/// One ring of a blkif frontend in ABI `L`, as Linux's xen-blkfront sets up
/// a `blkfront_ring_info`: `1 << order` contiguous pages granted to domain
/// 0 (the backend sees `ring-page-order` separate grants), the shared ring
/// initialised in them, and an unbound port for domain 0 (`event-channel`).
/// Requests go on with `submit`, responses come off with `responses` or
/// `waitForResponses`.
///
/// Not thread-safe: one thread drives a ring, as blkfront does under its
/// ring lock.
public final class BlkfrontRing<L: BlkifABILayout> {
    /// The frontend half of the shared ring, in ABI `L`.
    public typealias Ring = FrontRing<BlkifRequestEntry<L>, BlkifResponseEntry<L>>
    /// The guest the ring lives in.
    public let guest: FrontendGuest
    /// The shared ring (its raw accessors are TestSupport's).
    public let ring: Ring
    /// The ring pages' grants, in order (`ring-ref` or `ring-ref0`...).
    public let refs: [GrantReference]
    /// The guest's port, unbound for domain 0 until the backend binds it.
    public let port: EventChannelPort
    /// Times `waitForResponses` waited on the port (a wake-up by the
    /// backend's event, or a return at once for an event whose responses
    /// polling already took), and times its polling found a response.
    public private(set) var portWaits = 0
    public private(set) var pollHits = 0
    /// The structures' layout in ABI `L`.
    public var layout: BlkifLayout { L.abi.layout }

    /// Allocates and grants the ring's pages and allocates the port.
    public init(guest: FrontendGuest, order: Int = 0) throws {
        self.guest = guest
        let pages = 1 << order
        let first = guest.allocatePages(pages)
        ring = try Ring(memory: guest.memory, base: guest.address(first), byteCount: pages * 4096)
        refs = try (0..<pages).map { try guest.grant(GuestFrameNumber(first.rawValue + UInt64($0))) }
        do {
            port = try guest.events.allocateUnbound(domain: FrontendGuest.domain, remote: .controlDomain)
        } catch {
            throw BlockFrontendError.eventChannel(error)
        }
        guest.notifications.listen(port)
    }

    /// The smallest `ring-page-order` whose ring holds `depth` requests
    /// (what blkfront's `xen_blkif_max_ring_order` must allow for a queue
    /// depth); nil above the backend's maximum order.
    public static func order(forDepth depth: Int) -> Int? {
        for order in 0...BlockBackendLimits.maximumRingPageOrder {
            if let g = SharedRingGeometry(BlkifRequestEntry<L>.self, BlkifResponseEntry<L>.self, byteCount: 4096 << order),
               g.entries >= depth { return order }
        }
        return nil
    }

    /// This ring's xenbus nodes (`prefix` "queue-N/" for one of several).
    public func nodes(prefix: String = "") -> [(String, String)] {
        var n: [(String, String)] = [("\(prefix)event-channel", String(port.rawValue))]
        if refs.count == 1 {
            n.append(("\(prefix)ring-ref", String(refs[0].rawValue)))
        } else {
            for (i, r) in refs.enumerated() { n.append(("\(prefix)ring-ref\(i)", String(r.rawValue))) }
        }
        return n
    }

    /// Puts `requests` on the ring, publishes them and notifies the backend
    /// if it asked (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY); false if one did
    /// not fit (those before it are published).
    @discardableResult
    public func submit(_ requests: [BlkifWireRequest]) throws -> Bool {
        var fitted = true
        do {
            for r in requests {
                guard try ring.enqueue(BlkifRequestEntry<L>(r)) else {
                    fitted = false
                    break
                }
            }
            if try ring.pushRequests() { try kick() }
        } catch let error as XenRingError {
            throw BlockFrontendError.ring(error)
        }
        return fitted
    }

    /// Notifies the backend whatever it asked for (a guest may always send).
    public func kick() throws {
        do { try guest.events.send(port) } catch { throw BlockFrontendError.eventChannel(error) }
    }

    /// The responses published so far (none is waited for).
    public func responses() throws -> [BlkifWireResponse] {
        do { return try ring.takeResponses().map(\.response) } catch { throw BlockFrontendError.ring(error) }
    }

    /// The responses published so far, or, when there are none, the next
    /// ones: blkfront's interrupt path (the pending bit cleared, the
    /// responses taken, RING_FINAL_CHECK_FOR_RESPONSES), waiting on the
    /// port between looks, never sleeping for a fixed time. Throws
    /// `.timedOut` when `timeout` passes without one.
    ///
    /// `polling`: before blocking on the port, look at `rsp_prod` for up to
    /// this long, as a guest vCPU that stays running (a busy guest, or one
    /// whose idle loop polls, Linux's `haltpoll` cpuidle) sees a response
    /// without taking an interrupt. Zero blocks at once, as a vCPU that
    /// halts does.
    public func waitForResponses(timeout: Duration = .seconds(30), polling: Duration = .zero) throws -> [BlkifWireResponse] {
        var polled = polling <= .zero
        do {
            while true {
                guest.notifications.clearPending(port)
                let taken = try ring.takeResponses()
                if !taken.isEmpty { return taken.map(\.response) }
                if try ring.finalCheckForResponses() { continue }
                if !polled {
                    // Once per call: the look that follows clears the pending
                    // bit and takes what came, or blocks.
                    polled = true
                    if try poll(for: polling) { pollHits += 1 }
                    continue
                }
                portWaits += 1
                guard guest.notifications.wait(port, timeout: timeout) else { throw BlockFrontendError.timedOut(timeout) }
            }
        } catch let error as XenRingError {
            throw BlockFrontendError.ring(error)
        }
    }

    /// Looks at `rsp_prod` until a response is there (true) or `duration`
    /// passed (false).
    private func poll(for duration: Duration) throws(XenRingError) -> Bool {
        try pollRing(for: duration) { () throws(XenRingError) in try ring.hasUnconsumedResponses() }
    }
}

/// A frontend's polling wait (a vCPU that keeps running instead of
/// halting): looks until `ready` says so (true) or `duration` passed
/// (false). Shared by the block and net test frontends.
public func pollRing(for duration: Duration, until ready: () throws(XenRingError) -> Bool) throws(XenRingError) -> Bool {
    let deadline = ContinuousClock.now + duration
    while true {
        if try ready() { return true }
        if ContinuousClock.now >= deadline { return false }
    }
}
