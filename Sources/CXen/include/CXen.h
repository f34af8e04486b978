// C shim: Xen's public ABI as its own headers define it (libxen-dev). Swift
// imports the structs and the layout constants derived from them here;
// nothing is re-typed by hand. Apart from CKVM (linux/kvm.h) so that the
// targets that speak Xen's ABI do not see KVM's, and the reverse.
#ifndef PVH_CXEN_H
#define PVH_CXEN_H

#include <stdint.h>
#include <stddef.h>

// We implement the hypervisor side of Xen's ABI, so we want the latest
// interface (xen-compat.h) and the hypervisor/toolstack-only constants.
// Without this, xen.h gives the legacy guest interface, in which
// __HYPERVISOR_sched_op is sched_op_compat (6) and __HYPERVISOR_event_channel_op
// is event_channel_op_compat (16), and the deprecated HVM_PARAM_* are hidden.
#ifndef __XEN_TOOLS__
#define __XEN_TOOLS__ 1
#endif

#include <xen/xen.h>
#include <xen/version.h>
#include <xen/sched.h>
#include <xen/memory.h>
#include <xen/vcpu.h>
#include <xen/event_channel.h>
#include <xen/grant_table.h>
#include <xen/elfnote.h>
#include <xen/errno.h>
#include <xen/hvm/hvm_op.h>
#include <xen/hvm/params.h>
#include <xen/hvm/hvm_vcpu.h>
#include <xen/arch-x86/cpuid.h>
#include <xen/arch-x86/hvm/start_info.h>

// Shared rings (io/ring.h) and the byte rings of the console (io/console.h)
// and XenStore (io/xs_wire.h). XenRing takes its layouts from these.
#include <xen/io/ring.h>
#include <xen/io/console.h>
// errno.h first: xs_wire.h defines its xsd_errors table (the XS_ERROR
// names) only when EINVAL is defined.
#include <errno.h>
#include <xen/io/xs_wire.h>
#include <xen/io/xenbus.h>

/// The number of entries in xs_wire.h's xsd_errors table.
static inline unsigned pvh_xsd_error_count(void) { return sizeof(xsd_errors) / sizeof(xsd_errors[0]); }
/// The errno name of xsd_errors[i] (what an XS_ERROR payload carries), or NULL.
static inline const char *pvh_xsd_error_name(unsigned i) {
    return i < pvh_xsd_error_count() ? xsd_errors[i].errstring : 0;
}

// ring.h defines the shared-ring header only through DEFINE_RING_TYPES; its
// layout does not depend on the entry types, so one instance with byte-sized
// entries gives the header offsets every ring shares.
DEFINE_RING_TYPES(pvh_layout, uint8_t, uint8_t);

enum {
    PVH_SRING_REQ_PROD_OFFSET = offsetof(struct pvh_layout_sring, req_prod),
    PVH_SRING_REQ_EVENT_OFFSET = offsetof(struct pvh_layout_sring, req_event),
    PVH_SRING_RSP_PROD_OFFSET = offsetof(struct pvh_layout_sring, rsp_prod),
    PVH_SRING_RSP_EVENT_OFFSET = offsetof(struct pvh_layout_sring, rsp_event),
    PVH_SRING_RING_OFFSET = offsetof(struct pvh_layout_sring, ring),

    PVH_XENCONS_SIZE = sizeof(struct xencons_interface),
    PVH_XENCONS_IN_OFFSET = offsetof(struct xencons_interface, in),
    PVH_XENCONS_IN_SIZE = sizeof(((struct xencons_interface *)0)->in),
    PVH_XENCONS_OUT_OFFSET = offsetof(struct xencons_interface, out),
    PVH_XENCONS_OUT_SIZE = sizeof(((struct xencons_interface *)0)->out),
    PVH_XENCONS_IN_CONS_OFFSET = offsetof(struct xencons_interface, in_cons),
    PVH_XENCONS_IN_PROD_OFFSET = offsetof(struct xencons_interface, in_prod),
    PVH_XENCONS_OUT_CONS_OFFSET = offsetof(struct xencons_interface, out_cons),
    PVH_XENCONS_OUT_PROD_OFFSET = offsetof(struct xencons_interface, out_prod),

