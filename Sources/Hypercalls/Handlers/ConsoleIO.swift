import XenABI

// console_io, after xen/drivers/char/console.c do_console_io. Xen's default
// XSM policy only lets a domU use it when it is the "console domain" (or in
// verbose-debug builds); we serve every guest, as its debug console.
extension HypercallDispatcher {
    func consoleIO(_ call: ConsoleIOCall, _ c: CallContext) throws(XenErrno) -> Int64 {
        switch call {
        case .write(let count, let buffer):
            // Copy in page-sized chunks and hand each to the console as it
            // arrives; a fault stops the write with -EFAULT after the chunks
            // already written, as Xen does. Success is 0, not a count.
            // Nothing is dropped: Xen splits a long write with continuations
            // (xen/drivers/char/console.c guest_console_write); here the whole
            // count is copied in one call. It is bounded (count is 32 bits, and
            // the first unmapped page ends it), and only the calling vCPU waits.
            var remaining = Int(count)
            var address = buffer
            while remaining > 0 {
                let inPage = 4096 - Int(address.rawValue & 0xfff)
                let n = min(remaining, inPage)
                let bytes = try c.guest.readVirtual(at: address, count: n)
                console.write(bytes, from: c.vcpu)
                remaining -= n
                address = address.advanced(by: UInt64(n))
            }
            return 0
        case .read(let count, let buffer):
            // The result is a count, so counts that cannot be one are -E2BIG.
            guard count <= UInt32(Int32.max) else { throw .e2big }
            let bytes = console.read(max: min(Int(count), Self.maximumConsoleRead)).prefix(Int(count))
            if !bytes.isEmpty { try c.guest.writeVirtual(Array(bytes), at: buffer) }
            return Int64(bytes.count)
        }
    }
}
