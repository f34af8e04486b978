import DeviceRuntime
import DeviceSpecs
import Dispatch
import Foundation
import GuestMemory
import KVM
import PVHBoot
import Locking
import Synchronization
import Testing
import XenABI
@testable import VMM

@Suite("VMM wiring (pure)")
struct VMMTests {
    func site(_ v: UInt64, _ p: UInt64) -> HypercallSite {
        HypercallSite(virtualAddress: GuestVirtualAddress(v), physicalAddress: GuestPhysicalAddress(p))
    }

    @Test("breakpoints: both aliases of both sites, the host vendor's first")
    func breakpoints() {
        let sites = HypercallSites(amd: site(0xffff_ffff_81a0_3db0, 0x1a0_3db0), intel: site(0xffff_ffff_81a0_3dc0, 0x1a0_3dc0))
        let amd = HypercallTransports.breakpointAddresses(for: sites, preferAMD: true, kvmIntercepts: false)
        #expect(amd.map(\.rawValue) == [0xffff_ffff_81a0_3db0, 0x1a0_3db0, 0xffff_ffff_81a0_3dc0, 0x1a0_3dc0])
        let intel = HypercallTransports.breakpointAddresses(for: sites, preferAMD: false, kvmIntercepts: false)
        #expect(intel.first?.rawValue == 0xffff_ffff_81a0_3dc0)
        #expect(HypercallTransports.breakpointAddresses(for: sites, preferAMD: true, kvmIntercepts: true).isEmpty)
    }

    @Test("breakpoints: an identity-mapped guest needs one per site; none without sites")
    func identityMapped() {
        let sites = HypercallSites(amd: site(0x100380, 0x100380), intel: site(0x1003a0, 0x1003a0))
        #expect(HypercallTransports.breakpointAddresses(for: sites, preferAMD: true, kvmIntercepts: false).map(\.rawValue) == [0x100380, 0x1003a0])
        #expect(HypercallTransports.breakpointAddresses(for: HypercallSites(amd: nil, intel: nil), preferAMD: true, kvmIntercepts: false).isEmpty)
    }

    @Test("CPUID: KVM's signature leaves are replaced by Xen's, per vCPU")
    func cpuid() {
        let kvm = CPUIDTable([
            CPUIDEntry(function: 0, eax: 0xd, ebx: 0x6874_7541),
            CPUIDEntry(function: 1, ebx: 0x0102_0800, ecx: 0xffff_ffff),
            CPUIDEntry(function: 0xb, index: 0, flags: .significantIndex, edx: 0),
            CPUIDEntry(function: 0xd, eax: 7),
            CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001, ebx: 0x4b4d_564b),  // "KVMK"
            CPUIDEntry(function: 0x4000_0001, eax: 0xffff),
        ])
        let t = GuestCPUID.make(base: kvm, vcpu: VCPUID(3), domain: DomainID(rawValue: 1), tscKHz: 2_000_000, software: false)
        let sig = t.lookup(function: 0x4000_0000)
        #expect(sig?.ebx == 0x566e_6558)  // "XenV"
        #expect(sig?.ecx == 0x65584d4d)   // "MMXe"
        #expect(sig?.edx == 0x4d4d566e)   // "nVMM"
        #expect(t.lookup(function: 0x4000_0001)?.eax != 0xffff)
        #expect(t.lookup(function: 0x4000_0002)?.ebx == 0x4000_0000)  // hypercall-page MSR
        #expect(t.lookup(function: 0x4000_0004, index: 0)?.ebx == 3)    // VCPU_ID_PRESENT: this vCPU
        #expect(t.lookup(function: 0x4000_0003, index: 0)?.ecx == 2_000_000)
        #expect(t.lookup(function: 1)?.ecx == 0xffff_ffff)  // hardware host: untouched
        #expect(t.lookup(function: 1)?.ebx == 0x0302_0800)  // initial APIC ID = vCPU 3, the rest kept
        #expect(t.lookup(function: 0xb, index: 0)?.edx == 3)  // x2APIC ID

