/// Every metric pvh exposes: its Prometheus name, help and type. One closed
/// set, so a name always has the same help text and type (the registry
/// refuses a second registration that differs) and the README's table has
/// one source. Names follow Prometheus' conventions
/// (https://prometheus.io/docs/practices/naming/): `pvh_` prefix, base
/// units, `_total` on counters.
public enum PVHMetric: String, CaseIterable, Sendable {
    // The domain (VMM's DomainMetrics).
    case domainVCPUs = "pvh_domain_vcpus"
    case domainMemoryBytes = "pvh_domain_memory_bytes"
    case hypercalls = "pvh_hypercalls_total"
    case hypercallPageInstalls = "pvh_hypercall_page_installs_total"
    case exits = "pvh_exits_total"
    case upcalls = "pvh_upcalls_total"
    case callbackVectorsQueued = "pvh_callback_vectors_queued_total"
    case vcpuBlocks = "pvh_vcpu_blocks_total"
    case emulationFailuresDelivered = "pvh_emulation_failures_delivered_total"
    case syscallsCompleted = "pvh_syscalls_completed_total"
    case userTrapsCompleted = "pvh_user_traps_completed_total"
    case vcpuSeconds = "pvh_vcpu_seconds_total"
    case hypercallsByNumber = "pvh_hypercalls_by_number_total"
    case exitsByReason = "pvh_exits_by_reason_total"
    case eventChannelSends = "pvh_event_channel_sends_total"
    // The PV console (ConsoleBackend's ConsoleMetrics).
    case consoleBytes = "pvh_console_bytes_total"
    // Each backend device in the runtime (DeviceRuntime's DeviceMetrics).
    case deviceGuestNotifications = "pvh_device_guest_notifications_total"
    case deviceHostRequests = "pvh_device_host_requests_total"
    case devicePumps = "pvh_device_pumps_total"
    case devicePumpsOnForbiddenThreads = "pvh_device_pumps_on_forbidden_threads_total"
    case deviceNotificationsToGuest = "pvh_device_notifications_to_guest_total"
    case deviceFaults = "pvh_device_faults_total"
    case deviceIgnoredAfterFault = "pvh_device_ignored_after_fault_total"
    // Block devices (BlockBackend's BlockMetrics).
    case blockRequests = "pvh_block_requests_total"
    case blockBytes = "pvh_block_bytes_total"
    case blockResponses = "pvh_block_error_responses_total"
    case blockErrors = "pvh_block_errors_total"
    case blockRequestsInFlight = "pvh_block_requests_in_flight"
    case blockInlineOperations = "pvh_block_inline_operations_total"
    // Network devices, per queue (NetBackend's NetMetrics).
    case netPackets = "pvh_net_packets_total"
    case netBytes = "pvh_net_bytes_total"
    case netGSOPackets = "pvh_net_gso_packets_total"
    case netSegmentedPackets = "pvh_net_segmented_packets_total"
    case netChecksumsCompleted = "pvh_net_checksums_completed_total"
    case netDrops = "pvh_net_drops_total"
    case netRXRingFull = "pvh_net_rx_ring_full_total"
    case netTXCreditWaits = "pvh_net_tx_credit_waits_total"
    // The metrics server itself (through swift-metrics).
    case scrapes = "pvh_metrics_scrapes_total"
    // The daemon's /metrics (its guests' scrapes).
    case guestScrapeFailures = "pvh_daemon_guest_scrape_failures_total"
    // The daemon's XenStore, per domain (XenStore's XenStoreRequestCounts).
    case xenStoreRequests = "pvh_xenstore_requests_total"
    case xenStoreErrors = "pvh_xenstore_errors_total"

    public enum Kind: Sendable { case counter, gauge }

    public var kind: Kind {
        switch self {
        case .domainVCPUs, .domainMemoryBytes, .blockRequestsInFlight: .gauge
        default: .counter
        }
    }

