import BlockBackend
import BlockFrontend
import Foundation
import HostIO
import Synchronization
import Testing
import XenABI

/// A backing whose bytes `bad` fail with EIO, as a dying disk's unreadable
/// sectors do (or a device-mapper `error` target over part of a device:
/// this host's kernel has no device-mapper, so the failure is injected at
/// the engine, HostIO's seam, instead). Everything else goes to the file.
final class BadRangeEngine: BlockIOEngine, Sendable {
    private let inner: SynchronousEngine
    private let bad: Range<UInt64>
    private let onComplete: @Sendable ([BlockIOCompletion]) -> Void

    init(fd: Int32, bad: Range<UInt64>, onComplete: @escaping @Sendable ([BlockIOCompletion]) -> Void) {
        inner = SynchronousEngine(fileDescriptor: fd, onComplete: onComplete)
        self.bad = bad
        self.onComplete = onComplete
    }

    private func fails(_ op: BlockIOOperation) -> Bool {
        switch op {
        case .read(let offset, _), .write(let offset, _):
            return (offset..<(offset + UInt64(op.byteCount))).overlaps(bad)
        case .flush, .discard:
            return false
        }
    }

    func submit(_ requests: [BlockIORequest]) {
        let failing = requests.filter { fails($0.operation) }
        if !failing.isEmpty {
            onComplete(failing.map { BlockIOCompletion(tag: $0.tag, result: .failure(.system(errno: EIO))) })
        }
        let passing = requests.filter { !fails($0.operation) }
        if !passing.isEmpty { inner.submit(passing) }
    }

    func shutdown() { inner.shutdown() }
}

@Suite("block backend on a failing disk")
struct FailingDiskTests {
    @Test("EIO in one range of the disk: reads and writes touching it are BLKIF_RSP_ERROR, counted as host errors; the rest of the disk reads, writes and flushes; the device stays connected, nothing leaks")
    func deadRange() throws {
        let guest = try Guest()
        // Sectors 64..<128 are dead.
        let disk = try Disk<BlkifX86_64>(guest: guest, engine: { file in
            let fd = file.fd
            return { _, done in BadRangeEngine(fd: fd, bad: 64 * 512..<128 * 512, onComplete: done) }
        })
        let io = IOTests()
        let good = try io.pageWrite(guest, id: 1, sector: 0, seed: 1)
        let deadWrite = try io.pageWrite(guest, id: 2, sector: 64, seed: 2)
        // Starts one sector before the dead range and ends inside it.
        let straddling = try io.pageWrite(guest, id: 3, sector: 60, seed: 3)
        let (deadRead, _) = try io.pageRead(guest, id: 4, sector: 120)
        let responses = try disk.roundTrip([good, deadWrite, straddling, deadRead, Blkfront.flush(id: 5)])
        let status = Dictionary(uniqueKeysWithValues: responses.map { ($0.id, $0.status) })
        #expect(status == [1: .okay, 2: .error, 3: .error, 4: .error, 5: .okay], "\(responses)")
        #expect(disk.backend.metrics.hostErrors.load(ordering: .relaxed) == 3)
        #expect(try disk.file.read(at: 0, count: 4096) == Pattern.bytes(1))
        #expect(try disk.file.read(at: 64 * 512, count: 4096).allSatisfy { $0 == 0 }, "nothing written to the dead range")

        // The device goes on: past the dead range, a write and its read-back.
        let after = try io.pageWrite(guest, id: 6, sector: 128, seed: 6)
        #expect(try disk.roundTrip([after]).map(\.status) == [.okay])
        let (readBack, frame) = try io.pageRead(guest, id: 7, sector: 128)
        #expect(try disk.roundTrip([readBack]).map(\.status) == [.okay])
        #expect(try guest.page(frame) == Pattern.bytes(6))
        #expect(disk.backend.xenbus.backendState == .connected)
        #expect(disk.backend.runtimeDevice?.fault == nil, "a host error is the request's, never the device's fault")
        #expect(disk.backend.metrics.faults.load(ordering: .relaxed) == 0)
        #expect(disk.backend.metrics.requestsInFlight.load(ordering: .relaxed) == 0)
        #expect(guest.grants.holdCount == disk.front.refs.count, "every segment's grant released, failed ones too")
    }
}