        let s = GuestCPUID.make(base: kvm, vcpu: VCPUID(0), domain: DomainID(rawValue: 1), tscKHz: 1, software: true)
        let ecx = s.lookup(function: 1)?.ecx ?? 0
        #expect(ecx & (1 << 26) == 0 && ecx & (1 << 13) == 0)  // xsave, cx16 hidden
        #expect(s.lookup(function: 0xd) == nil)
    }

    @Test("RAM layout: below the 32-bit hole, the rest above 4 GiB")
    func ramLayout() {
        let small = GuestConfiguration(kernelPath: "k", memoryMiB: 256).ramRanges
        #expect(small == [GuestPhysicalRange(start: GuestPhysicalAddress(0), length: 256 << 20)])
        let big = GuestConfiguration(kernelPath: "k", memoryMiB: 4096).ramRanges
        #expect(big.count == 2)
        #expect(big[0].end == 0xE000_0000)
        #expect(big[1].start.rawValue == 0x1_0000_0000)
        #expect(big[0].length + big[1].length == 4096 << 20)
    }

    @Test("grant area: shared then status frames in the 32-bit hole, outside RAM and below the LAPIC; sized by maxGrantFrames")
    func grantArea() {
        let c = GuestConfiguration(kernelPath: "k", memoryMiB: 256)
        #expect(c.maxGrantFrames == 64)
        #expect(c.grantArea.length == (64 + 8) * 4096)
        #expect(c.grantArea.start.rawValue == 0xFD00_0000)
        let one = GuestConfiguration(kernelPath: "k", memoryMiB: 256, maxGrantFrames: 1)
        #expect(one.grantArea.length == 2 * 4096)  // one shared frame, one status frame
        for memoryMiB in [16, 256, 3584, 8192] {
            let big = GuestConfiguration(kernelPath: "k", memoryMiB: memoryMiB, maxGrantFrames: 1024)
            #expect(big.grantArea.length == (1024 + 128) * 4096)
            #expect(!big.ramRanges.contains { $0.overlaps(big.grantArea) }, "\(memoryMiB) MiB")
            #expect(big.grantArea.end <= 0xFEE0_0000)  // the local APIC
        }
    }

    @Test("--max-grant-frames out of range is a usage error naming the option")
    func badGrantFrames() {
        for n in [0, 1025] {
            do {
                _ = try Domain(configuration: GuestConfiguration(kernelPath: "/nonexistent", maxGrantFrames: n),
                               console: FileDescriptorConsoleSink(fd: 2))
                Issue.record("accepted \(n)")
            } catch {
                #expect(error.description == "--max-grant-frames \(n): must be 1 to 1024")
                #expect(error.isUsageError)
            }
        }
    }

    @Test("the disks are carried on the configuration, none by default")
    func disksCarried() throws {
        #expect(GuestConfiguration(kernelPath: "k").disks.isEmpty)
        let disks = try DiskSpecification.parse(["/a.img,,xvda", ",hdc:cdrom,r"])
        let c = GuestConfiguration(kernelPath: "k", disks: disks)
        #expect(c.disks == disks)
        #expect(c.disks.map(\.vdev.number.rawValue) == [UInt32(202 * 256), UInt32(22 * 256)])
        #expect(c != GuestConfiguration(kernelPath: "k"))
    }

    @Test("two disks with one virtual device: a usage error naming the later --disk, before any file is read")
    func duplicateDisks() throws {
        let disks = [try DiskSpecification(parsing: "/a.img,,xvda"), try DiskSpecification(parsing: "/b.img,,51712")]
        do {
            _ = try Domain(configuration: GuestConfiguration(kernelPath: "/nonexistent", disks: disks), console: FileDescriptorConsoleSink(fd: 2))
            Issue.record("accepted")
        } catch {
            #expect(error.description == "--disk '/b.img,,51712': vdev '51712' (device 51712) is already used by --disk '/a.img,,xvda'")
            #expect(error.isUsageError)
        }
    }

    @Test("exit statuses: 0 poweroff, 3 reboot, 4 crash, 1 VMM failure")
    func exitStatuses() {
        #expect(DomainExit.shutdown(.poweroff).exitStatus == 0)
        #expect(DomainExit.shutdown(.reboot).exitStatus == 3)
        #expect(DomainExit.shutdown(.crash).exitStatus == 4)
        #expect(DomainExit.tripleFault(rip: 0).exitStatus == 4)
        #expect(DomainExit.failed("x").exitStatus == 1)
    }

    @Test("console capture: lines split across writes arrive whole, in order")
    func consoleLines() {
        let got = Lock<[String]>([])
        let sink = CapturingConsoleSink { line in got.withLock { $0.append(line) } }
        sink.emit(Array("PVHTEST a P".utf8))
        sink.emit(Array("ASS\r\nsecond\nthi".utf8))
        sink.emit(Array("rd\n".utf8))
        #expect(got.withLock { $0 } == ["PVHTEST a PASS", "second", "third"])
        #expect(sink.text == "PVHTEST a PASS\r\nsecond\nthird\n")
        // `lines` too: a Linux tty's "\r\n" (one Swift Character) ends a line.
        #expect(sink.lines == ["PVHTEST a PASS", "second", "third", ""])
    }

    @Test("the domain ends once: the first finish wins")
    func lifecycle() {
        let l = DomainLifecycle()
        let kicked = Atomic<Int>(0)
        l.onStop { kicked.wrappingAdd(1, ordering: .relaxed) }
        l.finish(.shutdown(.reboot))
        l.finish(.stopped)
        #expect(l.wait() == .shutdown(.reboot))
        #expect(kicked.load(ordering: .relaxed) == 1)
        l.onStop { kicked.wrappingAdd(1, ordering: .relaxed) }  // late vCPU: stopped at once
        #expect(kicked.load(ordering: .relaxed) == 2)
    }

    @Test("user errors name the file: missing, a directory")
    func fileErrors() {
        #expect(throws: DomainError.self) { _ = try readFile("/nonexistent/k") }
        do {
            _ = try readFile("/")
        } catch {
            #expect(error.description == "/: is a directory")
            #expect(error.isUsageError)
        }
    }
}

