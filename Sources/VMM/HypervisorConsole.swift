#if canImport(Glibc)
import Glibc
#endif
import DeviceRuntime
import Dispatch
import Foundation
import Logging
import Locking
import XenABI

// Xen's console, as a guest reaches it: CONSOLEIO_write and the debug port
// 0xE9. On Xen these are the hypervisor's console (`xl dmesg`), not the
// guest's PV console: each line a domU writes is printed by guest_printk
// with the prefix `(dN) ` (xen/drivers/char/console.c), after the
// per-domain line buffer both paths share (struct domain_console in
// xen/include/xen/sched.h; hvm_print_line in xen/arch/x86/hvm/hvm.c,
// guest_console_write in console.c).

/// One line of a guest's hypervisor console: printable bytes, no newline.
public struct HypervisorConsoleLine: Sendable, Equatable {
    public let domain: DomainID
    /// The line as the guest wrote it, non-printable bytes removed.
    public let text: [UInt8]
    /// Its place in the domain's console (1, 2, ...), for readers of a ring.
    public let sequence: UInt64

    public init(domain: DomainID, text: [UInt8], sequence: UInt64) {
        self.domain = domain
        self.text = text
        self.sequence = sequence
    }

    /// Xen's rendering (guest_printk's prefix), with the newline.
    public var rendered: [UInt8] { Array("(d\(domain.rawValue)) ".utf8) + text + [0x0a] }
    /// The rendered line without its newline, as text (bytes that are not
    /// UTF-8, such as Latin-1, become U+FFFD).
    public var renderedText: String { "(d\(domain.rawValue)) " + String(decoding: text, as: UTF8.self) }
}

/// The per-domain line discipline Xen applies to console_io and port 0xE9
/// (pure): bytes Xen's `is_console_printable` refuses are dropped (control
/// characters, NUL, DEL, 0x80-0x9F; Xen's ctype table counts 0xA0-0xFF as
/// printable Latin-1), a newline ends a line, and a line that reaches 255
/// characters (the 256-byte buffer less its NUL) is ended there. A partial
/// line waits for the rest, across writes and across the two paths, as the
/// one buffer does in Xen. One difference: Xen's console_io flushes the
/// buffer together with the current chunk of at most 127 bytes when they
/// would not fit, so a long console_io line may come out up to 381
/// characters long; here every line is cut at 255.
public struct XenConsoleLineBuffer: Sendable {
    public static let maximumLineLength = 255
    private var pending: [UInt8] = []

    public init() {}

    /// Takes bytes the guest wrote; returns the lines they completed.
    public mutating func feed(_ bytes: [UInt8]) -> [[UInt8]] {
        var lines: [[UInt8]] = []
        for byte in bytes {
            if byte == 0x0a {
                lines.append(pending)
                pending.removeAll(keepingCapacity: true)
                continue
            }
            guard Self.isPrintable(byte) else { continue }
            pending.append(byte)
            if pending.count == Self.maximumLineLength {
                lines.append(pending)
                pending.removeAll(keepingCapacity: true)
            }
        }
        return lines
    }

    /// What waits for its newline.
    public var partialLine: [UInt8] { pending }

    /// Xen's `is_console_printable`: `isprint` of its ctype table, or a tab.
    public static func isPrintable(_ byte: UInt8) -> Bool {
        (0x20...0x7e).contains(byte) || byte >= 0xa0 || byte == 0x09
    }
}

/// The newest lines of a domain's hypervisor console within a byte budget
/// (pure): appending past it drops the oldest lines and counts them, as
/// Xen's console ring overwrites its oldest output.
public struct HypervisorConsoleRing: Sendable {
    /// The budget: the lines' rendered bytes (prefix and newline included).
    public let capacityBytes: Int
    /// The default budget per domain.
    public static let defaultCapacityBytes = 64 << 10
    /// Lines dropped to make room, since the domain began.
    public private(set) var dropped: UInt64 = 0
    /// The rendered bytes the ring holds now.
    public private(set) var usedBytes = 0
    private var storage: [HypervisorConsoleLine] = []
    private var head = 0

