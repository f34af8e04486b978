import Foundation
@_exported import PVHAPIModels
import Toolstack

/// What the API serves, behind the router: the daemon implements it, the
/// tests fake it. Every method answers at once or within its own bound.
/// (`/metrics` is PVHMetrics' route on the same server; the XenStore's
/// routes are XenStoreRoutes'.)
public protocol DomainService: Sendable {
    func host() async -> HostInfo
    func domains() async -> [DomainInfo]
    func domain(named name: String) async throws(APIError) -> DomainInfo
    /// Starts a resolved config; 409 if its name or UUID is taken.
    func create(_ request: ResolvedCreateRequest) async throws(APIError) -> CreatedDomain
    /// Destroys the domain (its process stopped and reaped, bounded).
    func destroy(named name: String) async throws(APIError) -> DomainInfo
    /// Shutdown/reboot ask the guest through control/shutdown; pause and
    /// unpause stop and continue its process. `wait`: until the domain is
    /// gone (shutdown), restarted (reboot), at most `timeout` seconds.
    func perform(_ action: DomainAction, on name: String, wait: Bool, timeout: Double) async throws(APIError) -> DomainInfo?
    /// Every event from now on, until the consumer stops.
    func events() -> AsyncStream<DomainEvent>
}