@Suite("breakpoints with the software backend's trap fix-ups armed")
struct TrapFixupBreakpointTests {
    /// Linux's sites in the order DomainBuilders gives them on an AMD host:
    /// the vendor's site first, each kernel-virtual address before its identity alias.
    let sites = [
        GuestLinearAddress(0xffff_ffff_8100_1000), GuestLinearAddress(0x100_1000),
        GuestLinearAddress(0xffff_ffff_8100_1020), GuestLinearAddress(0x100_1020),
    ]
    let pageFault = GuestLinearAddress(0xffff_ffff_81e0_1230)
    let invalidOpcode = GuestLinearAddress(0xffff_ffff_81e0_0a40)
    let debug = GuestLinearAddress(0xffff_ffff_81e0_0d10)

    @Test("the #PF handler takes an identity alias's debug register; the kernel-virtual sites are kept")
    func oneHandler() {
        let armed = HypercallTransports.breakpointAddresses(sites: sites, handlers: [pageFault])
        #expect(armed == [sites[0], sites[2], sites[1], pageFault])
        // Not armed (or stepping over a handler): all four sites.
        #expect(HypercallTransports.breakpointAddresses(sites: sites, handlers: []) == [sites[0], sites[2], sites[1], sites[3]])
        // Few sites: all kept, plus the handler.
        #expect(HypercallTransports.breakpointAddresses(sites: [GuestLinearAddress(0x1000)], handlers: [pageFault])
                == [GuestLinearAddress(0x1000), pageFault])
    }

    @Test("#PF, #UD and #DB armed: one site left, the host vendor's kernel-virtual one; Intel's first on Intel")
    func threeHandlers() {
        let handlers = [pageFault, invalidOpcode, debug]
        #expect(HypercallTransports.breakpointAddresses(sites: sites, handlers: handlers) == [sites[0]] + handlers)
        let intelFirst = [sites[2], sites[3], sites[0], sites[1]]
        #expect(HypercallTransports.breakpointAddresses(sites: intelFirst, handlers: handlers) == [sites[2]] + handlers)
        // An identity-mapped guest (the test guest): the vendor's site, by order.
        let identity = [GuestLinearAddress(0x100380), GuestLinearAddress(0x1003a0)]
        #expect(HypercallTransports.breakpointAddresses(sites: identity, handlers: handlers) == [identity[0]] + handlers)
        // No sites: the handlers alone.
        #expect(HypercallTransports.breakpointAddresses(sites: [], handlers: handlers) == handlers)
    }

    @Test("#BP's handler too (a DPL0 gate): armed only once no hypercall site needs a debug register")
    func fourHandlers() {
        let handlers = [pageFault, invalidOpcode, debug, breakpoint]
        #expect(HypercallTransports.breakpointAddresses(sites: sites, handlers: handlers) == [sites[0]] + handlers.prefix(3))
        #expect(HypercallTransports.breakpointAddresses(sites: [], handlers: handlers) == handlers)
    }

    let breakpoint = GuestLinearAddress(0xffff_ffff_81e0_0300)

    /// Linux's IDT as the LSTAR write finds it: interrupt gates, #BP's DPL3.
    static func linuxGate(_ vector: UInt8) -> InterruptGate? {
        let handlers: [UInt8: UInt64] = [14: 0xffff_ffff_81e0_1230, 6: 0xffff_ffff_81e0_0a40, 1: 0xffff_ffff_81e0_0d10,
                                         3: 0xffff_ffff_81e0_0300]
        return handlers[vector].map { InterruptGate(offset: $0, selector: 0x10, dpl: vector == 3 ? 3 : 0) }
    }

    @Test("the handlers come from the IDT at the LSTAR write, #PF first, each address once, absent gates skipped, #BP's only through a DPL0 gate")
    func arming() {
        var traps = GuestTrapBreakpoints()
        traps.arm(lstar: 0xffff_ffff_81e0_0080, gate: Self.linuxGate)
        #expect(traps.syscallEntry == UInt64(0xffff_ffff_81e0_0080))
        // Linux's #BP gate is DPL3: the backend's #BP is right, nothing to break on.
        #expect(traps.addresses == [pageFault, invalidOpcode, debug])
        #expect(traps.vector(at: invalidOpcode) == 6 && traps.vector(at: debug) == 1 && traps.vector(at: pageFault) == 14)
        #expect(traps.vector(at: GuestLinearAddress(0x1000)) == nil)
        traps.arm(lstar: 2) { vector in
            vector == 3 ? InterruptGate(offset: 0xffff_ffff_81e0_0300, selector: 0x10, dpl: 0) : Self.linuxGate(vector)
        }
        #expect(traps.addresses == [pageFault, invalidOpcode, debug, breakpoint])
        #expect(traps.vector(at: breakpoint) == UInt8(3))
        // Not present: skipped, whatever the DPL.
        traps.arm(lstar: 3) { vector in
            vector == 6 ? InterruptGate(offset: 0xffff_ffff_81e0_0a40, selector: 0x10, present: false) : Self.linuxGate(vector)
        }
        #expect(traps.addresses == [pageFault, debug])
        // A shared handler could not tell its events apart: armed for the first vector only.
        traps.arm(lstar: 1) { vector in vector == 1 ? nil : InterruptGate(offset: 0xffff_ffff_81e0_1230, selector: 0x10) }
        #expect(traps.addresses == [pageFault])
        #expect(traps.vector(at: pageFault) == 14)
    }
}

