import Foundation
import PVHLogging
import Testing
import XenABI
@testable import VMM

@Suite("Hypervisor console: Xen's line discipline, the bounded ring, the outputs")
struct HypervisorConsoleTests {
    static let d1 = DomainID(rawValue: 1)

    func text(_ lines: [[UInt8]]) -> [String] { lines.map { String(decoding: $0, as: UTF8.self) } }

    @Test("a partial line waits for its newline across writes; one write may end several lines")
    func partialLines() {
        var buffer = XenConsoleLineBuffer()
        #expect(buffer.feed(Array("PVHTEST ver".utf8)).isEmpty)
        #expect(buffer.feed(Array("sion PASS\nsecond\nthi".utf8)) == [Array("PVHTEST version PASS".utf8), Array("second".utf8)])
        #expect(buffer.partialLine == Array("thi".utf8))
        #expect(text(buffer.feed(Array("rd\n".utf8))) == ["third"])
        #expect(text(buffer.feed([0x0a])) == [""])  // an empty line is a line, as Xen prints "(d1) "
    }

    @Test("NULs, CR and other controls, DEL and 0x80-0x9F are dropped; tab and Latin-1 0xA0-0xFF stay (is_console_printable)")
    func printable() {
        var buffer = XenConsoleLineBuffer()
        let lines = buffer.feed([0x61, 0x00, 0x62, 0x0d, 0x09, 0x7f, 0x1b, 0x80, 0x9f, 0xa0, 0xe9, 0x63, 0x0d, 0x0a])
        #expect(lines == [[0x61, 0x62, 0x09, 0xa0, 0xe9, 0x63]])
        // A write of NULs alone changes nothing.
        #expect(buffer.feed([0, 0, 0]).isEmpty && buffer.partialLine.isEmpty)
    }

    @Test("a line is cut at 255 characters, the rest goes on in the next")
    func longLine() {
        var buffer = XenConsoleLineBuffer()
        let lines = buffer.feed(Array(repeating: UInt8(ascii: "x"), count: 600) + [0x0a])
        #expect(lines.map(\.count) == [255, 255, 90])
    }

    @Test("lines render with Xen's (dN) prefix")
    func rendering() {
        let line = HypervisorConsoleLine(domain: DomainID(rawValue: 7), text: Array("hello".utf8), sequence: 1)
        #expect(line.rendered == Array("(d7) hello\n".utf8))
        #expect(line.renderedText == "(d7) hello")
    }

    @Test("the ring keeps the newest lines within its budget and counts the ones it dropped")
    func ringBound() {
        var ring = HypervisorConsoleRing(capacityBytes: 1000)
        for i in 1...500 {
            ring.append(HypervisorConsoleLine(domain: Self.d1, text: Array(String(format: "line %04d", i).utf8), sequence: UInt64(i)))
        }
        // Each line renders as "(d1) line 0001\n": 15 bytes, so 66 fit in 1000.
        #expect(ring.lines.count == 66)
        #expect(ring.usedBytes <= 1000 && ring.usedBytes == 66 * 15)
        #expect(ring.dropped == 434)
        #expect(ring.lines.first?.sequence == 435 && ring.lines.last?.sequence == 500)
        let snapshot = HypervisorConsoleSnapshot(lines: Array(ring.lines), dropped: ring.dropped)
        #expect(String(decoding: snapshot.rendered, as: UTF8.self).hasPrefix("(pvh) 434 older lines dropped\n(d1) line 0435\n"))
    }

    @Test("a budget smaller than a line is raised: the newest line is always kept")
    func tinyBudget() {
        var ring = HypervisorConsoleRing(capacityBytes: 1)
        ring.append(HypervisorConsoleLine(domain: Self.d1, text: Array(repeating: 0x41, count: 255), sequence: 1))
        ring.append(HypervisorConsoleLine(domain: Self.d1, text: Array(repeating: 0x42, count: 255), sequence: 2))
        ring.append(HypervisorConsoleLine(domain: Self.d1, text: Array(repeating: 0x43, count: 255), sequence: 3))
        // 512 bytes at least: one longest line (261 rendered) fits, two do not.
        #expect(ring.lines.map(\.sequence) == [3] && ring.dropped == 2)
        #expect(ring.capacityBytes == 512)
    }

