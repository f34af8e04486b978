/// What a port is bound to: Xen's `ECS_*` state and its payload
/// (xen/include/xen/sched.h struct evtchn).
public enum EventChannelBinding: Hashable, Sendable {
    /// `ECS_FREE`.
    case free
    /// `ECS_RESERVED`: port 0.
    case reserved
    /// `ECS_UNBOUND`: waiting for `remote` to bind.
    case unbound(remote: DomainID)
    /// `ECS_INTERDOMAIN`: connected to `remotePort` of `remote`.
    case interdomain(remote: DomainID, remotePort: EventChannelPort)
    /// `ECS_VIRQ`.
    case virq(VIRQ)
    /// `ECS_IPI`.
    case ipi

    /// Whether events can be set pending on it (Xen's `evtchn_usable`: state > ECS_RESERVED).
    public var isUsable: Bool {
        switch self {
        case .free, .reserved: false
        default: true
        }
    }
}

/// What EVTCHNOP_status reports for a port.
public struct EventChannelStatus: Hashable, Sendable {
    public var binding: EventChannelBinding
    /// The vCPU notified (`notify_vcpu_id`).
    public var vcpu: VCPUID
    public init(binding: EventChannelBinding, vcpu: VCPUID) {
        self.binding = binding
        self.vcpu = vcpu
    }
    /// `EVTCHNSTAT_*`: free and reserved ports are both "closed".
    public var code: EventChannelStatusCode {
        switch binding {
        case .free, .reserved: .closed
        case .unbound: .unbound
        case .interdomain: .interdomain
        case .virq: .virq
        case .ipi: .ipi
        }
    }
}