@Suite("hypercall transports: the guest's choice")
struct HypercallTransportChoiceTests {
    let sites = [GuestLinearAddress(0xffff_ffff_8100_1000), GuestLinearAddress(0x100_1000)]

    @Test("a 64-bit hypercall through the page before any through a site retires the vmcall sites on every vCPU")
    func pageFirstRetiresSites() {
        #expect(HypercallTransports.shouldRetireSites(sites: sites, pageHypercallIn64BitMode: true, siteHypercallsSoFar: 0))
        let transports = HypercallTransports(breakpointSites: sites)
        #expect(transports.activeSites == sites)
        transports.retireSites()
        #expect(transports.activeSites.isEmpty)
        #expect(transports.breakpointSites == sites)
        // With the sites gone and no trap fix-up, nothing is armed: guest debugging goes off.
        #expect(HypercallTransports.breakpointAddresses(sites: transports.activeSites, handlers: []).isEmpty)
        // The trap fix-ups keep their handler breakpoints.
        let handler = GuestLinearAddress(0xffff_ffff_81e0_1230)
        #expect(HypercallTransports.breakpointAddresses(sites: transports.activeSites, handlers: [handler]) == [handler])
    }

    @Test("32-bit start-up code using the page, or a guest that already used a site, keeps the sites")
    func mixedGuestKeepsSites() {
        #expect(!HypercallTransports.shouldRetireSites(sites: sites, pageHypercallIn64BitMode: false, siteHypercallsSoFar: 0))
        #expect(!HypercallTransports.shouldRetireSites(sites: sites, pageHypercallIn64BitMode: true, siteHypercallsSoFar: 3))
        #expect(!HypercallTransports.shouldRetireSites(sites: [], pageHypercallIn64BitMode: true, siteHypercallsSoFar: 0))
    }

    @Test("vCPU threads are told apart from device threads and others (the runtime's forbidden-thread check)")
    func vcpuThreadIdentity() throws {
        // Marked as Domain.run marks its vCPU threads, before the first instruction;
        // a thread that only has the name is not one.
        let done = DispatchSemaphore(value: 0)
        let seen = Lock<Bool?>(nil)
        let vcpu = Thread {
            Thread.current.threadDictionary[Domain.vcpuThreadKey] = true
            seen.withLock { $0 = Domain.isVCPUThread() }
            done.signal()
        }
        vcpu.start()
        #expect(done.wait(timeout: .now() + 30) == .success)
        #expect(seen.withLock { $0 } == true)
        #expect(!Domain.isVCPUThread())
        let context = ExecutionContext(name: "pvh-console")
        defer { context.stop() }
        let work = context.makeWork { seen.withLock { $0 = Domain.isVCPUThread() } }
        work.schedule()
        #expect(context.sync(timeout: .seconds(30)))
        #expect(seen.withLock { $0 } == false)
    }
}
