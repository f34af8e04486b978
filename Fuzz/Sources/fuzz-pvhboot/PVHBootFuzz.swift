// Fuzz target: the kernel loader (PVHBoot) on arbitrary bytes: bzImage,
// ELF32/ELF64 with the PVH entry note (Xen's elfnote.h), compressed ELF
// through the system decompressors, then the layout and the load into a
// small mock guest. Checks: every failure is a KernelImageError/BootError, a
// parsed image's segments fit their declared sizes, and a load writes only
// inside the guest's RAM (the mapping refuses anything else).
import FuzzSupport
import GuestMemory
import PVHBoot

@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzBytes(data, size, fuzzOne) }

@_cdecl("fuzz_pvhboot_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { fuzzDriverMain(argc, argv) }

/// 16 MiB of guest RAM: enough for the seed kernels, small enough to be
/// fresh per input.
private let ramSize = 16 << 20
/// A decompressed payload is capped well below the default so that a small
/// input cannot make every execution allocate hundreds of MiB.
private let decompressionLimit = 32 << 20

private func fuzzOne(_ input: [UInt8]) {
    let kernel: KernelImage
    do throws(KernelImageError) {
        kernel = try KernelImage.parse(input, decompressionLimit: decompressionLimit)
    } catch {
        precondition(!error.description.isEmpty)
        return
    }
    for segment in kernel.segments {
        precondition(UInt64(segment.fileBytes.count) <= segment.memorySize, "segment file bytes beyond its size")
    }
    let memory = guestRAM(ramSize)
    let configuration = BootConfiguration(commandLine: "console=hvc0", initrd: [1, 2, 3], vcpuCount: 2)
    do throws(BootError) {
        let info = try PVHLoader.load(kernel, configuration: configuration, into: memory)
        precondition(info.kernelRange.end <= UInt64(ramSize), "kernel placed beyond RAM")
    } catch {
        precondition(!error.description.isEmpty)
    }
}
