// pvh-bench: pvh beside its reference, in one run, on this host.
//
//   swift build -c release && .build/release/pvh-bench [iterations]
//   .build/release/pvh-bench block [--seconds N] [--file PATH] [--rounds N] [--case NAME]... [--depth N]
//   .build/release/pvh-bench net [--seconds N] [--rounds N] [--case NAME]...
//   .build/release/pvh-bench toolstack [--rounds N] [--guests N] [--memory MIB] [--timeout SECONDS] [--pvh PATH] [--kernel PATH]
//
// `block` runs only the block benchmark (BlockBench.swift): the block
// backend driven by an in-process frontend beside fio on the same file.
// `net` runs only the net benchmark (NetBench.swift, root only): the net
// backend driven by an in-process netif frontend into a TAP beside a plain
// loop writing the same frames into a second TAP (cases tx-64, tx-bulk).
// `toolstack` runs only the toolstack benchmark (ToolstackBench.swift): the
// pvh daemon from `pvh create` to a guest's first instruction, a burst of
// guests, and resident memory, beside `pvh run` of the same guest.
//
// Hypercall path: the reference is the physical limit, a bare KVM exit
// (KVM_RUN → port-I/O exit → RAX via sync regs → KVM_RUN, no VMM logic).
// pvh is measured from inside the test guest (TSC, Xen time leaf), for a bare
// exit through the whole VMM, and for xen_version through each transport.
// Kernel loading: the reference is the host's own decompressor CLI on the
// same bzImage payload; pvh parses, decompresses and lays out the whole guest.
// Machines are noisy: read the ratios.
import Foundation
import GuestMemory
import Hypercalls
import KVM
import PVHBoot
import VMM
import XenStore

if CommandLine.arguments.count > 1, CommandLine.arguments[1] == "block" {
    exit(BlockBench.main(Array(CommandLine.arguments.dropFirst(2))))
}
if CommandLine.arguments.count > 1, CommandLine.arguments[1] == "net" {
    exit(NetBench.main(Array(CommandLine.arguments.dropFirst(2))))
}
if CommandLine.arguments.count > 1, CommandLine.arguments[1] == "toolstack" {
    exit(ToolstackBench.main(Array(CommandLine.arguments.dropFirst(2))))
}

let iterations = CommandLine.arguments.dropFirst().first.flatMap { Int($0) } ?? 20000
let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let kit = ProcessInfo.processInfo.environment["PVH_GUEST_KIT"] ?? repo.appendingPathComponent("guest-kit/out").path

func row(_ name: String, _ pvh: Double, _ reference: Double, unit: String, refName: String) {
    let ratio = reference > 0 ? pvh / reference : .nan
    print(String(format: "%-34@ pvh %10.2f %@   %-26@ %10.2f %@   ratio %.2f", name as NSString, pvh, unit as NSString,
                 refName as NSString, reference, unit as NSString, ratio))
}

// MARK: hypercall round trips

func guestBench(transport: String, scenario: String, options: String = "") throws -> Double? {
    let elf = repo.appendingPathComponent("testguest/build/testguest.elf").path
    let console = CapturingConsoleSink()
    let domain = try Domain(
        configuration: GuestConfiguration(
            kernelPath: elf, commandLine: "pvh.transport=\(transport) pvh.scenarios=\(scenario) pvh.bench=\(iterations) \(options)",
            memoryMiB: 32),
        console: console)
    guard domain.run() == .shutdown(.poweroff) else { return nil }
    // PVHBENCH <name> iterations=N cycles=C tsc_khz=K
    for line in console.lines where line.hasPrefix("PVHBENCH ") {
        var fields: [String: Double] = [:]
        for part in line.split(separator: " ") {
            let kv = part.split(separator: "=")
            if kv.count == 2 { fields[String(kv[0])] = Double(kv[1]) }
        }
        if let n = fields["iterations"], let c = fields["cycles"], let k = fields["tsc_khz"], n > 0, k > 0 {
            return c / n / k * 1000  // µs per round trip
        }
    }
    return nil
}

/// Median of `rounds` measurements, pvh and reference interleaved so that
/// both see the same machine (other load comes and goes).
func interleaved(_ rounds: Int, _ pvh: () throws -> Double?, _ reference: () throws -> Double) rethrows -> (Double, Double)? {
    var a: [Double] = [], b: [Double] = []
    for _ in 0..<rounds {
        guard let x = try pvh() else { return nil }
        a.append(x)
        b.append(try reference())
    }
    return (a.sorted()[rounds / 2], b.sorted()[rounds / 2])
}