    /// The labels beyond `domain` and `domid` (README: Metrics).
    public var labels: String {
        switch self {
        case .domainVCPUs, .domainMemoryBytes, .hypercallPageInstalls, .exits, .callbackVectorsQueued, .vcpuBlocks,
             .emulationFailuresDelivered, .syscallsCompleted, .userTrapsCompleted:
            ""
        case .hypercalls: "transport (page, breakpoint, kvm)"
        case .upcalls: "outcome (injected, refused, owed_delivered)"
        case .vcpuSeconds: "vcpu, mode (user, system)"
        case .consoleBytes: "direction (output, input)"
        case .deviceGuestNotifications, .deviceHostRequests, .devicePumps, .devicePumpsOnForbiddenThreads,
             .deviceNotificationsToGuest, .deviceIgnoredAfterFault:
            "device"
        case .deviceFaults: "device, kind (any, hostile_guest)"
        case .blockRequests: "device, op (read, write, flush, barrier, discard, indirect, unknown)"
        case .blockBytes: "device, direction (read, write)"
        case .blockResponses: "device, status (error, not_supported)"
        case .blockErrors: "device, cause (rejected, host)"
        case .blockRequestsInFlight: "device"
        case .blockInlineOperations: "device"
        case .netPackets, .netBytes, .netGSOPackets, .netChecksumsCompleted: "device, queue, direction (tx, rx)"
        case .netSegmentedPackets, .netRXRingFull, .netTXCreditWaits: "device, queue"
        case .netDrops: "device, queue, reason (tx_bad_size, …, rx_not_connected)"
        case .scrapes: "none (not per domain)"
        case .hypercallsByNumber: "hypercall (Xen's name: memory_op, event_channel_op, …; other)"
        case .exitsByReason: "reason (io, mmio, wrmsr, debug, hlt, intr, irq_window_open, …)"
        case .eventChannelSends: ""
        case .guestScrapeFailures: "none (the daemon's own)"
        case .xenStoreRequests: "type (read, write, directory, watch, transaction_start, …, unknown); the daemon's"
        case .xenStoreErrors: "error (ENOENT, EACCES, EINVAL, …); the daemon's"
        }
    }

    public var help: String {
        switch self {
        case .domainVCPUs: "Virtual CPUs of the domain."
        case .domainMemoryBytes: "Guest memory of the domain, in bytes."
        case .hypercalls: "Hypercalls, by the transport they came through."
        case .hypercallPageInstalls: "Hypercall page installs (the guest's MSR writes)."
        case .exits: "KVM exits, all vCPUs."
        case .upcalls: "Event-channel upcalls to a vCPU's local APIC, by outcome."
        case .callbackVectorsQueued: "HVM_PARAM_CALLBACK_IRQ vectors queued as ExtINT."
        case .vcpuBlocks: "SCHEDOP_block calls that slept."
        case .emulationFailuresDelivered: "Emulation failures delivered to the guest's IDT (software KVM backend)."
        case .syscallsCompleted: "User SYSCALLs whose privilege change pvh finished (software KVM backend)."
        case .userTrapsCompleted: "User-mode int n, int1 and int3 (through a DPL0 gate) pvh delivered through the guest's IDT as the CPU would (software KVM backend)."
        case .vcpuSeconds: "Host CPU time of each vCPU thread, in seconds."
        case .consoleBytes: "PV console bytes: guest output written to the host, host input queued for the guest."
        case .deviceGuestNotifications: "Guest notifications (EVTCHNOP_send) on the device's event channels."
        case .deviceHostRequests: "Host-side requests for a pump of the device."
        case .devicePumps: "Pumps the device ran on its own execution contexts."
        case .devicePumpsOnForbiddenThreads: "Pumps that ran off the device's context or on a vCPU thread (0 unless a bug)."
        case .deviceNotificationsToGuest: "Events the device sent to the guest."
        case .deviceFaults: "Faults that disabled the device."
        case .deviceIgnoredAfterFault: "Guest notifications that arrived after the device was disabled."
        case .blockRequests: "Block requests taken off the rings, by operation."
        case .blockBytes: "Bytes read from or written to the disk for the guest."
        case .blockResponses: "Block responses that were not BLKIF_RSP_OKAY, by status."
        case .blockErrors: "Block error responses, by cause: a request rejected before I/O, or a host I/O error."
        case .blockRequestsInFlight: "Block requests taken but not yet answered."
        case .blockInlineOperations: "Block writes and flushes a queue ran on its own thread (the only request in flight) instead of submitting them."
        case .netPackets: "Packets moved between the frontend and the link, by direction (tx: from the guest)."
        case .netBytes: "Bytes moved between the frontend and the link, by direction."
        case .netGSOPackets: "Packets with a GSO extra, by direction."
        case .netSegmentedPackets: "GSO packets from the guest the backend cut into segments."
        case .netChecksumsCompleted: "Partial checksums the backend completed, by direction."
        case .netDrops: "Packets or frames dropped, by reason."
        case .netRXRingFull: "Times RX found too few posted buffers for the next frame."
        case .netTXCreditWaits: "Times a TX queue stopped for transmit credit (the vif's rate)."
        case .scrapes: "Scrapes of /metrics served."
        case .hypercallsByNumber: "Hypercalls, by hypercall."
        case .exitsByReason: "KVM exits, by exit reason."
        case .eventChannelSends: "EVTCHNOP_send calls from the guest."
        case .guestScrapeFailures: "Guest processes skipped in a scrape of the daemon's /metrics: no answer in time, or not valid exposition."
        case .xenStoreRequests: "XenStore requests the domain's connections sent the daemon's store, by type."
        case .xenStoreErrors: "XenStore requests of the domain's connections answered with an error, by errno name."
        }
    }
}