    PVH_XENSTORE_SIZE = sizeof(struct xenstore_domain_interface),
    PVH_XENSTORE_REQ_OFFSET = offsetof(struct xenstore_domain_interface, req),
    PVH_XENSTORE_REQ_SIZE = sizeof(((struct xenstore_domain_interface *)0)->req),
    PVH_XENSTORE_RSP_OFFSET = offsetof(struct xenstore_domain_interface, rsp),
    PVH_XENSTORE_RSP_SIZE = sizeof(((struct xenstore_domain_interface *)0)->rsp),
    PVH_XENSTORE_REQ_CONS_OFFSET = offsetof(struct xenstore_domain_interface, req_cons),
    PVH_XENSTORE_REQ_PROD_OFFSET = offsetof(struct xenstore_domain_interface, req_prod),
    PVH_XENSTORE_RSP_CONS_OFFSET = offsetof(struct xenstore_domain_interface, rsp_cons),
    PVH_XENSTORE_RSP_PROD_OFFSET = offsetof(struct xenstore_domain_interface, rsp_prod),
    PVH_XENSTORE_SERVER_FEATURES_OFFSET = offsetof(struct xenstore_domain_interface, server_features),
    PVH_XENSTORE_CONNECTION_OFFSET = offsetof(struct xenstore_domain_interface, connection),
    PVH_XENSTORE_ERROR_OFFSET = offsetof(struct xenstore_domain_interface, error),
};

// Layout facts for Xen structs that hold guest handles (pointers). Swift's
// strict memory safety treats such imported structs as unsafe types, so the
// pointer-free targets (XenABI, Hypercalls) take their layout from these
// constants, which the compiler derives from the same headers.
enum {
    PVH_XEN_MEMORY_MAP_SIZE = sizeof(struct xen_memory_map),
    PVH_XEN_MEMORY_MAP_NR_ENTRIES_OFFSET = offsetof(struct xen_memory_map, nr_entries),
    PVH_XEN_MEMORY_MAP_BUFFER_OFFSET = offsetof(struct xen_memory_map, buffer),
    PVH_XEN_MEMORY_MAP_BUFFER_SIZE = sizeof(((struct xen_memory_map *)0)->buffer),

    PVH_XEN_MEMORY_RESERVATION_SIZE = sizeof(struct xen_memory_reservation),
    PVH_XEN_MEMORY_RESERVATION_EXTENT_START_OFFSET = offsetof(struct xen_memory_reservation, extent_start),
    PVH_XEN_MEMORY_RESERVATION_EXTENT_START_SIZE = sizeof(((struct xen_memory_reservation *)0)->extent_start),
    PVH_XEN_MEMORY_RESERVATION_NR_EXTENTS_OFFSET = offsetof(struct xen_memory_reservation, nr_extents),
    PVH_XEN_MEMORY_RESERVATION_NR_EXTENTS_SIZE = sizeof(((struct xen_memory_reservation *)0)->nr_extents),
    PVH_XEN_MEMORY_RESERVATION_EXTENT_ORDER_OFFSET = offsetof(struct xen_memory_reservation, extent_order),
    PVH_XEN_MEMORY_RESERVATION_MEM_FLAGS_OFFSET = offsetof(struct xen_memory_reservation, mem_flags),
    PVH_XEN_MEMORY_RESERVATION_DOMID_OFFSET = offsetof(struct xen_memory_reservation, domid),
    PVH_XEN_PFN_SIZE = sizeof(xen_pfn_t),

