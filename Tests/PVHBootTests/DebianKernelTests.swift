import Foundation
import GuestMemory
import PVHBoot
import Testing
import TestSupport
import XenABI

/// The guest kit: Debian's cloud kernels, not committed. `PVH_GUEST_KIT`
/// names the directory (default `<repo>/guest-kit/out`).
enum GuestKit {
    static var directory: URL {
        if let env = ProcessInfo.processInfo.environment["PVH_GUEST_KIT"], !env.isEmpty {
            return URL(fileURLWithPath: env)
        }
        // <repo>/Tests/PVHBootTests/DebianKernelTests.swift → <repo>/guest-kit/out
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("guest-kit/out")
    }

    static func kernel(_ name: String) -> [UInt8]? {
        (try? Data(contentsOf: directory.appendingPathComponent(name))).map { [UInt8]($0) }
    }

    static func has(_ name: String) -> Bool {
        FileManager.default.fileExists(atPath: directory.appendingPathComponent(name).path)
    }
}

@Suite("Debian cloud kernels (guest kit)")
struct DebianKernelTests {
    @Test(
        "parse, PVH entry, hypercall sites, load",
        .enabled(if: GuestKit.has("vmlinuz-6.1") || GuestKit.has("vmlinuz-6.12"),
                 "guest kit absent: set PVH_GUEST_KIT to a directory with vmlinuz-6.1 / vmlinuz-6.12"),
        arguments: ["vmlinuz-6.1", "vmlinuz-6.12"])
    func debianKernel(_ name: String) throws {
        guard let bytes = GuestKit.kernel(name) else { return }
        let kernel = try KernelImage.parse(bytes)
        print("\(name): container \(kernel.container) entry \(kernel.entry) range \(kernel.physicalRange.start)+0x\(String(kernel.physicalRange.length, radix: 16)) reloc \(String(describing: kernel.relocation)) amd \(String(describing: kernel.hypercallSites.amd)) intel \(String(describing: kernel.hypercallSites.intel))")
        #expect(kernel.is64Bit)
        #expect(kernel.physicalRange.start == GuestPhysicalAddress(0x100_0000))
        #expect(kernel.physicalRange.contains(kernel.entry))
        let amd = try #require(kernel.hypercallSites.amd)
        let intel = try #require(kernel.hypercallSites.intel)
        #expect(amd.virtualAddress.rawValue >= 0xffff_ffff_8000_0000)
        #expect(intel.virtualAddress.rawValue >= 0xffff_ffff_8000_0000)
        #expect(kernel.physicalRange.contains(amd.physicalAddress))
        #expect(kernel.physicalRange.contains(intel.physicalAddress))

        let memory = MockGuestMemory(size: 128 << 20)
        let info = try PVHLoader.load(kernel, configuration: BootConfiguration(commandLine: "console=hvc0", vcpuCount: 2),
                                      into: memory)
        #expect(info.relocationDelta == 0)
        #expect(try memory.read(at: amd.physicalAddress, count: 3) == [0x0f, 0x01, 0xd9])
        #expect(try memory.read(at: intel.physicalAddress, count: 3) == [0x0f, 0x01, 0xc1])
        #expect(HVMStartInfo(decoding: try memory.read(at: info.startInfo, count: HVMStartInfo.size)) != nil)
    }

    @Test(
        "6.12 relocates (PHYS32_RELOC) when 16 MiB is not RAM; 6.1 cannot",
        .enabled(if: GuestKit.has("vmlinuz-6.1") && GuestKit.has("vmlinuz-6.12"), "guest kit absent"))
    func relocation() throws {
        let mib: UInt64 = 1 << 20
        let ram = [GuestPhysicalRange(start: GuestPhysicalAddress(0), length: 12 * mib),
                   GuestPhysicalRange(start: GuestPhysicalAddress(64 * mib), length: 64 * mib)]
        let k612 = try KernelImage.parse(try #require(GuestKit.kernel("vmlinuz-6.12")))
        let reloc = try #require(k612.relocation)
        #expect(reloc == PhysicalRelocation(alignment: 0x20_0000, minimum: GuestPhysicalAddress(0x100_0000),
                                            maximum: GuestPhysicalAddress(0x3fff_ffff)))
        let memory = MockGuestMemory(ranges: ram)
        let info = try PVHLoader.load(k612, configuration: BootConfiguration(), into: memory)
        #expect(info.kernelRange.start == GuestPhysicalAddress(64 * mib))
        #expect(info.entry.rawValue == k612.entry.rawValue + 48 * mib)
        let amd = try #require(info.hypercallSites.amd)
        #expect(try memory.read(at: amd.physicalAddress, count: 3) == [0x0f, 0x01, 0xd9])

        let k61 = try KernelImage.parse(try #require(GuestKit.kernel("vmlinuz-6.1")))
        #expect(throws: BootError.imageDoesNotFit(k61.physicalRange)) {
            try PVHLoader.plan(k61, configuration: BootConfiguration(), ram: ram)
        }
    }
}