    /// `capacityBytes` is raised to hold at least one longest line.
    public init(capacityBytes: Int = HypervisorConsoleRing.defaultCapacityBytes) {
        self.capacityBytes = max(capacityBytes, 512)
    }

    public mutating func append(_ line: HypervisorConsoleLine) {
        storage.append(line)
        usedBytes += line.rendered.count
        while usedBytes > capacityBytes && head < storage.count {
            usedBytes -= storage[head].rendered.count
            head += 1
            dropped += 1
        }
        // Dropped lines are removed in batches: appending stays O(1) amortised.
        if head >= 64 && head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
    }

    /// The lines held, oldest first.
    public var lines: ArraySlice<HypervisorConsoleLine> { storage[head...] }
}

/// How many hypervisor console lines a guest may put in its log (pure): a
/// token bucket, `burst` lines at once and `perSecond` after that. The log
/// is shared with pvh's own records and capped, so a guest that floods its
/// console must not push them out; Xen rate-limits guest output the same way
/// (printk_ratelimit, xen/drivers/char/console.c). The ring and `pvh dmesg`
/// keep every line regardless.
public struct LineRateLimit: Sendable {
    public let burst: Double
    public let perSecond: Double
    private var tokens: Double
    private var last: Double?
    /// Lines refused since the last one allowed.
    public private(set) var refused: UInt64 = 0

    public init(burst: Int = 1000, perSecond: Int = 100) {
        self.burst = Double(burst)
        self.perSecond = Double(perSecond)
        tokens = Double(burst)
    }

    /// Whether one more line may go to the log at `now` (seconds, any
    /// monotonic origin); when it may, how many were refused before it.
    public mutating func admit(at now: Double) -> (allowed: Bool, refusedBefore: UInt64) {
        if let last { tokens = min(burst, tokens + max(0, now - last) * perSecond) }
        last = now
        guard tokens >= 1 else {
            refused += 1
            return (false, 0)
        }
        tokens -= 1
        defer { refused = 0 }
        return (true, refused)
    }

    /// The lines refused since the last one allowed, forgotten (the end:
    /// no allowed line will come to report them).
    public mutating func takeRefused() -> UInt64 {
        defer { refused = 0 }
        return refused
    }
}

/// What `pvh dmesg` shows of one domain: the lines held and how many older
/// ones were dropped.
public struct HypervisorConsoleSnapshot: Sendable, Equatable {
    public let lines: [HypervisorConsoleLine]
    public let dropped: UInt64

    /// The text of the ring file: a `(pvh) N older lines dropped` line first
    /// when some were, then each line rendered.
    public var rendered: [UInt8] {
        var bytes: [UInt8] = dropped > 0 ? Array("(pvh) \(dropped) older lines dropped\n".utf8) : []
        for line in lines { bytes += line.rendered }
        return bytes
    }
}

/// Where a domain's hypervisor console goes besides its ring.
public struct HypervisorConsoleOutputs: Sendable {
    /// The guest's bytes exactly as written (`--hypervisor-console=stdout`:
    /// pvh's stdout before the two consoles were told apart).
    public var raw: (any ConsoleSink)?
    /// Each line rendered `(dN) ...` (`--hypervisor-console=stderr`).
    public var lines: (any ConsoleSink)?
    /// Each line as an info record (the guest's log).
    public var logger: Logger?
    /// The ring mirrored in a file (`pvh dmesg`).
    public var file: HypervisorConsoleFile?
    /// The ring's budget.
    public var capacityBytes: Int

    public init(raw: (any ConsoleSink)? = nil, lines: (any ConsoleSink)? = nil, logger: Logger? = nil,
                file: HypervisorConsoleFile? = nil, capacityBytes: Int = HypervisorConsoleRing.defaultCapacityBytes) {
        self.raw = raw
        self.lines = lines
        self.logger = logger
        self.file = file
        self.capacityBytes = capacityBytes
    }
}