    PVH_SCHED_POLL_SIZE = sizeof(struct sched_poll),
    PVH_SCHED_POLL_PORTS_OFFSET = offsetof(struct sched_poll, ports),
    PVH_SCHED_POLL_PORTS_SIZE = sizeof(((struct sched_poll *)0)->ports),
    PVH_SCHED_POLL_NR_PORTS_OFFSET = offsetof(struct sched_poll, nr_ports),
    PVH_SCHED_POLL_TIMEOUT_OFFSET = offsetof(struct sched_poll, timeout),

    PVH_GNTTAB_SETUP_TABLE_SIZE = sizeof(struct gnttab_setup_table),
    PVH_GNTTAB_SETUP_TABLE_DOM_OFFSET = offsetof(struct gnttab_setup_table, dom),
    PVH_GNTTAB_SETUP_TABLE_NR_FRAMES_OFFSET = offsetof(struct gnttab_setup_table, nr_frames),
    PVH_GNTTAB_SETUP_TABLE_STATUS_OFFSET = offsetof(struct gnttab_setup_table, status),
    PVH_GNTTAB_SETUP_TABLE_FRAME_LIST_OFFSET = offsetof(struct gnttab_setup_table, frame_list),
    PVH_GNTTAB_SETUP_TABLE_FRAME_LIST_SIZE = sizeof(((struct gnttab_setup_table *)0)->frame_list),

    PVH_GNTTAB_GET_STATUS_FRAMES_SIZE = sizeof(struct gnttab_get_status_frames),
    PVH_GNTTAB_GET_STATUS_FRAMES_NR_FRAMES_OFFSET = offsetof(struct gnttab_get_status_frames, nr_frames),
    PVH_GNTTAB_GET_STATUS_FRAMES_DOM_OFFSET = offsetof(struct gnttab_get_status_frames, dom),
    PVH_GNTTAB_GET_STATUS_FRAMES_STATUS_OFFSET = offsetof(struct gnttab_get_status_frames, status),
    PVH_GNTTAB_GET_STATUS_FRAMES_FRAME_LIST_OFFSET = offsetof(struct gnttab_get_status_frames, frame_list),
    PVH_GNTTAB_GET_STATUS_FRAMES_FRAME_LIST_SIZE = sizeof(((struct gnttab_get_status_frames *)0)->frame_list),

    PVH_XEN_ADD_TO_PHYSMAP_BATCH_SIZE = sizeof(struct xen_add_to_physmap_batch),
    PVH_XEN_ADD_TO_PHYSMAP_BATCH_DOMID_OFFSET = offsetof(struct xen_add_to_physmap_batch, domid),
    PVH_XEN_ADD_TO_PHYSMAP_BATCH_SPACE_OFFSET = offsetof(struct xen_add_to_physmap_batch, space),
    PVH_XEN_ADD_TO_PHYSMAP_BATCH_COUNT_OFFSET = offsetof(struct xen_add_to_physmap_batch, size),
    PVH_XEN_ADD_TO_PHYSMAP_BATCH_EXTRA_OFFSET = offsetof(struct xen_add_to_physmap_batch, u),
    PVH_XEN_ADD_TO_PHYSMAP_BATCH_EXTRA_SIZE = sizeof(((struct xen_add_to_physmap_batch *)0)->u),
    PVH_XEN_ADD_TO_PHYSMAP_BATCH_IDXS_OFFSET = offsetof(struct xen_add_to_physmap_batch, idxs),
    PVH_XEN_ADD_TO_PHYSMAP_BATCH_GPFNS_OFFSET = offsetof(struct xen_add_to_physmap_batch, gpfns),
    PVH_XEN_ADD_TO_PHYSMAP_BATCH_ERRS_OFFSET = offsetof(struct xen_add_to_physmap_batch, errs),
    PVH_XEN_ADD_TO_PHYSMAP_BATCH_HANDLE_SIZE = sizeof(((struct xen_add_to_physmap_batch *)0)->idxs),
    PVH_XEN_ULONG_SIZE = sizeof(xen_ulong_t),

