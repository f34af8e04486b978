import GuestMemory

/// What one `ConsoleRing.pump()` did.
public struct ConsolePumpResult: Hashable, Sendable {
    /// Bytes moved out of the guest's `out` ring into `pendingOutput`.
    public var bytesFromGuest: Int
    /// Bytes of `pendingInput` moved into the guest's `in` ring.
    public var bytesToGuest: Int
    /// The guest should get an event on the console's channel: it has new
    /// input, or room was made in `out` (Linux's hvc_xen waits for that event
    /// when its ring is full). xenconsoled notifies in the same two cases.
    public var notifyGuest: Bool { bytesFromGuest > 0 || bytesToGuest > 0 }

    public init(bytesFromGuest: Int, bytesToGuest: Int) {
        self.bytesFromGuest = bytesFromGuest
        self.bytesToGuest = bytesToGuest
    }
}

/// The console backend's ring state: the `xencons_interface` page the guest
/// named in HVM_PARAM_CONSOLE_PFN, plus two host-side queues so that nothing
/// is dropped when either side is slow.
///
/// - Guest output goes ring → `pendingOutput` → host terminal. The host
///   writer takes bytes with `pendingOutput(max:)` and confirms what it really
///   wrote with `outputWritten(_:)`. While `pendingOutput` holds
///   `outputLimit` bytes the backend stops draining the ring, so a slow host
///   back-pressures the guest (hvc_xen waits for room) instead of losing bytes.
/// - Host input goes `queueInput(_:)` → `pendingInput` → ring, as fast as the
///   guest frees room. `acceptsInput` tells the host reader when to stop
///   reading its terminal because the guest is not consuming.
///
/// Not thread-safe: `ConsoleBackend` keeps one per console under its lock;
/// the pump runs on the console's device thread, host input is queued from
/// the terminal reader's thread.
public struct ConsoleRing: Sendable {
    public let ring: ByteRing
    /// Most guest output held host-side before the ring is left to fill.
    public let outputLimit: Int
    /// Most host input held before `acceptsInput` turns false.
    public let inputLimit: Int
    private var output = ByteQueue()
    private var input = ByteQueue()

    /// The console page at `frame` (HVM_PARAM_CONSOLE_PFN).
    public init(memory: any GuestMemory, frame: GuestFrameNumber, outputLimit: Int = 64 << 10,
                inputLimit: Int = 64 << 10) throws(XenRingError) {
        guard let base = frame.address else {
            throw .memory(.outOfBounds(GuestPhysicalAddress(UInt64.max), count: GuestFrameNumber.pageSize))
        }
        try self.init(ring: ByteRing(layout: .console, memory: memory, base: base),
                      outputLimit: outputLimit, inputLimit: inputLimit)
    }

    public init(ring: ByteRing, outputLimit: Int = 64 << 10, inputLimit: Int = 64 << 10) {
        self.ring = ring
        self.outputLimit = max(outputLimit, 1)
        self.inputLimit = max(inputLimit, 1)
    }

    /// Guest output not yet written to the host.
    public var pendingOutputCount: Int { output.count }
    /// Host input not yet delivered to the guest.
    public var pendingInputCount: Int { input.count }
    /// False while `inputLimit` bytes wait for the guest: stop reading the terminal.
    public var acceptsInput: Bool { input.count < inputLimit }

    /// Queues host input (keyboard bytes) for the guest. Always accepted; the
    /// caller honours `acceptsInput` to keep the queue bounded.
    public mutating func queueInput(_ bytes: some Sequence<UInt8>) { input.append(contentsOf: bytes) }

    /// Up to `max` bytes of guest output for the host, oldest first, still
    /// queued until confirmed with `outputWritten(_:)`.
    public func pendingOutput(max: Int = Int.max) -> [UInt8] { Array(output.peek(max: max)) }

    /// The host wrote the first `count` bytes of `pendingOutput`.
    public mutating func outputWritten(_ count: Int) { output.removeFirst(max(count, 0)) }

    /// Moves guest output into `pendingOutput` (up to `outputLimit`) and
    /// pending input into the guest's ring (as much as fits). Throws
    /// `.indexOverrun` for impossible indices (a hostile guest) and `.memory`
    /// if the page is not RAM; the queues keep their bytes either way.
    public mutating func pump() throws(XenRingError) -> ConsolePumpResult {
        var fromGuest: [UInt8] = []
        let room = outputLimit - output.count
        if room > 0 {
            fromGuest = try ring.consumeFromGuest(max: room)
            output.append(contentsOf: fromGuest)
        }
        var toGuest = 0
        if !input.isEmpty {
            toGuest = try ring.produceToGuest(input.peek(max: input.count))
            input.removeFirst(toGuest)
        }
        return ConsolePumpResult(bytesFromGuest: fromGuest.count, bytesToGuest: toGuest)
    }
}
