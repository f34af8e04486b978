import GuestMemory

/// Frames for one `BatchTransmitNetworkLink.transmit(_:)`, in order: each
/// frame's parts (host memory that stays mapped during the call, as for
/// `NetworkLink.transmit`) and its offload. A backend keeps one value and
/// refills it (`removeAll` keeps the storage), so a batch allocates nothing
/// once its arrays have grown.
public struct NetworkTransmitBatch: Sendable {
    /// Every frame's parts, one frame after another.
    public private(set) var parts: [HostMemoryRange] = []
    /// Each frame's offload, in order.
    public private(set) var offloads: [NetworkOffload] = []
    /// Where each frame's parts end in `parts`.
    private var ends: [Int] = []
    /// What became of each frame, in order: set by the link.
    public var results: [Result<Void, NetworkTransmitDrop>] = []

    public init() {}

    /// Frames in the batch.
    public var count: Int { offloads.count }

    /// Adds a frame gathered from `frame`'s parts in order.
    public mutating func append(_ frame: some Collection<HostMemoryRange>, offload: NetworkOffload) {
        parts.append(contentsOf: frame)
        ends.append(parts.count)
        offloads.append(offload)
    }

    /// Adds a part to the frame being built: the parts appended since the
    /// last frame ended become the next frame at `endFrame`. A backend
    /// gathering a frame part by part copies no array of its own.
    public mutating func appendPart(_ part: HostMemoryRange) {
        parts.append(part)
    }

    /// Ends the frame being built (its parts: those appended since the
    /// last frame ended), with `offload`.
    public mutating func endFrame(offload: NetworkOffload) {
        ends.append(parts.count)
        offloads.append(offload)
    }

    /// Forgets the parts appended since the last frame ended.
    public mutating func discardOpenFrame() {
        parts.removeSubrange((ends.last ?? 0)...)
    }

    /// The parts of frame `index` (below `count`).
    public func parts(of index: Int) -> ArraySlice<HostMemoryRange> {
        parts[(index == 0 ? 0 : ends[index - 1]) ..< ends[index]]
    }

    /// Forgets every frame and result; the storage is kept. No part stays
    /// named past the call that sent it.
    public mutating func removeAll() {
        parts.removeAll(keepingCapacity: true)
        offloads.removeAll(keepingCapacity: true)
        ends.removeAll(keepingCapacity: true)
        results.removeAll(keepingCapacity: true)
    }
}

/// A link that takes several frames in one call, as cheaply as it can (a
/// TAP: one io_uring_enter for the lot rather than a writev each).
public protocol BatchTransmitNetworkLink: NetworkLink {
    /// The most frames one batch should hold; more are sent all the same.
    var transmitBatchLimit: Int { get }
    /// Sends `batch`'s frames in order, each as `transmit` would, and sets
    /// `batch.results` to one result per frame. Returns once the host side
    /// has taken or refused every frame: no part is read after it returns.
    func transmit(_ batch: inout NetworkTransmitBatch)
}

extension BatchTransmitNetworkLink {
    /// One `transmit` per frame: what a link without a cheaper way does.
    /// `scratch` holds each frame's parts in turn (its storage kept).
    public func transmitEach(_ batch: inout NetworkTransmitBatch, scratch: inout [HostMemoryRange]) {
        batch.results.removeAll(keepingCapacity: true)
        for k in 0..<batch.count {
            scratch.removeAll(keepingCapacity: true)
            scratch.append(contentsOf: batch.parts(of: k))
            batch.results.append(transmit(scratch, offload: batch.offloads[k]))
        }
        scratch.removeAll(keepingCapacity: true)
    }
}
