import Testing
import Toolstack

/// A guest process killed by its seccomp filter (docs/ARCHITECTURE.md:
/// Sandbox) as the daemon classifies it.
@Suite struct SandboxEndTests {
    @Test("SIGSYS is the sandbox's kill: named so in the reason, a crash for on_crash; other signals are not")
    func sigsysIsTheSandbox() {
        let end = GuestProcessEnd.signaled(31)
        #expect(end.killedBySandbox)
        #expect(end.description == "killed by the sandbox (seccomp): signal 31, SIGSYS: a forbidden system call")
        #expect(DomainEnd(end) == .shutdown(.crash))
        #expect(!GuestProcessEnd.signaled(9).killedBySandbox)
        #expect(GuestProcessEnd.signaled(9).description == "killed by signal 9")
        // An exit status 31 is not a signal.
        #expect(!GuestProcessEnd.exited(31).killedBySandbox)
    }
}