    PVH_VCPU_REGISTER_TIME_AREA_SIZE = sizeof(struct vcpu_register_time_memory_area),
    PVH_VCPU_REGISTER_RUNSTATE_AREA_SIZE = sizeof(struct vcpu_register_runstate_memory_area),
};

// Block devices (io/blkif.h), twice. First as the header is, which on this
// x86_64 host is the x86_64 ABI ("x86_64-abi", XEN_IO_PROTO_ABI_NATIVE).
// Then the x86_32 ABI ("x86_32-abi") that 32-bit frontends use: the same
// structs, laid out as the i386 C ABI does, where 64-bit fields are only
// 4-byte aligned (so `id` sits at 4, not 8). The compiler derives those
// offsets: blkif.h is included a second time under #pragma pack(4), with
// its struct and typedef names renamed, and with __i386__ defined so its own
// i386-only padding (blkif_request_indirect's trailing `pad`) is there, as
// Linux's xen-blkback common.h `blkif_x86_32_request_indirect` has it. Its
// include guard is dropped first; ring.h and grant_table.h keep theirs.
#include <xen/io/protocols.h>
#include <xen/io/blkif.h>

_Static_assert(sizeof(void *) == 8, "the native blkif ABI here is x86_64");

#undef __XEN_PUBLIC_IO_BLKIF_H__
#define blkif_request_segment pvh_blkif_x86_32_request_segment
#define blkif_request pvh_blkif_x86_32_request
#define blkif_request_t pvh_blkif_x86_32_request_t
#define blkif_request_discard pvh_blkif_x86_32_request_discard
#define blkif_request_discard_t pvh_blkif_x86_32_request_discard_t
#define blkif_request_indirect pvh_blkif_x86_32_request_indirect
#define blkif_request_indirect_t pvh_blkif_x86_32_request_indirect_t
#define blkif_response pvh_blkif_x86_32_response
#define blkif_response_t pvh_blkif_x86_32_response_t
#define blkif_sring_entry pvh_blkif_x86_32_sring_entry
#define blkif_sring pvh_blkif_x86_32_sring
#define blkif_sring_t pvh_blkif_x86_32_sring_t
#define blkif_front_ring pvh_blkif_x86_32_front_ring
#define blkif_front_ring_t pvh_blkif_x86_32_front_ring_t
#define blkif_back_ring pvh_blkif_x86_32_back_ring
#define blkif_back_ring_t pvh_blkif_x86_32_back_ring_t
#pragma pack(push, 4)
#ifndef __i386__
#define __i386__ 1
#define PVH_DEFINED_I386
#endif
#include <xen/io/blkif.h>
#ifdef PVH_DEFINED_I386
#undef __i386__
#undef PVH_DEFINED_I386
#endif
#pragma pack(pop)
#undef blkif_request_segment
#undef blkif_request
#undef blkif_request_t
#undef blkif_request_discard
#undef blkif_request_discard_t
#undef blkif_request_indirect
#undef blkif_request_indirect_t
#undef blkif_response
#undef blkif_response_t
#undef blkif_sring_entry
#undef blkif_sring
#undef blkif_sring_t
#undef blkif_front_ring
#undef blkif_front_ring_t
#undef blkif_back_ring
#undef blkif_back_ring_t

