// swift-tools-version: 6.2
// pvh: a VMM on Linux KVM that runs Xen PVH guests. One target per concern;
// dependencies point downward only (see ../shared/style-guide.md §1).
import PackageDescription

/// Targets that must not touch pointers: the compiler checks it.
let safeSettings: [SwiftSetting] = [.strictMemorySafety()]

/// Safe targets whose generic code runs once per ring slot in the targets
/// above them (`SharedRing<Request, Response>` instantiated with a backend's
/// own slot types): cross-module optimization lets those callers specialize
/// it. Unspecialized, every slot taken or answered looked up the generic
/// metadata of the ring's types at run time (perf: `swift_getGenericMetadata`
/// under `pvh-bench net`'s TX pump).
let slotPathSettings: [SwiftSetting] = safeSettings + [.unsafeFlags(["-cross-module-optimization"])]

let package = Package(
    name: "pvh",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "pvh", targets: ["pvh"]),
        // The pure libraries the fuzz targets drive (Fuzz/Package.swift
        // depends on this package by path and builds them with
        // -sanitize=fuzzer); nothing else uses this product.
        .library(
            name: "PVHFuzzable",
            targets: ["XenStore", "XLConfig", "DeviceSpecs", "Hypercalls", "PVHBoot", "GuestMemory", "XenABI",
                      "EventChannels", "GrantTables", "XenRing", "XenBus", "HostIO", "BlockBackend",
                      "BlockFrontend", "NetBackend", "NetFrontend", "PVHAPIModels", "Locking"]),
    ],
    // scripts/sanitize.sh address|thread builds under AddressSanitizer or
    // ThreadSanitizer (the instrumentation itself: the loop at the end);
    // under ThreadSanitizer `Lock` also tells it where it is taken and
    // released (TSanAnnotations, Sources/Locking).
    traits: [
        .trait(name: "TSanAnnotations", description: "Annotate Lock for ThreadSanitizer (sanitizer builds only)."),
        .trait(name: "ThreadSanitizer", description: "Build this package's targets under ThreadSanitizer (scripts/sanitize.sh thread).",
               enabledTraits: ["TSanAnnotations"]),
        .trait(name: "AddressSanitizer", description: "Build this package's targets under AddressSanitizer (scripts/sanitize.sh address)."),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // Metrics (issue 12 item 5): the API, its Prometheus backend, and the
        // HTTP server that serves /metrics.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        // swift-log: Hummingbird logs through it; pvh gives it a handler.
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // swift-service-lifecycle: Hummingbird runs as a Service; its
        // ServiceGroup stops the server gracefully.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // SwiftNIO (already resolved through Hummingbird): the API client's
        // HTTP/1 codec over the daemon's Unix socket.
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
    ],
    targets: [
        // C shim: linux/kvm.h and the non-variadic ioctl wrappers.
        .target(name: "CKVM"),
        // C shim: Xen's public headers and the layout constants derived from them.
        .target(name: "CXen"),
        // C shim: ThreadSanitizer's mutex annotations (compiler-rt's
        // sanitizer/tsan_interface.h); they do nothing in other builds.
        .target(name: "CTSan"),
        // Lock: Synchronization.Mutex, annotated for ThreadSanitizer under
        // the TSanAnnotations trait (its futex hand-over is invisible to it).
        .target(name: "Locking", dependencies: ["CTSan"], swiftSettings: safeSettings),
        // C shim for the host-I/O layer: Linux file APIs Glibc does not export,
        // block-device ioctls, and liburing (Debian's liburing-dev) for io_uring.
        .target(name: "CHostIO", linkerSettings: [.linkedLibrary("uring")]),
        // C shim over the system decompressors (zlib, xz/lzma, bzip2, lz4, zstd).
        .target(
            name: "CDecompress",
            linkerSettings: [
                .linkedLibrary("z"), .linkedLibrary("lzma"), .linkedLibrary("bz2"),
                .linkedLibrary("lz4"), .linkedLibrary("zstd"),
            ]),
        // C shim for the guest process's sandbox: libseccomp (Debian's
        // libseccomp-dev) and the capability calls (linux/capability.h).
        .target(name: "CSeccomp", linkerSettings: [.linkedLibrary("seccomp")]),
        // The guest process's sandbox (issue 13 item 4): its seccomp filter,
        // the capability drop, the test-only forbidden call.
        .target(name: "Sandbox", dependencies: ["CSeccomp"], swiftSettings: safeSettings),
        // Guest physical memory: the protocol, bounds-checked accessors, the mmap implementation.
        .target(name: "GuestMemory", dependencies: ["Locking"]),
        // Xen ABI: typed IDs, hypercall numbers, errno, layouts taken from Xen's headers.
        .target(name: "XenABI", dependencies: ["CXen", "GuestMemory"], swiftSettings: safeSettings),
        // KVM: system / VM / vCPU objects, exits, capabilities, CPUID. The only caller of ioctl.
        .target(name: "KVM", dependencies: ["Locking", "CKVM", "GuestMemory"]),
        // PVH loader: ELF, notes, bzImage, start_info, memory map, ACPI.
        .target(name: "PVHBoot", dependencies: ["CXen", "GuestMemory", "XenABI", "CDecompress"], swiftSettings: safeSettings),
        // Event channels: the per-domain port state machine and 2-level delivery into guest memory.
        .target(name: "EventChannels", dependencies: ["Locking", "GuestMemory", "XenABI"], swiftSettings: safeSettings),
        // Grant tables: the per-domain table in guest memory, the guest's grant_table_op
        // and add_to_physmap placement, and the backend side (map, copy).
        .target(name: "GrantTables", dependencies: ["Locking", "GuestMemory", "XenABI"], swiftSettings: safeSettings),
        // Hypercall decoding and dispatch to service protocols.
        .target(name: "Hypercalls", dependencies: ["Locking", "GuestMemory", "XenABI"], swiftSettings: safeSettings),
        // The only shared-ring implementation: byte rings (console, XenStore) and
        // request/response rings (io/ring.h), backend side and the frontend side
        // fixtures use, over guest memory.
        .target(name: "XenRing", dependencies: ["CXen", "GuestMemory"], swiftSettings: slotPathSettings),
        // Xen's PV clock (vcpu_time_info, wallclock) and per-vCPU timers, pure.
        .target(name: "PVTime", dependencies: ["Locking", "CXen", "GuestMemory", "XenABI"], swiftSettings: safeSettings),
        // The device runtime every PV backend runs on: an execution context (thread)
        // per device or queue, the backend event channel, the one fault path.
        .target(name: "DeviceRuntime", dependencies: ["Locking", "EventChannels", "XenABI", "XenRing"], swiftSettings: safeSettings),
        // The PV console backend: the xencons ring over an interdomain event channel.
        .target(name: "ConsoleBackend", dependencies: ["Locking", "DeviceRuntime", "XenRing", "EventChannels", "GuestMemory", "XenABI"], swiftSettings: safeSettings),
        // XenStore: the pure core (tree, transactions, watches, permissions, quotas),
        // the wire codec, the server and the guest's ring transport.
        .target(name: "XenStore", dependencies: ["Locking", "CXen", "XenABI", "GuestMemory", "XenRing", "EventChannels", "DeviceRuntime"], swiftSettings: safeSettings),
        // xenbus: the toolstack's per-domain XenStore tree and the frontend/backend
        // handshake every PV device backend (console, block, net) runs.
        .target(name: "XenBus", dependencies: ["Locking", "CXen", "XenABI", "XenStore"], swiftSettings: safeSettings),
        // The one host-I/O layer: block I/O between backing files and guest pages
        // (io_uring, a thread pool, a synchronous reference engine).
        .target(name: "HostIO", dependencies: ["Locking", "CHostIO", "GuestMemory", "DeviceSpecs"], swiftSettings: safeSettings),
        // Device specifications as xl writes them (xl-disk-configuration(5)), pure parsers.
        .target(name: "DeviceSpecs", swiftSettings: safeSettings),
        // xl.cfg files (xl.cfg(5)): libxlu's grammar, xl create's overrides,
        // and the resolved PVH domain configuration, pure.
        .target(name: "XLConfig", dependencies: ["DeviceSpecs"], swiftSettings: safeSettings),
        // The PV block backend (blkif): the xenbus handshake, multi-queue,
        // multi-page rings, requests validated and served through HostIO
        // straight into granted guest pages.
        .target(name: "BlockBackend", dependencies: ["Locking", "CXen", "XenABI", "GuestMemory", "XenRing", "GrantTables", "DeviceRuntime", "EventChannels", "XenBus", "XenStore", "HostIO"], swiftSettings: safeSettings),
        // A blkif frontend over guest memory for benchmarks and tests: a guest
        // domain without a VM (memory, grant table, event channels, store),
        // its grants, rings and requests, the handshake, waits on its port.
        .target(name: "BlockFrontend", dependencies: ["Locking", "BlockBackend", "DeviceRuntime", "EventChannels", "GrantTables", "GuestMemory", "XenABI", "XenBus", "XenRing", "XenStore"], swiftSettings: safeSettings),
        // The PV network backend (netif): the xenbus handshake, multi-queue,
        // split event channels, TX from granted pages straight to a HostIO
        // NetworkLink, RX copied into the frontend's posted buffers.
        .target(name: "NetBackend", dependencies: ["Locking", "CXen", "XenABI", "GuestMemory", "XenRing", "GrantTables", "DeviceRuntime", "EventChannels", "XenBus", "XenStore", "HostIO"], swiftSettings: safeSettings),
        // A netif frontend over guest memory for benchmarks and tests (in
        // BlockFrontend's guest): rings, posted buffers, packets, the handshake.
        .target(name: "NetFrontend", dependencies: ["NetBackend", "BlockFrontend", "EventChannels", "GuestMemory", "XenABI", "XenBus", "XenRing", "XenStore"], swiftSettings: safeSettings),
        // pvh's logging on swift-log: the handler (one line per record, the
        // guest's label), size-capped log files, where a guest's log goes.
        .target(name: "PVHLogging", dependencies: ["Locking", "XenABI", .product(name: "Logging", package: "swift-log")], swiftSettings: safeSettings),
        // Wiring: vCPU threads, exit handling, transports.
        .target(name: "VMM", dependencies: ["Locking", "BlockBackend", "NetBackend", "HostIO", "DeviceSpecs", "KVM", "GuestMemory", "XenABI", "PVHBoot", "Hypercalls", "EventChannels", "GrantTables", "ConsoleBackend", "PVTime", "XenStore", "XenBus", "DeviceRuntime", "PVHLogging", .product(name: "Logging", package: "swift-log")], swiftSettings: safeSettings),
        // Metrics: a running domain's counters as Prometheus metrics, collected
        // at scrape time, and the HTTP server that serves them at /metrics.
        .target(
            name: "PVHMetrics",
            dependencies: ["Locking", 
                "VMM", "BlockBackend", "NetBackend", "ConsoleBackend", "DeviceRuntime", "XenABI", "PVHLogging",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: safeSettings),
        // The toolstack's model, pure: the domain registry (ids, names,
        // UUIDs), states and xl's flags, pvh list's table, the shutdown-action
        // policy and the guest process's exit contract, the event type, the
        // guest launch description.
        .target(name: "Toolstack", dependencies: ["XLConfig", "XenABI"], swiftSettings: safeSettings),
        // The API's JSON models (requests, answers, the error JSON) and the
        // create request's resolution, without Hummingbird: the fuzz
        // package's apijson target builds them alone, instrumented.
        .target(name: "PVHAPIModels", dependencies: ["XLConfig"], swiftSettings: safeSettings),
        // The daemon's HTTP API on Hummingbird: routes and the services
        // behind them; served beside PVHMetrics' /metrics
        // (docs/api/openapi.json). Re-exports PVHAPIModels.
        .target(
            name: "PVHAPI",
            dependencies: ["Locking", "PVHAPIModels", "Toolstack", "XenStore", .product(name: "Hummingbird", package: "hummingbird")],
            swiftSettings: safeSettings),
        // The API's client for the CLI: NIO's HTTP/1 client codec over the
        // daemon's Unix socket.
        .target(
            name: "PVHAPIClient",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: safeSettings),
        // The daemon's side of a domain's PV console (xenconsoled's part for
        // `xl console`): the bounded buffer, one socket client at a time, the
        // HTTP readers.
        .target(name: "ConsoleRelay", dependencies: ["Locking", "PVHAPI", "Toolstack", "VMM"], swiftSettings: safeSettings),
        .executableTarget(
            name: "pvh",
            dependencies: ["Locking", "DeviceSpecs", "VMM", "KVM", "XenStore", "XenABI", "XenBus", "XLConfig", "PVHMetrics", "PVHLogging", "Toolstack", "PVHAPI", "PVHAPIClient", "HostIO", "Sandbox", "ConsoleRelay",
                           .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Logging", package: "swift-log")]),
        // Benchmarks: pvh beside its reference (bare KVM exit, host decompressors, fio).
        .executableTarget(name: "pvh-bench", dependencies: ["Locking", "CHostIO", "VMM", "KVM", "PVHBoot", "GuestMemory", "XenStore", "Hypercalls", "BlockBackend", "BlockFrontend", "DeviceRuntime", "NetBackend", "NetFrontend", "HostIO", "XenABI", "XenBus"]),
        // Test helpers: mock guest memory, ELF fixture builder. Imported by tests only.
        .target(name: "TestSupport", dependencies: ["Locking", "GuestMemory", "XenABI", "EventChannels", "XenRing", "PVTime"]),

        .testTarget(name: "LockingTests", dependencies: ["Locking"]),
        .testTarget(name: "GuestMemoryTests", dependencies: ["GuestMemory", "TestSupport"]),
        .testTarget(name: "HostIOTests", dependencies: ["Locking", "HostIO", "GuestMemory"]),
        .testTarget(name: "XenABITests", dependencies: ["XenABI"]),
        .testTarget(name: "DeviceSpecsTests", dependencies: ["DeviceSpecs"]),
        .testTarget(name: "XLConfigTests", dependencies: ["XLConfig", "DeviceSpecs"]),
        .testTarget(name: "KVMTests", dependencies: ["KVM", "GuestMemory"]),
        .testTarget(name: "PVHBootTests", dependencies: ["PVHBoot", "TestSupport", "XenABI", "GuestMemory"]),
        .testTarget(name: "HypercallsTests", dependencies: ["Locking", "Hypercalls", "GrantTables", "EventChannels", "PVTime", "TestSupport", "XenABI", "GuestMemory"]),
        .testTarget(name: "XenRingTests", dependencies: ["XenRing", "TestSupport", "GuestMemory"]),
        .testTarget(name: "PVTimeTests", dependencies: ["Locking", "PVTime", "TestSupport", "XenABI", "GuestMemory"]),
        .testTarget(name: "GrantTablesTests", dependencies: ["Locking", "GrantTables", "TestSupport", "XenABI", "GuestMemory"]),
        .testTarget(name: "EventChannelsTests", dependencies: ["Locking", "EventChannels", "TestSupport", "XenABI", "GuestMemory"]),
        .testTarget(name: "DeviceRuntimeTests", dependencies: ["Locking", "DeviceRuntime", "EventChannels", "Hypercalls", "XenRing", "XenBus", "XenStore", "ConsoleBackend", "TestSupport", "XenABI", "GuestMemory"]),
        .testTarget(name: "ConsoleBackendTests", dependencies: ["Locking", "ConsoleBackend", "DeviceRuntime", "EventChannels", "XenRing", "TestSupport", "XenABI", "GuestMemory"]),
        .testTarget(name: "XenStoreTests", dependencies: ["Locking", "XenStore", "DeviceRuntime", "CXen", "EventChannels", "XenRing", "TestSupport", "XenABI", "GuestMemory"]),
        .testTarget(name: "XenBusTests", dependencies: ["Locking", "XenBus", "XenStore", "XenABI", "VMM"]),
        .testTarget(name: "BlockBackendTests", dependencies: ["Locking", "BlockBackend", "BlockFrontend", "CXen", "DeviceRuntime", "EventChannels", "GrantTables", "GuestMemory", "HostIO", "TestSupport", "VMM", "XenABI", "XenBus", "XenRing", "XenStore"]),
        .testTarget(name: "NetBackendTests", dependencies: ["Locking", "NetBackend", "NetFrontend", "BlockFrontend", "GuestMemory", "HostIO", "TestSupport", "VMM", "XenABI", "XenBus", "XenRing", "XenStore"]),
        .testTarget(name: "VMMTests", dependencies: ["Locking", "VMM", "PVHLogging", "DeviceSpecs", "DeviceRuntime", "KVM", "PVHBoot", "XenABI", "GuestMemory", "CXen", "EventChannels", "TestSupport", "XenStore"]),
        .testTarget(name: "PVHLoggingTests", dependencies: ["PVHLogging", "XenABI", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "PVHMetricsTests", dependencies: ["Locking", "PVHMetrics", "VMM", "BlockBackend", "NetBackend", "DeviceRuntime", "ConsoleBackend", "XenABI"]),
        .testTarget(name: "ConsoleRelayTests", dependencies: ["ConsoleRelay", "PVHAPI", "VMM"]),
        .testTarget(name: "ToolstackTests", dependencies: ["Toolstack", "XLConfig", "XenABI"]),
        .testTarget(name: "PVHAPITests", dependencies: ["Locking", "PVHAPI", "PVHAPIClient", "PVHMetrics", "Toolstack", "XLConfig", "XenABI", "XenStore"]),
        .testTarget(name: "IntegrationTests", dependencies: ["Locking", "VMM", "DeviceSpecs", "KVM", "GrantTables", "GuestMemory", "XenABI", "XenStore"]),
    ]
)

// The sanitizer traits instrument every target of this package, Swift and
// C (the shims), and link the sanitizer's runtime into every product, as
// SwiftPM's `--sanitize` does, but leave the dependencies (SwiftNIO,
// Hummingbird, swift-crypto's and swift-nio-ssl's BoringSSL) as a normal
// debug build compiles them. `--sanitize` instruments those too: a
// sanitizer build then shares nothing with the debug build and recompiles
// every dependency, BoringSSL's C twice over, which is most of its time.
// Uninstrumented code is still run under the sanitizer's runtime (its
// malloc and its pthread and libc interceptors), but its own memory
// accesses are not checked: the same as for the Swift runtime, Foundation
// and the test library, which no build instruments (docs/ARCHITECTURE.md,
// Sanitizers).
for (trait, swiftFlag, cFlag) in [("ThreadSanitizer", "-sanitize=thread", "-fsanitize=thread"),
                                  ("AddressSanitizer", "-sanitize=address", "-fsanitize=address")] {
    let when = BuildSettingCondition.when(traits: [trait])
    for target in package.targets {
        target.swiftSettings = (target.swiftSettings ?? []) + [.unsafeFlags([swiftFlag], when)]
        target.cSettings = (target.cSettings ?? []) + [.unsafeFlags([cFlag], when)]
        target.linkerSettings = (target.linkerSettings ?? []) + [.unsafeFlags([swiftFlag], when)]
    }
}
