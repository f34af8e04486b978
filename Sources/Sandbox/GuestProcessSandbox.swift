import CSeccomp

/// How the guest process's system-call filter treats a call it does not list.
public enum SandboxMode: Sendable, Equatable {
    /// SCMP_ACT_KILL_PROCESS: the whole process dies of SIGSYS.
    case enforce
    /// SCMP_ACT_LOG: the call runs and the kernel logs it (audit type 1326,
    /// `dmesg`): for finding what a new code path needs, never the default.
    case log
}

/// A failure to confine the process: the call that failed and its errno.
public struct SandboxError: Error, Sendable, CustomStringConvertible {
    public let step: String
    public let errno: Int32

    public init(step: String, errno: Int32) {
        self.step = step
        self.errno = errno
    }

    public var description: String { "sandbox: \(step): errno \(errno)" }
}

/// One filter rule: a system call by libseccomp's name, allowed with any
/// arguments, allowed when one argument matches under a mask, or answered
/// with an errno instead of the kill.
public enum SyscallRule: Sendable, Equatable {
    case allow(String)
    case allowMasked(String, argument: UInt32, mask: UInt64, value: UInt64)
    /// Allowed when two arguments both match.
    case allowMaskedBoth(String, ArgumentMatch, ArgumentMatch)
    case fail(String, errno: Int32)

    public var name: String {
        switch self {
        case .allow(let n), .allowMasked(let n, _, _, _), .allowMaskedBoth(let n, _, _), .fail(let n, _): n
        }
    }
}

/// One argument's condition: (argument & mask) == value.
public struct ArgumentMatch: Sendable, Equatable {
    public let argument: UInt32
    public let mask: UInt64
    public let value: UInt64

    public init(argument: UInt32, mask: UInt64, value: UInt64) {
        self.argument = argument
        self.mask = mask
        self.value = value
    }
}

