import ArgumentParser
import Dispatch
import KVM
import VMM

#if canImport(Glibc)
import Glibc
#endif

@main
struct PVH: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pvh",
        abstract: "Run Xen PVH guests on Linux KVM.",
        subcommands: [Run.self, Host.self])

    /// ArgumentParser exits 64 on bad usage; pvh's contract is one line and status 2.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let code as ExitCode {
            Glibc.exit(code.rawValue)
        } catch {
            if exitCode(for: error) == .validationFailure {
                let message = fullMessage(for: error).split(separator: "\n").first.map(String.init) ?? "invalid arguments"
                usageFailure(message.hasPrefix("Error: ") ? String(message.dropFirst(7)) : message)
            }
            exit(withError: error)
        }
    }
}

/// Prints one line to stderr and exits with status 2: bad user input.
func usageFailure(_ message: String) -> Never {
    FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(message)\n".utf8))
    Glibc.exit(2)
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot one guest in the foreground, its console on stdin/stdout.",
        discussion: """
            The kernel is entered at its PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY); \
            an ELF vmlinux or a bzImage (gzip, xz, lzma, bzip2, lz4, zstd payload) is accepted. \
            Exit status: 0 guest powered off, 1 VMM failure, 2 bad arguments or kernel, \
            3 guest rebooted, 4 guest crashed, 5 suspended, 6 soft reset.
            """)

    @Option(name: .long, help: ArgumentHelp("Guest kernel: a PVH-capable ELF vmlinux or bzImage.", valueName: "path"))
    var kernel: String

    @Option(name: .long, help: ArgumentHelp("Initial ramdisk, passed to the guest as the first start_info module.", valueName: "path"))
    var initrd: String?

    @Option(name: .long, help: ArgumentHelp("Guest kernel command line.", valueName: "string"))
    var cmdline: String = ""

    @Option(name: .long, help: ArgumentHelp("Guest memory in MiB (16 to \(GuestConfiguration.maximumMemoryMiB)).", valueName: "MiB"))
    var memory: Int = 256

    @Option(name: .long, help: ArgumentHelp("Number of virtual CPUs (1 to \(GuestConfiguration.maximumVCPUs)).", valueName: "n"))
    var vcpus: Int = 1

    func validate() throws {
        guard (16...GuestConfiguration.maximumMemoryMiB).contains(memory) else {
            throw ValidationError("--memory \(memory): must be 16 to \(GuestConfiguration.maximumMemoryMiB) MiB")
        }
        guard (1...GuestConfiguration.maximumVCPUs).contains(vcpus) else {
            throw ValidationError("--vcpus \(vcpus): must be 1 to \(GuestConfiguration.maximumVCPUs)")
        }
    }

    func run() throws {
        let config = GuestConfiguration(kernelPath: kernel, initrdPath: initrd, commandLine: cmdline, memoryMiB: memory, vcpus: vcpus)
        let domain: Domain
        do {
            domain = try Domain(configuration: config, console: FileDescriptorConsoleSink(fd: 1))
        } catch {
            if error.isUsageError { usageFailure(error.description) }
            FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(error.description)\n".utf8))
            throw ExitCode(1)
        }
        let terminal = HostTerminal()
        terminal.attach(to: domain)
        // SIGINT/SIGTERM from outside stop the guest cleanly (terminal restored, status 130).
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { domain.stop() }
            source.resume()
            sources.append(source)
        }
        let end = domain.run()
        terminal.restore()
        sources.forEach { $0.cancel() }
        if case .shutdown(.poweroff) = end {} else {
            FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(end)\n".utf8))
        }
        throw ExitCode(end.exitStatus)
    }
}

struct Host: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe this host's KVM: hardware or software backend, and the capabilities pvh uses.")

    func run() throws {
        do {
            let system = try KVMSystem()
            print(system.hostReport)
        } catch {
            FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: /dev/kvm: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
