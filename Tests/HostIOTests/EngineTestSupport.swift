import Foundation
import GuestMemory
import HostIO
import Testing

/// Completions as they arrive, with the threads that delivered them, and a
/// way to wait for a number of them. The wait's timeout only turns a hang
/// into a failure; the wait itself ends on the completions.
final class CompletionLog: @unchecked Sendable {
    // SAFETY (Sendable): every var is accessed with `condition` locked.
    private let condition = NSCondition()
    private var completions: [BlockIOCompletion] = []
    private var threads: [pthread_t] = []
    private var batchSizes: [Int] = []

    func add(_ batch: [BlockIOCompletion]) {
        condition.lock()
        completions += batch
        threads.append(pthread_self())
        batchSizes.append(batch.count)
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until at least `count` completions have arrived; false if
    /// `seconds` passed first.
    func wait(for count: Int, seconds: Double = 60) -> Bool {
        let deadline = Date(timeIntervalSinceNow: seconds)
        condition.lock()
        defer { condition.unlock() }
        while completions.count < count {
            if !condition.wait(until: deadline) { return completions.count >= count }
        }
        return true
    }

    var all: [BlockIOCompletion] { locked { completions } }
    var deliveringThreads: [pthread_t] { locked { threads } }
    var batches: [Int] { locked { batchSizes } }

    private func locked<T>(_ body: () -> T) -> T {
        condition.lock()
        defer { condition.unlock() }
        return body()
    }

    func result(_ tag: UInt64) -> Result<Int, HostIOError>? { all.first { $0.tag == tag }?.result }

    /// Each tag's results (a tag completed twice shows two).
    func byTag() -> [UInt64: [Result<Int, HostIOError>]] {
        Dictionary(grouping: all, by: \.tag).mapValues { $0.map(\.result) }
    }
}

/// The engines under test, as `BlockBackingFile.makeEngine` makes them.
enum EngineUnderTest: String, CaseIterable, CustomTestStringConvertible, Sendable {
    /// `ioUringGrouped`: io_uring handing the kernel at most two SQEs per
    /// io_uring_enter (`IOUringSubmission.groups`) until a transfer of 8 KiB
    /// or more comes: most batches here take several calls, some one.
    case ioUring, ioUringGrouped, threadPool, synchronous

    var kind: BlockBackingFile.EngineKind {
        switch self {
        case .ioUring, .ioUringGrouped: .ioUring
        case .threadPool: .threadPool
        case .synchronous: .synchronous
        }
    }

    var testDescription: String { rawValue }

    /// Whether the engine delivers on threads of its own (not the submitter's).
    var deliversOnOwnThreads: Bool { self != .synchronous }

    /// Makes the engine for `file`, delivering to `log`; an io_uring the host
    /// does not have cancels the test case, saying why.
    func make(_ file: BlockBackingFile, depth: Int = 64, log: CompletionLog) throws -> any BlockIOEngine {
        try make(file, depth: depth, onComplete: log.add)
    }

    func make(_ file: BlockBackingFile, depth: Int = 64, onComplete: @escaping @Sendable ([BlockIOCompletion]) -> Void) throws -> any BlockIOEngine {
        do {
            return try file.makeEngine(kind, depth: depth, submission: self == .ioUringGrouped ? .groups(of: 2, below: 8192) : .batch, onComplete: onComplete)
        } catch {
            try Test.cancel("io_uring unavailable on this host: \(error)")
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood: "Fast splittable pseudorandom number
/// generators", 2014): a seeded generator, so a workload is the same on
/// every run and for every engine.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

extension RandomNumberGenerator {
    /// `n` random bytes, eight from each draw.
    mutating func bytes(_ n: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(n + 8)
        while out.count < n {
            let v = next()
            for k in 0..<8 { out.append(UInt8(truncatingIfNeeded: v >> (8 * k))) }
        }
        return Array(out.prefix(n))
    }
}

/// Guest RAM for the engine tests, with page-granular host ranges.
struct GuestPages {
    static let pageSize = 4096
    let memory: MappedGuestMemory
    let count: Int

    init(pages: Int) throws {
        count = pages
        memory = try MappedGuestMemory(ranges: [GuestPhysicalRange(start: GuestPhysicalAddress(0), length: UInt64(pages * Self.pageSize))])
    }

    func address(_ page: Int, _ offset: Int = 0) -> GuestPhysicalAddress { GuestPhysicalAddress(UInt64(page * Self.pageSize + offset)) }

    /// `count` bytes of guest memory at `offset` into page `page`.
    func range(_ page: Int, offset: Int = 0, count: Int = pageSize) throws -> HostMemoryRange {
        try memory.hostRange(GuestPhysicalRange(start: address(page, offset), length: UInt64(count)))
    }
}

/// Runs a shell command (mount, losetup) as the tests' helper; its exit
/// status and standard output.
@discardableResult
func run(_ command: String, _ arguments: [String]) -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: command)
    p.arguments = arguments
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    do { try p.run() } catch { return (-1, "") }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

let isRoot = getuid() == 0