do {
    let system = try KVMSystem()
    print("pvh-bench: \(iterations) iterations; KVM backend: \(system.backend); medians of 5 interleaved rounds")
    let micros = { (d: Duration, n: Int) in (Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12) / Double(n) }
    let bare = { micros(try KVMMicrobenchmark.portIORoundTrips(iterations, system: system), iterations) }
    // The same guest bytes on a bare 64-bit VM: what KVM alone costs for
    // the instructions the pvh figure executes (see LongModeLoop).
    func sameCode(_ guest: KVMMicrobenchmark.LongModeLoop) throws -> Double {
        micros(try KVMMicrobenchmark.longModeRoundTrips(iterations, guest: guest, system: system), iterations)
    }
    let stub = Array(HypercallPage.make()[17 * HypercallPage.stubSize..<18 * HypercallPage.stubSize])  // __HYPERVISOR_xen_version
    let exitLoop = KVMMicrobenchmark.LongModeLoop(loop: KVMMicrobenchmark.LongModeLoop.eightOutLoop)
    let callLoop = KVMMicrobenchmark.LongModeLoop(loop: KVMMicrobenchmark.LongModeLoop.callLoop, stub: stub)
    let exitRun = { try guestBench(transport: "page", scenario: "bench_exit") }
    let pageRun = { try guestBench(transport: "page", scenario: "bench_hypercall") }
    if let (p, r) = try interleaved(5, exitRun, bare) {
        row("exit round trip (unhandled port)", p, r, unit: "µs", refName: "bare KVM exit (out; jmp)")
    }
    if let (p, r) = try interleaved(5, exitRun, { try sameCode(exitLoop) }) {
        row("  same guest bytes on bare KVM", p, r, unit: "µs", refName: "bare 64-bit, 8 outs/loop")
    }
    if let (p, r) = try interleaved(5, pageRun, bare) {
        row("xen_version via hypercall page", p, r, unit: "µs", refName: "bare KVM exit (out; jmp)")
    }
    if let (p, r) = try interleaved(5, pageRun, { try sameCode(callLoop) }) {
        row("  same guest bytes on bare KVM", p, r, unit: "µs", refName: "bare 64-bit call+stub+ret")
    }
    // vmcall sites: a hardware breakpoint on `vmcall; ret`, skipped by 3.
    let vmcallLoop = KVMMicrobenchmark.LongModeLoop(
        loop: KVMMicrobenchmark.LongModeLoop.callLoop, stub: [0x0F, 0x01, 0xC1, 0xC3], breakpointSkip: 3)
    let vmcallRun = { try guestBench(transport: "vmcall", scenario: "bench_hypercall") }
    if let (p, r) = try interleaved(5, vmcallRun, bare) {
        row("xen_version via vmcall breakpoint", p, r, unit: "µs", refName: "bare KVM exit (out; jmp)")
    }
    if let (p, r) = try interleaved(5, vmcallRun, { try sameCode(vmcallLoop) }) {
        row("  same guest bytes on bare KVM", p, r, unit: "µs", refName: "bare 64-bit, debug exit")
    }
    // Event send -> upcall handled in the guest (loopback channel; the
    // guest halts until the upcall), beside the hypercall the send itself is.
    if let (p, r) = try interleaved(3, { try guestBench(transport: "page", scenario: "bench_evtchn") }, { try pageRun() ?? .nan }) {
        row("event send -> upcall handled", p, r, unit: "µs", refName: "one hypercall (page)")
    }
    // The same with a bare HVM_PARAM_CALLBACK_IRQ vector and the LAPIC left
    // disabled: the vector goes in as ExtINT plus an interrupt-window exit
    // (CallbackVectorDelivery), beside the per-vCPU LAPIC vector above.
    let lapicVector = { try guestBench(transport: "page", scenario: "bench_evtchn") }
    let bareVector = { try guestBench(transport: "page", scenario: "bench_evtchn", options: "pvh.upcall=callback pvh.lapic=off") }
    if let (p, r) = try interleaved(3, bareVector, { try lapicVector() ?? .nan }) {
        row("  with a bare callback vector", p, r, unit: "µs", refName: "per-vCPU LAPIC vector")
    }
} catch {
    print("pvh-bench: hypercall benchmarks skipped: \(error)")
}

// MARK: start-up and memory

/// Resident set size of this process, in bytes (/proc/self/statm, field 2).
func residentBytes() -> Double {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    return fields.count > 1 ? (Double(fields[1]) ?? 0) * 4096 : 0
}

func millis(_ d: Duration) -> Double { Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15 }

/// Domain creation (read + load the test guest, VM, vCPUs, CPUID, event
/// channels, console) until the guest's first instruction: the test guest's
/// first instruction is an OUT (POST code), so it is the domain's first exit.
final class Discard: ConsoleSink, @unchecked Sendable {
    func emit(_ bytes: [UInt8]) {}
}