// The blkif layout constants, one set per ABI (X86_64: the header as is;
// X86_32: the packed second copy). BlockBackend decodes requests with them.
#define PVH_BLKIF_LAYOUT(P, REQ, SEG, DISCARD, INDIRECT, RSP, ENTRY) \
    P##_REQUEST_SIZE = sizeof(struct REQ), \
    P##_REQUEST_ALIGN = _Alignof(struct REQ), \
    P##_REQUEST_OPERATION_OFFSET = offsetof(struct REQ, operation), \
    P##_REQUEST_NR_SEGMENTS_OFFSET = offsetof(struct REQ, nr_segments), \
    P##_REQUEST_HANDLE_OFFSET = offsetof(struct REQ, handle), \
    P##_REQUEST_ID_OFFSET = offsetof(struct REQ, id), \
    P##_REQUEST_SECTOR_NUMBER_OFFSET = offsetof(struct REQ, sector_number), \
    P##_REQUEST_SEG_OFFSET = offsetof(struct REQ, seg), \
    P##_SEGMENT_SIZE = sizeof(struct SEG), \
    P##_SEGMENT_GREF_OFFSET = offsetof(struct SEG, gref), \
    P##_SEGMENT_FIRST_SECT_OFFSET = offsetof(struct SEG, first_sect), \
    P##_SEGMENT_LAST_SECT_OFFSET = offsetof(struct SEG, last_sect), \
    P##_DISCARD_SIZE = sizeof(struct DISCARD), \
    P##_DISCARD_FLAG_OFFSET = offsetof(struct DISCARD, flag), \
    P##_DISCARD_ID_OFFSET = offsetof(struct DISCARD, id), \
    P##_DISCARD_SECTOR_NUMBER_OFFSET = offsetof(struct DISCARD, sector_number), \
    P##_DISCARD_NR_SECTORS_OFFSET = offsetof(struct DISCARD, nr_sectors), \
    P##_INDIRECT_SIZE = sizeof(struct INDIRECT), \
    P##_INDIRECT_OP_OFFSET = offsetof(struct INDIRECT, indirect_op), \
    P##_INDIRECT_NR_SEGMENTS_OFFSET = offsetof(struct INDIRECT, nr_segments), \
    P##_INDIRECT_ID_OFFSET = offsetof(struct INDIRECT, id), \
    P##_INDIRECT_SECTOR_NUMBER_OFFSET = offsetof(struct INDIRECT, sector_number), \
    P##_INDIRECT_HANDLE_OFFSET = offsetof(struct INDIRECT, handle), \
    P##_INDIRECT_GREFS_OFFSET = offsetof(struct INDIRECT, indirect_grefs), \
    P##_RESPONSE_SIZE = sizeof(struct RSP), \
    P##_RESPONSE_ALIGN = _Alignof(struct RSP), \
    P##_RESPONSE_ID_OFFSET = offsetof(struct RSP, id), \
    P##_RESPONSE_OPERATION_OFFSET = offsetof(struct RSP, operation), \
    P##_RESPONSE_STATUS_OFFSET = offsetof(struct RSP, status), \
    P##_SRING_ENTRY_SIZE = sizeof(union ENTRY)

enum {
    PVH_BLKIF_LAYOUT(PVH_BLKIF_X86_64, blkif_request, blkif_request_segment, blkif_request_discard,
                     blkif_request_indirect, blkif_response, blkif_sring_entry),
    PVH_BLKIF_LAYOUT(PVH_BLKIF_X86_32, pvh_blkif_x86_32_request, pvh_blkif_x86_32_request_segment,
                     pvh_blkif_x86_32_request_discard, pvh_blkif_x86_32_request_indirect,
                     pvh_blkif_x86_32_response, pvh_blkif_x86_32_sring_entry),
    /// Bytes of the sring header before ring[0] (the same for both ABIs).
    PVH_BLKIF_SRING_RING_OFFSET = offsetof(struct blkif_sring, ring),
    PVH_BLKIF_X86_32_SRING_RING_OFFSET = offsetof(struct pvh_blkif_x86_32_sring, ring),
    /// Segments in one indirect page (blkif.h: PAGE_SIZE / sizeof(struct blkif_request_segment)).
    PVH_BLKIF_SEGMENTS_PER_INDIRECT_PAGE = (1 << XEN_PAGE_SHIFT) / sizeof(struct blkif_request_segment),
};

// Network devices (io/netif.h): the TX and RX rings' entries, the extra-info
// slot a TX request or RX response slot may hold instead, and the ring
// types netif.h defines with DEFINE_RING_TYPES. NetBackend takes every
// offset from here.
#include <xen/io/netif.h>

