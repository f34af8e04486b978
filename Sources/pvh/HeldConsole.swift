import Synchronization
import Toolstack
import VMM

/// A daemon's guest process's PV console output: its stdout, the daemon's
/// end of a socketpair (Supervisor.start). While the daemon is away (it was
/// stopped and the guests left running for the next one) that end is
/// closed and a write fails (EPIPE: SIGPIPE is ignored); the output is then
/// held here, the newest `capacity` bytes (older ones dropped and counted,
/// as the daemon's own `ConsoleBuffer` does), and written first to the
/// console a new daemon hands over (GuestReattach.swift), so `pvh console`
/// after the restart shows what the guest wrote meanwhile. Bytes still in
/// the old socketpair's buffer when the daemon went are lost with it.
final class HeldConsoleSink: ConsoleSink {
    /// The most bytes held while no daemon runs: 64 KiB, the daemon's
    /// per-guest buffer (`ConsoleBuffer.defaultCapacity`), so a new daemon's
    /// replay can keep all of it.
    static let capacity = ConsoleBuffer.defaultCapacity

    private let output = FileDescriptorConsoleSink(fd: 1)
    /// Non-nil while output is held (the last write failed).
    private let held = Mutex<ConsoleBuffer?>(nil)

    func emit(_ bytes: [UInt8]) {
        held.withLock { held in
            // In order: once holding, everything is held until a new
            // console is handed over.
            if held != nil {
                held?.append(bytes)
            } else if !output.write(bytes) {
                var buffer = ConsoleBuffer(capacity: Self.capacity)
                buffer.append(bytes)
                held = buffer
            }
        }
    }

    /// A new daemon's console is on stdout now: what was held goes to it
    /// first, before any later output. Returns how many bytes were held
    /// and how many dropped (nil: nothing was held). If the new console
    /// refuses them too, they stay held for the next one.
    func consoleReplaced() -> (written: Int, dropped: UInt64)? {
        held.withLock { held in
            guard let buffer = held else { return nil }
            guard output.write(buffer.contents) else { return nil }
            held = nil
            return (buffer.count, buffer.dropped)
        }
    }
}