do {
    let system = try KVMSystem()
    let elf = repo.appendingPathComponent("testguest/build/testguest.elf").path
    var pvhTimes: [Double] = [], refTimes: [Double] = [], buildTimes: [Double] = []
    for _ in 0..<11 {
        refTimes.append(millis(try KVMMicrobenchmark.createAndFirstExit(memoryMiB: 64, system: system)))
        let start = ContinuousClock.now
        let domain = try Domain(configuration: GuestConfiguration(kernelPath: elf, commandLine: "pvh.scenarios=version", memoryMiB: 64),
                                console: Discard(), system: system)
        buildTimes.append(millis(ContinuousClock.now - start))
        _ = domain.run()
        if let first = domain.metrics.firstExit.withLock({ $0 }) { pvhTimes.append(millis(first - start)) }
    }
    let median = { (a: [Double]) in a.sorted()[a.count / 2] }
    if !pvhTimes.isEmpty {
        row("start -> first guest instruction", median(pvhTimes), median(refTimes), unit: "ms", refName: "bare VM + vCPU + 1st exit")
        print("  (issue 3 goal: <= 10 ms; medians of 11)")
        print(String(format: "%-34@ pvh %10.2f ms   (of which building the domain: load, VM, vCPUs, services)",
                     "  domain built (median)" as NSString, median(buildTimes)))
    }
    // Memory the VMM adds beyond guest RAM: RSS growth for one running domain,
    // against a bare VM of the same size. Both include the guest pages touched.
    let before = residentBytes()
    _ = try KVMMicrobenchmark.createAndFirstExit(memoryMiB: 64, system: system)
    let bare = residentBytes() - before
    let before2 = residentBytes()
    let domain = try Domain(configuration: GuestConfiguration(kernelPath: elf, commandLine: "pvh.scenarios=version", memoryMiB: 64),
                            console: CapturingConsoleSink(), system: system)
    _ = domain.run()
    let pvhRSS = residentBytes() - before2
    print(String(format: "%-34@ pvh %10.2f MiB   %-26@ %10.2f MiB   (issue 3 goal: <= 5 MiB beyond guest RAM)",
                 "RSS growth, 64 MiB test guest" as NSString, pvhRSS / 1048576, "bare VM, same RAM" as NSString, bare / 1048576))
} catch {
    print("pvh-bench: start-up benchmarks skipped: \(error)")
}

// MARK: kernel loading

/// The bzImage payload (boot protocol: setup_sects at 0x1f1, payload_offset
/// and payload_length at 0x248/0x24c) and the CLI that decompresses it.
func payload(_ image: [UInt8]) -> (bytes: [UInt8], tool: [String])? {
    guard image.count > 0x250 else { return nil }
    func u32(_ o: Int) -> Int { Int(image[o]) | Int(image[o + 1]) << 8 | Int(image[o + 2]) << 16 | Int(image[o + 3]) << 24 }
    let setup = image[0x1f1] == 0 ? 4 : Int(image[0x1f1])
    let start = (setup + 1) * 512 + u32(0x248), length = u32(0x24c)
    guard start + length <= image.count, length > 4 else { return nil }
    // The kernel build appends the uncompressed size (4 bytes LE) to the
    // payload; the CLI tools reject it as trailing garbage.
    let bytes = Array(image[start..<start + length - 4])
    switch (bytes[0], bytes[1]) {
    case (0x02, 0x21): return (bytes, ["lz4", "-dc"])
    case (0x28, 0xb5): return (bytes, ["zstd", "-dcq"])
    case (0x1f, 0x8b): return (bytes, ["gzip", "-dc"])
    case (0xfd, 0x37): return (bytes, ["xz", "-dc"])
    default: return nil
    }
}

func timeCLI(_ tool: [String], input: [UInt8]) -> Double? {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-bench-payload").path
    guard FileManager.default.createFile(atPath: path, contents: Data(input)) else { return nil }
    defer { try? FileManager.default.removeItem(atPath: path) }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = tool + [path]
    p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
    p.standardError = FileHandle.nullDevice
    let t0 = ContinuousClock.now
    guard (try? p.run()) != nil else { return nil }
    p.waitUntilExit()
    let d = ContinuousClock.now - t0
    guard p.terminationStatus == 0 else { return nil }
    return Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15
}

