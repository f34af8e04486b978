import Locking
import Toolstack
import VMM

/// A daemon's guest process's PV console output: its stdout, the daemon's
/// end of a socketpair (Supervisor.start), written through a
/// `BufferedConsoleSink`, so a relay that stops reading holds neither the
/// console's device thread nor the guest (docs/ARCHITECTURE.md: Host
/// faults). While the daemon is away (it was stopped and the guests left
/// running for the next one) that end is closed and a write fails (EPIPE:
/// SIGPIPE is ignored); the output is then held here, the newest
/// `capacity` bytes (older ones dropped and counted, as the daemon's own
/// `ConsoleBuffer` does), and written first to the console a new daemon
/// hands over (GuestReattach.swift), so `pvh console` after the restart
/// shows what the guest wrote meanwhile. Bytes the old socketpair had
/// taken but the daemon had not read when it went are lost with it.
final class HeldConsoleSink: ConsoleSink {
    /// The most bytes held while no daemon runs: 64 KiB, the daemon's
    /// per-guest buffer (`ConsoleBuffer.defaultCapacity`), so a new daemon's
    /// replay can keep all of it.
    static let capacity = ConsoleBuffer.defaultCapacity

    let output = BufferedConsoleSink(fd: 1)
    /// Non-nil while output is held (the daemon's end went away).
    private let held = Lock<ConsoleBuffer?>(nil)

    func emit(_ bytes: [UInt8]) {
        held.withLock { held in
            // In order: once holding, everything is held until a new
            // console is handed over.
            if held == nil, output.isBroken {
                // What the failed write and those after it did not get out
                // comes first.
                var buffer = ConsoleBuffer(capacity: Self.capacity)
                buffer.append(output.takeUnwritten())
                held = buffer
            }
            if held != nil {
                held?.append(bytes)
            } else {
                output.emit(bytes)
            }
        }
    }

    /// A new daemon's console is on stdout now: what was held goes to it
    /// first, before any later output. Returns how many bytes were held
    /// and how many dropped (nil: nothing was held).
    func consoleReplaced() -> (written: Int, dropped: UInt64)? {
        held.withLock { held in
            var buffer = held
            if buffer == nil, output.isBroken {
                // The daemon went, and no output came after the write that
                // found it gone: that write's bytes are all there is.
                var b = ConsoleBuffer(capacity: Self.capacity)
                b.append(output.takeUnwritten())
                buffer = b
            }
            held = nil
            output.resume()
            guard let buffer, buffer.count > 0 || buffer.dropped > 0 else { return nil }
            output.emit(buffer.contents)
            return (buffer.count, buffer.dropped)
        }
    }
}
