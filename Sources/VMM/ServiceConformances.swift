import EventChannels
import GrantTables
import Hypercalls
import PVTime

// The hypercall layer names the services it needs as protocols and knows
// nothing of their implementations (Hypercalls depends on XenABI and
// GuestMemory only); the wiring layer says which type serves which.

/// `event_channel_op`, SCHEDOP_poll and the upcall assertions.
extension EventChannelTable: EventChannelService {}
/// Xen time and timers (`vcpu_op` timers, `set_timer_op`, time areas).
extension DomainTimers: TimeService {}
/// `grant_table_op` and XENMAPSPACE_grant_table.
extension GrantTable: GrantTableService {}