    @Test("console_io and port 0xE9 share one line buffer; lines reach the ring, the stderr echo, the log and the file once each")
    func outputs() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-hvc-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let echo = CapturingConsoleSink()
        let log = MemoryLogDestination()
        let logger = GuestLog.logger(label: "pvh[1/t]", file: log, standardError: MemoryLogDestination())
        let file = try HypervisorConsoleFile(path: dir + "/dmesg")
        let console = HypervisorConsole(domain: Self.d1, outputs: HypervisorConsoleOutputs(lines: echo, logger: logger, file: file))
        console.write(Array("PVHTEST BO".utf8))       // console_io
        for byte in "OT\n".utf8 { console.write([byte]) }  // OUT 0xE9, one byte each
        console.write(Array("a\0b\nrest".utf8))
        console.flush()
        #expect(console.snapshot().lines.map(\.renderedText) == ["(d1) PVHTEST BOOT", "(d1) ab"])
        #expect(echo.text == "(d1) PVHTEST BOOT\n(d1) ab\n")
        #expect(log.lines.map { $0.split(separator: " ", maxSplits: 3).last.map(String.init) } == ["(d1) PVHTEST BOOT\n", "(d1) ab\n"])
        #expect(try String(contentsOfFile: dir + "/dmesg", encoding: .utf8) == "(d1) PVHTEST BOOT\n(d1) ab\n")
        #expect(console.outputDrops == 0)
    }

    @Test("backend lines: connected and link-up reports go to the log only, the rest (faults, link down) also to stderr")
    func backendLines() {
        let file = MemoryLogDestination(), stderr = MemoryLogDestination()
        let logger = GuestLog.logger(label: "pvh[1/t]", file: file, standardError: stderr)
        logger.backendLine("vbd-51712: connected: 1 queue(s) of 1 page(s), protocol x86_64-abi")
        logger.backendLine("vif-0: link up: user (passt pid 7)")
        logger.backendLine("vif-0: link down: user (passt not running)")
        logger.backendLine("vbd-51712: queue 0: in-flight I/O did not finish; abandoned")
        #expect(stderr.lines == ["pvh: vif-0: link down: user (passt not running)\n",
                                 "pvh: vbd-51712: queue 0: in-flight I/O did not finish; abandoned\n"])
        #expect(file.lines.count == 4)
    }

    @Test("the log's rate limit: a burst, then so many a second; the refused lines are counted for the next allowed one")
    func rateLimit() {
        var limit = LineRateLimit(burst: 3, perSecond: 2)
        let burst = (0..<5).map { _ in limit.admit(at: 10).allowed }
        #expect(burst == [true, true, true, false, false])
        // Half a second later: one more token.
        #expect(limit.admit(at: 10.5) == (allowed: true, refusedBefore: 2))
        #expect(limit.admit(at: 10.5).allowed == false)
        // A long pause refills to the burst, not beyond.
        #expect(limit.admit(at: 100).refusedBefore == 1)
        #expect((0..<3).map { _ in limit.admit(at: 100).allowed } == [true, true, false])
    }

    @Test("raw output gets the bytes as written, partial lines and all (the integration tests' stdout)")
    func raw() {
        let raw = CapturingConsoleSink()
        let console = HypervisorConsole(domain: Self.d1, outputs: HypervisorConsoleOutputs(raw: raw))
        console.write(Array("x\r\ny".utf8))
        console.flush()
        #expect(raw.text == "x\r\ny")
        #expect(console.snapshot().lines.map(\.renderedText) == ["(d1) x"])
    }

    @Test("the dmesg file stays bounded: past its size it is rewritten from the ring, drops counted, no line twice")
    func fileBound() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-hvc-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/dmesg"
        let file = try HypervisorConsoleFile(path: path, maximumBytes: 2000)
        let console = HypervisorConsole(domain: Self.d1, outputs: HypervisorConsoleOutputs(file: file, capacityBytes: 1000))
        for i in 1...1000 { console.write(Array(String(format: "line %04d\n", i).utf8)) }
        console.flush()
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.utf8.count <= 2000 + 15)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.last == "(d1) line 1000")
        let numbers = lines.compactMap { $0.hasPrefix("(d1) line ") ? Int($0.dropFirst(10)) : nil }
        #expect(numbers == Array((numbers.first ?? 0)...1000), "every line once, in order")
        #expect(lines.first?.hasPrefix("(pvh) ") == true && lines.first?.hasSuffix(" older lines dropped") == true, "\(lines.prefix(2))")
        #expect(file.failures == 0)
        #expect(FileManager.default.fileExists(atPath: path + ".new") == false)
    }
}