enum {
    PVH_NETIF_TX_REQUEST_SIZE = sizeof(struct netif_tx_request),
    PVH_NETIF_TX_REQUEST_ALIGN = _Alignof(struct netif_tx_request),
    PVH_NETIF_TX_REQUEST_GREF_OFFSET = offsetof(struct netif_tx_request, gref),
    PVH_NETIF_TX_REQUEST_OFFSET_OFFSET = offsetof(struct netif_tx_request, offset),
    PVH_NETIF_TX_REQUEST_FLAGS_OFFSET = offsetof(struct netif_tx_request, flags),
    PVH_NETIF_TX_REQUEST_ID_OFFSET = offsetof(struct netif_tx_request, id),
    PVH_NETIF_TX_REQUEST_SIZE_OFFSET = offsetof(struct netif_tx_request, size),
    PVH_NETIF_TX_RESPONSE_SIZE = sizeof(struct netif_tx_response),
    PVH_NETIF_TX_RESPONSE_ALIGN = _Alignof(struct netif_tx_response),
    PVH_NETIF_TX_RESPONSE_ID_OFFSET = offsetof(struct netif_tx_response, id),
    PVH_NETIF_TX_RESPONSE_STATUS_OFFSET = offsetof(struct netif_tx_response, status),
    PVH_NETIF_TX_SRING_ENTRY_SIZE = sizeof(union netif_tx_sring_entry),
    PVH_NETIF_RX_REQUEST_SIZE = sizeof(struct netif_rx_request),
    PVH_NETIF_RX_REQUEST_ALIGN = _Alignof(struct netif_rx_request),
    PVH_NETIF_RX_REQUEST_ID_OFFSET = offsetof(struct netif_rx_request, id),
    PVH_NETIF_RX_REQUEST_GREF_OFFSET = offsetof(struct netif_rx_request, gref),
    PVH_NETIF_RX_RESPONSE_SIZE = sizeof(struct netif_rx_response),
    PVH_NETIF_RX_RESPONSE_ALIGN = _Alignof(struct netif_rx_response),
    PVH_NETIF_RX_RESPONSE_ID_OFFSET = offsetof(struct netif_rx_response, id),
    PVH_NETIF_RX_RESPONSE_OFFSET_OFFSET = offsetof(struct netif_rx_response, offset),
    PVH_NETIF_RX_RESPONSE_FLAGS_OFFSET = offsetof(struct netif_rx_response, flags),
    PVH_NETIF_RX_RESPONSE_STATUS_OFFSET = offsetof(struct netif_rx_response, status),
    PVH_NETIF_RX_SRING_ENTRY_SIZE = sizeof(union netif_rx_sring_entry),
    PVH_NETIF_EXTRA_INFO_SIZE = sizeof(struct netif_extra_info),
    PVH_NETIF_EXTRA_INFO_ALIGN = _Alignof(struct netif_extra_info),
    PVH_NETIF_EXTRA_TYPE_OFFSET = offsetof(struct netif_extra_info, type),
    PVH_NETIF_EXTRA_FLAGS_OFFSET = offsetof(struct netif_extra_info, flags),
    PVH_NETIF_EXTRA_GSO_SIZE_OFFSET = offsetof(struct netif_extra_info, u.gso.size),
    PVH_NETIF_EXTRA_GSO_TYPE_OFFSET = offsetof(struct netif_extra_info, u.gso.type),
    PVH_NETIF_EXTRA_GSO_FEATURES_OFFSET = offsetof(struct netif_extra_info, u.gso.features),
};

_Static_assert(sizeof(struct netif_extra_info) <= sizeof(struct netif_tx_request),
               "an extra-info slot fits a TX request slot");
_Static_assert(sizeof(struct netif_extra_info) <= sizeof(struct netif_rx_response),
               "an extra-info slot fits an RX response slot");


#endif