/// A domain's hypervisor console: what its vCPUs write with console_io and
/// to port 0xE9, split into lines as Xen does and kept in a bounded ring.
/// The vCPU that writes only does that (and queues the bytes); the outputs
/// (terminal, log, file) are written on the console's own thread (an
/// execution context started with the domain, before any vCPU runs: a
/// Dispatch queue would make its worker threads from the vCPU that wrote,
/// and they would inherit the vCPU's seccomp filter, which forbids the
/// file's rewrite; docs/ARCHITECTURE.md, Sandbox), so a slow terminal or
/// disk never holds a vCPU. What waits for that thread is
/// bounded too: past `maximumPendingBytes` the outputs miss bytes (counted
/// in `outputDrops`), the ring does not.
public final class HypervisorConsole: Sendable {
    public let domain: DomainID
    let outputs: HypervisorConsoleOutputs
    /// Most bytes (raw and rendered lines together) waiting for the queue.
    static let maximumPendingBytes = 1 << 20

    private struct State {
        var lineBuffer = XenConsoleLineBuffer()
        var ring: HypervisorConsoleRing
        var sequence: UInt64 = 0
        var pendingLines: [HypervisorConsoleLine] = []
        var pendingRaw: [UInt8] = []
        var pendingBytes = 0
        var scheduled = false
        var outputDrops: UInt64 = 0
    }
    private let state: Lock<State>
    private let context = ExecutionContext(name: "pvh-hvconsole")
    /// The drain, set once in `init` (it refers to the console weakly: the
    /// context's thread ends when the console goes).
    private let drainWork = Lock<ExecutionContext.Work?>(nil)
    /// The log's limit; only the context uses it (the lock keeps the class Sendable).
    private let logLimit = Lock(LineRateLimit())

    public init(domain: DomainID, outputs: HypervisorConsoleOutputs) {
        self.domain = domain
        self.outputs = outputs
        state = Lock(State(ring: HypervisorConsoleRing(capacityBytes: outputs.capacityBytes)))
        let work = context.makeWork { [weak self] in self?.drain() }
        drainWork.withLock { $0 = work }
    }

    private var wantsLines: Bool { outputs.lines != nil || outputs.logger != nil || outputs.file != nil }

    /// Bytes a vCPU wrote (console_io's buffer, or one OUT to port 0xE9).
    public func write(_ bytes: [UInt8]) {
        let wantsLines = wantsLines
        let schedule = state.withLock { s -> Bool in
            if outputs.raw != nil {
                if s.pendingBytes + bytes.count <= Self.maximumPendingBytes {
                    s.pendingRaw += bytes
                    s.pendingBytes += bytes.count
                } else {
                    s.outputDrops += 1
                }
            }
            for text in s.lineBuffer.feed(bytes) {
                s.sequence += 1
                let line = HypervisorConsoleLine(domain: domain, text: text, sequence: s.sequence)
                s.ring.append(line)
                guard wantsLines else { continue }
                if s.pendingBytes + text.count <= Self.maximumPendingBytes {
                    s.pendingLines.append(line)
                    s.pendingBytes += text.count
                } else {
                    s.outputDrops += 1
                }
            }
            guard !s.scheduled, !(s.pendingLines.isEmpty && s.pendingRaw.isEmpty) else { return false }
            s.scheduled = true
            return true
        }
        if schedule { drainWork.withLock { $0 }?.schedule() }
    }

    /// Writes what waits to the outputs (on the console's context).
    private func drain() {
        let (lines, raw) = state.withLock { s in
            defer {
                s.pendingLines = []
                s.pendingRaw = []
                s.pendingBytes = 0
                s.scheduled = false
            }
            return (s.pendingLines, s.pendingRaw)
        }
        if !raw.isEmpty { outputs.raw?.emit(raw) }
        guard !lines.isEmpty else { return }
        if let sink = outputs.lines { sink.emit(lines.flatMap(\.rendered)) }
        if let logger = outputs.logger {
            let now = Double(DispatchTime.now().uptimeNanoseconds) / 1e9
            for line in lines {
                let (allowed, refused) = logLimit.withLock { $0.admit(at: now) }
                guard allowed else { continue }
                if refused > 0 {
                    logger.notice("hypervisor console: \(refused) lines not logged (more than \(Int(LineRateLimit().perSecond)) a second); pvh dmesg has the newest")
                }
                logger.info("\(line.renderedText)")
            }
        }
        if let file = outputs.file, let last = lines.last {
            file.append(lines) { self.snapshot(through: last.sequence) }
        }
    }

