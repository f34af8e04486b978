#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import VMM

/// The guest console's input side on the host: stdin, in raw mode when it is a
/// terminal (so keys reach the guest as typed, Ctrl-C included), with Ctrl-]
/// as the escape: it stops a foreground guest (`pvh run`), and detaches
/// `pvh console` as it does `xl console`. The original terminal mode is
/// restored when pvh exits.
final class HostTerminal: @unchecked Sendable {
    // SAFETY (Sendable): `saved` is written once before the reader starts and
    // read once at restore; the reader thread only reads stdin.
    static let escape: UInt8 = 0x1d  // Ctrl-]
    private var saved: termios?
    /// Whether a reader thread is reading stdin now.
    private let reading = Atomic<Bool>(false)

    /// Starts forwarding stdin to the current domain's console. Returns immediately.
    func attach(to current: CurrentDomain) {
        start(notice: "pvh: console attached (Ctrl-] to stop the guest)", escapeAlways: false,
              input: { current.input($0) }, escape: { current.stop() })
    }

    /// Forwards stdin again once a new descriptor replaced it (a guest
    /// process handed a new daemon's console: GuestReattach.swift), unless
    /// the last reader still reads.
    func attachAgain(to current: CurrentDomain) {
        guard !reading.load(ordering: .acquiring) else { return }
        attach(to: current)
    }

    /// Raw mode on stdin when it is a terminal (then `notice` on stderr),
    /// and a reader thread that passes what is typed to `input` until end
    /// of file or Ctrl-], which runs `escape` (bytes before it are passed
    /// on first). Ctrl-] counts on a terminal only, unless `escapeAlways`
    /// (`pvh console`, whose stdin may be a pipe). Returns immediately.
    func start(notice: String, escapeAlways: Bool, input: @escaping @Sendable ([UInt8]) -> Void,
               escape: @escaping @Sendable () -> Void) {
        if isatty(0) == 1 {
            var t = termios()
            if tcgetattr(0, &t) == 0 {
                saved = t
                var raw = t
                cfmakeraw(&raw)
                // Keep output post-processing so the host's own lines stay readable.
                raw.c_oflag |= tcflag_t(OPOST)
                _ = tcsetattr(0, TCSANOW, &raw)
                FileDescriptorConsoleSink(fd: 2).emit(Array("\(notice)\r\n".utf8))
            }
        }
        let watchesEscape = escapeAlways || saved != nil
        reading.store(true, ordering: .releasing)
        let thread = Thread { [self] in
            defer { reading.store(false, ordering: .releasing) }
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }  // EOF: the guest keeps running without input
                var bytes = Array(buffer[0..<n])
                if watchesEscape, let i = bytes.firstIndex(of: Self.escape) {
                    bytes = Array(bytes[..<i])
                    if !bytes.isEmpty { input(bytes) }
                    escape()
                    return
                }
                input(bytes)
            }
        }
        thread.name = "pvh-stdin"
        thread.start()
    }

    /// Puts the terminal back as it was.
    func restore() {
        guard var t = saved else { return }
        _ = tcsetattr(0, TCSANOW, &t)
        saved = nil
    }
}
