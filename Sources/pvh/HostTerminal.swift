#if canImport(Glibc)
import Glibc
#endif
import Foundation
import VMM

/// The guest console's input side on the host: stdin, in raw mode when it is a
/// terminal (so keys reach the guest as typed, Ctrl-C included), with Ctrl-]
/// as the escape that stops the guest, as `xl console` does. The original
/// terminal mode is restored when pvh exits.
final class HostTerminal: @unchecked Sendable {
    // SAFETY (Sendable): `saved` is written once before the reader starts and
    // read once at restore; the reader thread only reads stdin.
    static let escape: UInt8 = 0x1d  // Ctrl-]
    private var saved: termios?

    /// Starts forwarding stdin to the current domain's console. Returns immediately.
    func attach(to current: CurrentDomain) {
        if isatty(0) == 1 {
            var t = termios()
            if tcgetattr(0, &t) == 0 {
                saved = t
                var raw = t
                cfmakeraw(&raw)
                // Keep output post-processing so the host's own lines stay readable.
                raw.c_oflag |= tcflag_t(OPOST)
                _ = tcsetattr(0, TCSANOW, &raw)
                FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: console attached (Ctrl-] to stop the guest)\r\n".utf8))
            }
        }
        let interactive = saved != nil
        let thread = Thread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }  // EOF: the guest keeps running without input
                var bytes = Array(buffer[0..<n])
                if interactive, let i = bytes.firstIndex(of: Self.escape) {
                    bytes = Array(bytes[..<i])
                    if !bytes.isEmpty { current.input(bytes) }
                    current.stop()
                    return
                }
                current.input(bytes)
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
