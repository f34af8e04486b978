import ConsoleBackend
import DeviceRuntime
import EventChannels
import GuestMemory
import Locking
import Testing
import TestSupport
import XenABI
import XenRing

/// The console backend over mock memory: a fake hvc_xen frontend on one side,
/// the host's output closure on the other, the real event-channel table between.
/// The backend pumps on its own context: each check first waits for the
/// pumps it caused (`sync`), never sleeps.
@Suite("PV console backend")
struct ConsoleBackendTests {

    final class Box<T>: @unchecked Sendable {
        private let lock = Lock(())
        private var value: T
        init(_ v: T) { value = v }
        func withLock<R>(_ body: (inout T) -> R) -> R { lock.withLock { _ in body(&value) } }
    }

    final class Setup {
        let memory = MockGuestMemory(size: 1 << 20)
        let upcalls = CountingUpcalls()
        let table: EventChannelTable
        let out: Box<[UInt8]>
        let reports: Box<[ConsoleBackend.Event]>
        let backend: ConsoleBackend
        let frontend: FakeByteRingFrontend
        let runtime = DeviceRuntime()
        static let domain = DomainID(rawValue: 1)

        init() throws {
            table = EventChannelTable(configuration: .init(domainID: Self.domain, vcpuCount: 1), memory: memory,
                                      locator: FixedSharedInfo(), notifier: upcalls)
            let out = Box<[UInt8]>([]), reports = Box<[ConsoleBackend.Event]>([])
            self.out = out
            self.reports = reports
            backend = try ConsoleBackend(memory: memory, frame: GuestFrameNumber(0x20), events: table, domain: Self.domain,
                                         runtime: runtime, output: { b in out.withLock { $0 += b } },
                                         report: { e in reports.withLock { $0.append(e) } })
            frontend = try FakeByteRingFrontend(memory: memory, base: GuestPhysicalAddress(0x20000))
        }
        deinit { runtime.stopAll() }
        var output: String { String(decoding: out.withLock { $0 }, as: UTF8.self) }

        /// The guest's EVTCHNOP_send on the console port, then the wait for
        /// the pump it scheduled on the console's context.
        func send() throws {
            try table.send(backend.guestPort)
            try #require(backend.sync(timeout: .seconds(30)), "the console's pump did not finish")
        }
    }

    @Test("the guest's port is bound to the backend; guest output arrives in order on each send")
    func output() throws {
        let s = try Setup()
        let status = try s.table.status(domain: Setup.domain, port: s.backend.guestPort)
        #expect("\(status)".contains("interdomain"), "\(status)")
        _ = try s.frontend.write(Array("hello, ".utf8))
        try s.send()
        _ = try s.frontend.write(Array("world\n".utf8))
        try s.send()
        #expect(s.output == "hello, world\n")
    }

    @Test("more output than the ring holds: nothing lost across many rounds")
    func bulkOutput() throws {
        let s = try Setup()
        let text = (0..<500).map { "line \($0) of the guest's console output\n" }.joined()
        var rest = Array(text.utf8)
        while !rest.isEmpty {
            let n = try s.frontend.write(rest)
            rest.removeFirst(n)
            try s.send()
        }
        #expect(s.output == text)
        #expect(s.backend.metrics.outputWritten.load(ordering: .relaxed) == UInt64(text.utf8.count))
    }

    @Test("host input reaches the guest ring, the guest gets an upcall, the rest waits")
    func input() throws {
        let s = try Setup()
        // The guest must be able to see events: shared_info is at 0x10000 (Locator), vCPU 0's legacy slot.
        let big = [UInt8](repeating: UInt8(ascii: "x"), count: 3000)  // more than the 1024-byte `in` ring
        s.backend.input(Array("ping\n".utf8) + big)
        try #require(s.backend.sync(timeout: .seconds(30)))
        var got = try s.frontend.read()
        #expect(got.count == 1024)
        #expect(Array(got.prefix(5)) == Array("ping\n".utf8))
        #expect(s.table.isPending(s.backend.guestPort))
        // The guest consumed; the next event from it lets the backend top the ring up.
        while got.count < 3005 {
            try s.send()
            let more = try s.frontend.read()
            if more.isEmpty { break }
            got += more
        }
        #expect(got.count == 3005)
        #expect(s.backend.metrics.inputQueued.load(ordering: .relaxed) == 3005)
    }

    @Test("a hostile guest (impossible ring indices) shuts the console down, not the VMM")
    func hostile() throws {
        let s = try Setup()
        // out_prod far beyond out_cons + ring size (console.h: out_prod at 0x60c... via the layout).
        try s.frontend.store(RingIndex(0x7fff_0000), ByteRingLayout.console.fromGuest.producerOffset)
        try s.send()
        #expect(s.reports.withLock { $0.count } == 1)
        try s.send()  // dead: no further reports, no crash
        #expect(s.reports.withLock { $0.count } == 1)
        #expect(s.output.isEmpty)
    }
}