for version in ["6.1", "6.12"] {
    let path = "\(kit)/vmlinuz-\(version)"
    guard let data = FileManager.default.contents(atPath: path) else {
        print("pvh-bench: \(path) missing (scripts/guest-kit.sh): kernel load skipped")
        continue
    }
    let image = [UInt8](data)
    guard let (bytes, tool) = payload(image), let reference = timeCLI(tool, input: bytes) else {
        print("pvh-bench: \(path): no reference decompressor")
        continue
    }
    do {
        let memory = try MappedGuestMemory(ranges: [GuestPhysicalRange(start: GuestPhysicalAddress(0), length: 512 << 20)])
        let t0 = ContinuousClock.now
        let kernel = try KernelImage.parse(image)
        _ = try PVHLoader.load(kernel, configuration: BootConfiguration(commandLine: "console=hvc0"), into: memory)
        let d = ContinuousClock.now - t0
        let ms = Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15
        row("load Debian \(version) bzImage", ms, reference, unit: "ms", refName: "\(tool[0]) -d (payload only)")
    } catch {
        print("pvh-bench: \(path): \(error)")
    }
}

// MARK: XenStore

/// XenStore round trips, each beside its physical floor:
/// - over the guest's ring (XS_READ from the test guest: request bytes, an
///   event to the store, the reply, an upcall back) against one event
///   send → upcall, the least any ring round trip costs;
/// - over the Unix socket (XS_READ from `XenStoreClient`, what xenstore-read
///   does) against the same bytes echoed over a bare Unix socket pair.
/// Debian's C xenstored cannot serve as the peer here: it needs a hypervisor
/// (without -D it exits "Failed to open connection to hypervisor"; with -D it
/// crashes on the first request), see docs/XENSTORE.md.
do {
    if let ring = try guestBench(transport: "page", scenario: "bench_xenstore"),
       let event = try guestBench(transport: "page", scenario: "bench_evtchn") {
        row("XenStore read over the ring", ring, event, unit: "µs", refName: "event send -> upcall")
        print(String(format: "%-34@ pvh %10.0f ops/s", "XenStore ring throughput" as NSString, 1e6 / ring))
    }
} catch {
    print("pvh-bench: XenStore ring benchmark skipped: \(error)")
}

do {
    let store = XenStoreServer()
    try store.write("/local/domain/1/name", "bench")
    let path = NSTemporaryDirectory() + "pvh-bench-\(getpid()).sock"
    let socketServer = try XenStoreSocketServer(path: path, server: store)
    socketServer.start()
    defer { socketServer.stop() }
    let client = try XenStoreClient(socketPath: path)
    let n = max(iterations / 4, 1000)
    for _ in 0..<100 { _ = try client.read("/local/domain/1/name") }
    let start = ContinuousClock.now
    for _ in 0..<n { _ = try client.read("/local/domain/1/name") }
    let pvhMicros = millis(ContinuousClock.now - start) * 1000 / Double(n)

    // Reference: the same request and reply sizes, echoed by a thread over a
    // bare Unix socket pair (one write and one read each way).
    let request = XenStoreMessage(type: .read, strings: ["/local/domain/1/name"]).bytes
    let reply = XenStoreMessage(type: .read, payload: Array("bench".utf8)).bytes
    let echoPath = NSTemporaryDirectory() + "pvh-bench-echo-\(getpid()).sock"
    let listener = try UnixSocket.listen(at: echoPath)
    let echo = Thread {
        guard let peer = listener.accept() else { return }
        while let bytes = peer.read(), bytes.count > 0 { _ = bytes; peer.writeAll(reply) }
        peer.close()
    }
    echo.start()
    let peer = try UnixSocket.connect(to: echoPath)
    var refStart = ContinuousClock.now
    for i in 0..<(n + 100) {
        if i == 100 { refStart = ContinuousClock.now }
        peer.writeAll(request)
        _ = peer.read()
    }
    let refMicros = millis(ContinuousClock.now - refStart) * 1000 / Double(n)
    peer.close()
    listener.shutdownAndClose()
    unlink(echoPath)
    row("XenStore read over the socket", pvhMicros, refMicros, unit: "µs", refName: "bare Unix socket echo")
    print(String(format: "%-34@ pvh %10.0f ops/s   %-26@ %10.0f ops/s", "XenStore socket throughput" as NSString, 1e6 / pvhMicros,
                 "bare Unix socket echo" as NSString, 1e6 / refMicros))

    // The store itself, no transport: writes and reads by the toolstack.
    let coreStart = ContinuousClock.now
    for i in 0..<n { try store.write("/local/domain/1/data/k\(i % 64)", "v\(i)") }
    let writeMicros = millis(ContinuousClock.now - coreStart) * 1000 / Double(n)
    print(String(format: "%-34@ pvh %10.2f µs   (%.0f ops/s, no transport)", "XenStore write, in process" as NSString, writeMicros, 1e6 / writeMicros))
} catch {
    print("pvh-bench: XenStore socket benchmark skipped: \(error)")
}