/// The guest process's sandbox (issue 13 item 4; docs/ARCHITECTURE.md:
/// Sandbox): once the domain is built (memory mapped, images opened, vCPUs
/// created, passt spawned, sockets connected) and before its first vCPU
/// runs, the process drops every capability and loads a seccomp filter into
/// all its threads whose default is to kill the process.
public enum GuestProcessSandbox {
    /// The filter's rules, one group per user. What is absent is what a
    /// compromised guest process must not do: execve (passt is restarted
    /// through a spawner forked before the filter: HostIO's PasstSpawner),
    /// fork, ptrace, mount and namespaces, set*id, capset, bpf, modules,
    /// process_vm_*, keyctl, and so on.
    public static var rules: [SyscallRule] {
        var rules: [SyscallRule] = []
        // The Swift runtime, Foundation and glibc: memory, thread-local
        // state, identities read for messages and paths, randomness;
        // Dispatch's worker threads set their niceness for their QoS
        // (setpriority; without CAP_SYS_NICE it can only lower it).
        rules += ["brk", "mmap", "munmap", "mprotect", "mremap", "madvise", "getrandom", "getpid", "gettid", "getppid",
                  "getuid", "geteuid", "getgid", "getegid", "uname", "sysinfo", "prlimit64", "sched_getaffinity",
                  "sched_yield", "getpriority", "setpriority", "getrusage", "times", "getcwd", "rseq", "set_robust_list", "sigaltstack", "restart_syscall", "exit",
                  "exit_group"].map(SyscallRule.allow)
        // Threads made after set-up (Dispatch's workers, device execution
        // contexts, the I/O thread pool, a metrics server's): pthread_create
        // is clone with CLONE_THREAD, which a fork never has. clone3 keeps
        // its flags behind a pointer no filter can read: ENOSYS makes glibc
        // fall back to clone (as container runtimes do).
        let thread = UInt64(pvh_clone_thread_flag())
        rules.append(.allowMasked("clone", argument: 0, mask: thread, value: thread))
        rules.append(.fail("clone3", errno: 38))  // ENOSYS
        // Thread names (pthread_setname_np on the calling thread: PR_SET_NAME,
        // PR_GET_NAME, linux/prctl.h 15 and 16); no other prctl.
        // A vCPU thread binds itself to its CPUs (xl's cpus=) as it starts:
        // sched_setaffinity on the caller only (pid 0), never another task.
        rules.append(.allowMasked("sched_setaffinity", argument: 0, mask: ~0, value: 0))
        rules.append(.allowMasked("prctl", argument: 0, mask: ~0, value: 15))
        rules.append(.allowMasked("prctl", argument: 0, mask: ~0, value: 16))
        // Locks, waits and clocks: futexes, the vCPU timers, sleeps with a bound.
        rules += ["futex", "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday",
                  "timerfd_create", "timerfd_settime", "timerfd_gettime"].map(SyscallRule.allow)
        // Signals: the signalfd Dispatch reads SIGINT/SIGTERM/SIGUSR1 from,
        // vCPU kicks (tgkill to a vCPU thread out of KVM_RUN), passt's
        // SIGTERM/SIGKILL on restart and `pvh create -p`'s SIGSTOP to itself.
        rules += ["rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait", "rt_sigpending", "signalfd4",
                  "kill", "tgkill", "tkill"].map(SyscallRule.allow)
        // Descriptors: the console, logs, images, sockets; event loops.
        rules += ["read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
                  "lseek", "close", "close_range", "dup", "dup2", "dup3", "fcntl", "fstat", "newfstatat", "statx",
                  "fstatfs", "statfs", "readlink", "access", "faccessat", "faccessat2", "getdents64", "pipe2", "eventfd2",
                  "poll", "ppoll", "select", "pselect6", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait"]
            .map(SyscallRule.allow)
        // Block backends: the data path (io_uring, or the thread pool's
        // preadv/pwritev above), flushes, discard, and hot-plug opening an
        // image later (openat, flock, a block device's size ioctls below).
        // The log file rotating, the exit record and the hypervisor
        // console's file being renamed into place, and `pvh run` removing
        // its socket and directory at the end use openat, fchmod, rename,
        // unlink and rmdir too; Foundation's createFile(attributes:) (the
        // log's and the hypervisor console's rewrites) sets the mode with
        // chmod by path. None of these reaches more than openat already
        // does: what the process's uid owns, in a jail only the guest's
        // runtime directory (GuestProcessJail).
        rules += ["io_uring_setup", "io_uring_enter", "io_uring_register", "fsync", "fdatasync", "fallocate", "flock",
                  "ftruncate", "openat", "fchmod", "chmod", "fchmodat", "rename", "renameat", "renameat2", "unlink", "unlinkat", "rmdir"]
            .map(SyscallRule.allow)
        // Sockets: the daemon's store and console, the reattach listener
        // (SCM_RIGHTS from a new daemon), the metrics server (Unix or TCP),
        // passt's stream, a TAP's helper socket (SIOC* requests). Only the
        // families pvh uses.
        for family in [pvh_af_unix(), pvh_af_inet(), pvh_af_inet6()] {
            rules.append(.allowMasked("socket", argument: 0, mask: ~0, value: UInt64(family)))
        }
        rules.append(.allowMasked("socketpair", argument: 0, mask: ~0, value: UInt64(pvh_af_unix())))
        rules += ["accept", "accept4", "bind", "listen", "connect", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg",
                  "recvmmsg", "shutdown", "getsockopt", "setsockopt", "getsockname", "getpeername"].map(SyscallRule.allow)
        // ioctl on the request types pvh uses only (the second byte of the
        // request, _IOC_TYPE): KVM's (vCPU run/registers/interrupts, memory
        // slots, a rebuilt VM for `pvh run --on-reboot restart`), TUN and the
        // terminal ('T': TUNSETIFF, TCGETS, FIONBIO, FIONREAD), block devices
        // (0x12) and the socket interface requests (0x89).
        for type in [pvh_ioctl_type_kvm(), pvh_ioctl_type_tty_tun(), pvh_ioctl_type_block(), pvh_ioctl_type_socket()] {
            rules.append(.allowMasked("ioctl", argument: 1, mask: 0xff00, value: UInt64(type) << 8))
        }
        // Children: passt is ended and reaped (a pidfd to wait with a bound;
        // wait4 answers ECHILD for one the spawner started).
        rules += ["pidfd_open", "wait4", "waitid"].map(SyscallRule.allow)
        // Each vCPU thread stacks its own, stricter filter (vcpuRules) on
        // this one as it starts: seccomp(SECCOMP_SET_MODE_FILTER) with no
        // flags (no TSYNC: that thread only). A filter added can only take
        // away (seccomp(2): every filter runs, the strictest verdict wins).
        rules.append(.allowMaskedBoth("seccomp", ArgumentMatch(argument: 0, mask: ~0, value: UInt64(pvh_seccomp_set_mode_filter())),
                                      ArgumentMatch(argument: 1, mask: ~0, value: 0)))
        return rules
    }

    /// The vCPU threads' own filter, stacked on `rules` (docs/ARCHITECTURE.md:
    /// Sandbox): what a vCPU thread calls once its guest runs, measured with
    /// strace -f over the KVM scenarios (hypercalls, event channels, timers,
    /// SMP, console_io, block and network guests, shutdown and reboot, the
    /// software backend's fix-ups). A vCPU thread runs guest-driven code
    /// (every hypercall and exit handler), so it gets no file by name, no
    /// socket, no new thread (one it made would inherit this filter and then
    /// fail at a device's work: the hypervisor console's output has a
    /// thread of its own for that reason), no executable mapping, and only
    /// the KVM requests of a running vCPU.
    public static var vcpuRules: [SyscallRule] {
        var rules: [SyscallRule] = []
        // Memory (the Swift runtime's and glibc's allocations), never
        // executable: mmap and mprotect without PROT_EXEC.
        let exec = pvh_prot_exec()
        rules += ["brk", "munmap", "mremap", "madvise", "getrandom"].map(SyscallRule.allow)
        rules.append(.allowMasked("mmap", argument: 2, mask: exec, value: 0))
        rules.append(.allowMasked("mprotect", argument: 2, mask: exec, value: 0))
        // Locks and waits (SCHEDOP_block/poll sleep on a condition), clocks,
        // ids, thread names (PR_SET_NAME, PR_GET_NAME), the thread's end.
        rules += ["futex", "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "sched_yield",
                  "getpid", "gettid", "exit", "exit_group", "restart_syscall"].map(SyscallRule.allow)
        rules.append(.allowMasked("prctl", argument: 0, mask: ~0, value: 15))
        rules.append(.allowMasked("prctl", argument: 0, mask: ~0, value: 16))
        // Signals: the kick that ends KVM_RUN (its pending signal consumed
        // with rt_sigtimedwait), kicks of the other vCPUs, which are threads
        // of this process only (tgkill's tgid is this process's pid).
        rules += ["rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait", "rt_sigpending"].map(SyscallRule.allow)
        rules.append(.allowMasked("tgkill", argument: 0, mask: ~0, value: UInt64(UInt32(bitPattern: pvh_process_id()))))
        // Descriptors already open: the log's lines (a vCPU's errors, the
        // guest's rate-limited ones), fstat (glibc's is newfstatat with
        // AT_EMPTY_PATH), the log's truncation in place, close.
        rules += ["write", "writev", "lseek", "ftruncate", "close"].map(SyscallRule.allow)
        let emptyPath = pvh_at_empty_path()
        rules.append(.allowMasked("newfstatat", argument: 3, mask: emptyPath, value: emptyPath))
        // Files by name fail with EACCES instead of killing: the one path
        // that reaches them from a vCPU thread is the log's rotation by a
        // line it writes (LogFile), whose rename then fails and the file
        // starts over in place, as in the jail.
        for name in ["openat", "open", "creat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "stat", "lstat",
                     "statx", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "mkdir", "mkdirat"] {
            rules.append(.fail(name, errno: 13))  // EACCES
        }
        rules.append(.fail("newfstatat", errno: 13))
        // KVM: only a running vCPU's requests (CSeccomp's list), whole
        // request numbers (the kernel takes the low 32 bits).
        for index in 0..<pvh_vcpu_ioctl_count() {
            rules.append(.allowMasked("ioctl", argument: 1, mask: 0xFFFF_FFFF, value: pvh_vcpu_ioctl_request(index)))
        }
        return rules
    }

    /// Builds the filter from `rules` and loads it into every thread
    /// (TSYNC), after PR_SET_NO_NEW_PRIVS. Irreversible.
    public static func confine(mode: SandboxMode, rules: [SyscallRule] = rules) throws(SandboxError) {
        try build(mode: mode, rules: rules)
        let r = pvh_seccomp_load()
        guard r == 0 else { throw SandboxError(step: "seccomp_load", errno: -r) }
    }

    /// Builds the vCPU threads' filter from `vcpuRules` and keeps it for
    /// `confineVCPUThread` (each vCPU thread loads it itself as it starts).
    /// Before `confine`: exporting it needs a call the process filter forbids.
    public static func prepareVCPUFilter(mode: SandboxMode, rules: [SyscallRule] = vcpuRules) throws(SandboxError) {
        try build(mode: mode, rules: rules)
        let r = pvh_seccomp_keep_for_threads()
        guard r == 0 else { throw SandboxError(step: "exporting the vCPU filter", errno: -r) }
    }

    /// Whether `prepareVCPUFilter` kept a filter for the vCPU threads.
    public static var vcpuFilterPrepared: Bool { pvh_seccomp_has_kept_program() != 0 }

    /// Loads the kept vCPU filter into the calling thread only (no TSYNC),
    /// stacked on the process's. Irreversible for that thread.
    public static func confineVCPUThread() throws(SandboxError) {
        let r = pvh_seccomp_load_kept_into_thread()
        guard r == 0 else { throw SandboxError(step: "loading the vCPU filter", errno: -r) }
    }

    /// `PVH_SANDBOX_SELFTEST=vcpu-forbidden-syscall`: on a vCPU thread, a
    /// call the process filter allows and the vCPU filter does not
    /// (socket(AF_UNIX)). Under the vCPU filter the process dies of SIGSYS;
    /// without it the call succeeds and 0 comes back, else its errno.
    public static func issueVCPUForbiddenSystemCall() -> Int32 { -pvh_issue_vcpu_forbidden_syscall() }

    private static func build(mode: SandboxMode, rules: [SyscallRule]) throws(SandboxError) {
        var r = pvh_seccomp_begin(mode == .log ? 1 : 0)
        guard r == 0 else { throw SandboxError(step: "seccomp_init", errno: -r) }
        for rule in rules {
            // SAFETY: each call gets a NUL-terminated copy of the name that
            // Swift keeps alive for the call; the shim only reads it
            // (seccomp_syscall_resolve_name) and keeps no pointer to it.
            switch rule {
            case .allow(let name):
                r = unsafe pvh_seccomp_allow(name)
            case .allowMasked(let name, let argument, let mask, let value):
                r = unsafe pvh_seccomp_allow_masked(name, argument, mask, value)
            case .allowMaskedBoth(let name, let a, let b):
                r = unsafe pvh_seccomp_allow_masked2(name, a.argument, a.mask, a.value, b.argument, b.mask, b.value)
            case .fail(let name, let errno):
                r = unsafe pvh_seccomp_fail(name, errno)
            }
            guard r == 0 else { throw SandboxError(step: "seccomp_rule_add(\(rule.name))", errno: -r) }
        }
    }

    /// Drops every capability (bounding, ambient, effective, permitted,
    /// inheritable). A process without any has nothing to drop and succeeds.
    public static func dropCapabilities() throws(SandboxError) {
        let r = pvh_drop_capabilities()
        guard r == 0 else { throw SandboxError(step: "dropping capabilities", errno: -r) }
    }

    /// How many capabilities the calling thread still has in effect.
    public static var effectiveCapabilities: Int { Int(pvh_effective_capability_count()) }

    /// `PVH_SANDBOX_SELFTEST=forbidden-syscall`: one system call the filter
    /// forbids (an execve of a path that does not exist). Under the filter
    /// the process dies of SIGSYS and this never returns; without it, the
    /// call fails with ENOENT and the errno comes back.
    public static func issueForbiddenSystemCall() -> Int32 { -pvh_issue_forbidden_syscall() }

    /// SIGSYS: what a filtered process is killed with.
    public static var killSignal: Int32 { pvh_sigsys() }
}