    /// Returns once everything written so far has reached the outputs (the
    /// domain's end: nothing a guest wrote before it stopped is lost), or
    /// after a minute if the outputs are stuck (a disk that hangs).
    public func flush() { _ = context.sync(timeout: .seconds(60)) }

    /// The ring now.
    public func snapshot() -> HypervisorConsoleSnapshot { snapshot(through: .max) }

    func snapshot(through sequence: UInt64) -> HypervisorConsoleSnapshot {
        state.withLock { s in
            HypervisorConsoleSnapshot(lines: s.ring.lines.filter { $0.sequence <= sequence }, dropped: s.ring.dropped)
        }
    }

    /// Times the outputs missed bytes because the context was too far behind.
    public var outputDrops: UInt64 { state.withLock { $0.outputDrops } }
}

/// The file `pvh dmesg NAME` reads: the domain's ring, kept in the guest's
/// runtime directory. Lines are appended as they come; when the file grows
/// past `maximumBytes` it is replaced (a temporary file renamed over it, so
/// a reader sees the old or the new one whole) by the ring's contents. So
/// it holds at most `maximumBytes` plus one batch, and what it shows is
/// what the ring held, older lines dropped and counted.
public final class HypervisorConsoleFile: Sendable {
    public let path: String
    public let maximumBytes: Int
    private struct State {
        var handle: FileHandle?
        var size = 0
        var failures = 0
    }
    private let state: Lock<State>

    /// Starts the file empty (a new domain's console), mode 0600.
    public init(path: String, maximumBytes: Int = 2 * HypervisorConsoleRing.defaultCapacityBytes) throws(UnixSocketError) {
        self.path = path
        self.maximumBytes = maximumBytes
        guard FileManager.default.createFile(atPath: path, contents: Data(), attributes: [.posixPermissions: 0o600]),
              let handle = FileHandle(forWritingAtPath: path) else {
            throw UnixSocketError(operation: "create", path: path, errno: errno)
        }
        state = Lock(State(handle: handle))
    }

    /// Appends `lines`; past the bound, rewrites the file from `ring`.
    func append(_ lines: [HypervisorConsoleLine], ring: () -> HypervisorConsoleSnapshot) {
        let bytes = Data(lines.flatMap(\.rendered))
        state.withLock { s in
            if s.size + bytes.count > maximumBytes {
                rewrite(&s, with: Data(ring().rendered))
                return
            }
            do {
                try s.handle?.write(contentsOf: bytes)
                s.size += bytes.count
            } catch {
                s.failures += 1
            }
        }
    }

    private func rewrite(_ s: inout State, with contents: Data) {
        let temporary = path + ".new"
        let fm = FileManager.default
        do {
            try? s.handle?.close()
            s.handle = nil
            guard fm.createFile(atPath: temporary, contents: contents, attributes: [.posixPermissions: 0o600]) else {
                throw UnixSocketError(operation: "create", path: temporary, errno: errno)
            }
            // rename(2) replaces the file atomically: a reader never finds it missing.
            // SAFETY: both Strings convert to NUL-terminated paths for the call.
            guard unsafe rename(temporary, path) == 0 else {
                throw UnixSocketError(operation: "rename", path: temporary, errno: errno)
            }
            s.handle = FileHandle(forWritingAtPath: path)
            _ = try s.handle?.seekToEnd()
            s.size = contents.count
        } catch {
            s.failures += 1
            s.handle = FileHandle(forWritingAtPath: path)
            s.size = Int((try? s.handle?.seekToEnd()) ?? 0)
        }
    }

    /// Writes that failed (a full file system).
    public var failures: Int { state.withLock { $0.failures } }

    /// Removes the file (a guest nobody can name again).
    public func remove() {
        state.withLock { s in
            try? s.handle?.close()
            s.handle = nil
        }
        try? FileManager.default.removeItem(atPath: path)
    }
}
