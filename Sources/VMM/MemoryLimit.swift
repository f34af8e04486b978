import Logging
import XenStore

/// The toolstack's memory cap (`pvh mem-max`, `xl mem-max`): xl writes
/// `memory/static-max` and sets the domain's page limit with
/// XEN_DOMCTL_max_mem (libxl_domain_setmaxmem in tools/libs/light/
/// libxl_mem.c). Here the store is the one channel from the toolstack to
/// this process, so the node is the request: a watch on it sets the
/// reservation's limit, which XENMEM_populate_physmap and
/// increase_reservation check (MemoryReservation), and which
/// XENMEM_maximum_reservation reports.
///
/// Only dom0 can write the node: `memory` is one of the directories the
/// guest may only read (DomainStoreLayout.guestReadable, libxl's
/// `roperm`), so a guest cannot raise its own cap.
extension Domain {
    /// Starts applying `memory/static-max` (KiB, decimal) as the page
    /// limit, now and on each change, until `unwatch`. A value that is not
    /// a KiB count is ignored with a warning (the limit stays).
    public func watchMemoryLimit() -> XenStoreWatchID? {
        let path = storeLayout.home + "/memory/static-max"
        let store = self.store, reservation = self.reservation, logger = self.logger
        do {
            return try store.watch(path, token: "pvh-static-max") { _, _ in
                // Read on the store's delivery queue, never a vCPU thread.
                guard let text = try? store.read(path) else { return }  // removed: the domain is going
                guard let pages = Self.pages(kibibytes: text) else {
                    logger.warning("memory/static-max \"\(text.prefix(32))\": not a size in KiB; the limit stays")
                    return
                }
                guard pages != reservation.maximumPages else { return }
                reservation.setMaximumPages(pages)
                logger.notice("memory limit: \(pages) pages (memory/static-max \(text) KiB)")
            }
        } catch {
            logger.warning("cannot watch \(path): \(error); mem-max does not apply")
            return nil
        }
    }

    /// KiB as the store holds them (libxl writes `%PRIu64`), as 4 KiB
    /// pages, rounded down; nil for anything else.
    static func pages(kibibytes text: String) -> UInt64? {
        guard !text.isEmpty, text.utf8.count <= 20, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }),
              let kib = UInt64(text) else { return nil }
        return kib / 4
    }
}
