/*
 * pvh test guest: the scenarios. Each returns NULL on success or a short
 * reason; main.c turns that into "PVHTEST <name> PASS|FAIL <reason>".
 * Expected results follow Xen's behaviour as documented in its public
 * headers (xen/...); errors are negative Xen errnos (xen/errno.h).
 */
#include "testguest.h"

/* Canonical but unmapped (PML4 slot 255 is empty, head.S) ... */
#define BAD_VA      ((void *)0x00007fff00000000UL)
/* ... and non-canonical. */
#define NONCANON_VA ((void *)0x8000000000000000UL)

/*
 * XENMEM_memory_map fills "the same format as returned by the BIOS INT 0x15
 * EAX=0xE820 call" (xen/memory.h): 20-byte packed entries. The public
 * headers have no struct for it.
 */
struct e820entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
} __attribute__((packed));

/* Page-aligned pages from hypercall.S/.pages, used by sharedinfo/vcpuinfo. */
extern uint8_t shared_info_ram_page[], vcpu_info_page[];


/* ---- startinfo: the hvm_start_info handed over in %ebx (pvh.pandoc) ---- */
static const char *scen_startinfo(void)
{
	const struct hvm_start_info *si = start_info;

	if (!phys_ok(pvh_start_info_pa, sizeof(*si)))
		return fail("start_info at 0x%x not addressable", pvh_start_info_pa);
	if (si->magic != XEN_HVM_START_MAGIC_VALUE)
		return fail("magic 0x%x", si->magic);
	printk("PVHINFO start_info at 0x%x: version %u flags 0x%x nr_modules %u "
	       "cmdline 0x%lx rsdp 0x%lx memmap 0x%lx x %u\n",
	       pvh_start_info_pa, si->version, si->flags, si->nr_modules,
	       (unsigned long)si->cmdline_paddr, (unsigned long)si->rsdp_paddr,
	       (unsigned long)si->memmap_paddr, si->memmap_entries);
	if (si->version < 1)
		return fail("version %u (memmap needs >= 1)", si->version);

	/* pvh.pandoc: cmdline_paddr is a NUL-terminated string (may be empty). */
	if (!phys_ok(si->cmdline_paddr, 1))
		return fail("command line at 0x%lx outside RAM", (unsigned long)si->cmdline_paddr);

	if (si->memmap_entries == 0)
		return fail("no memmap entries");
	size_t bytes = si->memmap_entries * sizeof(struct hvm_memmap_table_entry);
	if (!phys_ok(si->memmap_paddr, bytes))
		return fail("memmap at 0x%lx not addressable", (unsigned long)si->memmap_paddr);
	const struct hvm_memmap_table_entry *mm = PHYS(si->memmap_paddr);
	unsigned ram = 0;
	for (uint32_t i = 0; i < si->memmap_entries; i++) {
		printk("PVHINFO memmap[%u] 0x%lx+0x%lx type %u\n", i,
		       (unsigned long)mm[i].addr, (unsigned long)mm[i].size, mm[i].type);
		if (mm[i].type == XEN_HVM_MEMMAP_TYPE_RAM && mm[i].size)
			ram++;
	}
	if (!ram)
		return fail("no RAM entry in memmap");

	if (!si->rsdp_paddr)
		return fail("rsdp_paddr is 0");
	if (!phys_ok(si->rsdp_paddr, 8))
		return fail("rsdp 0x%lx not addressable", (unsigned long)si->rsdp_paddr);
	if (memcmp(PHYS(si->rsdp_paddr), "RSD PTR ", 8) != 0)
		return fail("no RSD PTR signature at 0x%lx", (unsigned long)si->rsdp_paddr);
	return NULL;
}

/* ---- version: xen_version sub-ops (xen/version.h) ---- */
static const char *scen_version(void)
{
	static xen_extraversion_t extra;
	static xen_capabilities_info_t caps;
	struct xen_feature_info fi = { .submap_idx = 0 };
	long rc;

	long v = xen_version(XENVER_version, NULL);
	if (v < 0)
		return fail("XENVER_version rc %ld", v);
	if ((v >> 16) < 4)
		return fail("XENVER_version 0x%lx: major < 4", v);
	if ((rc = xen_version(XENVER_extraversion, extra)) < 0)
		return fail("XENVER_extraversion rc %ld", rc);
	if ((rc = xen_version(XENVER_capabilities, caps)) < 0)
		return fail("XENVER_capabilities rc %ld", rc);
	if (strnlen(caps, sizeof(caps)) == 0)
		return fail("XENVER_capabilities empty");
	if ((rc = xen_version(XENVER_get_features, &fi)) < 0)
		return fail("XENVER_get_features rc %ld", rc);
	printk("PVHINFO xen %lu.%lu%.*s caps \"%.*s\" features[0] 0x%x\n",
	       (unsigned long)v >> 16, (unsigned long)v & 0xffff,
	       (int)sizeof(extra), extra, (int)sizeof(caps), caps, fi.submap);
	if ((rc = xen_version(XENVER_pagesize, NULL)) != 4096)
		return fail("XENVER_pagesize %ld", rc);
	return NULL;
}

/*
 * ---- console: one console_io write of more than 1 KiB ----
 * Exactly CONSOLE_LINES lines, line i (i = 00..19) being
 *   "PVHCONSOLE <ii> 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_\n"
 * (79 bytes each, 1580 bytes in total).
 */
#define CONSOLE_LINES 20
static const char console_pattern[] =
	"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";

static const char *scen_console(void)
{
	static char buf[CONSOLE_LINES * 80 + 1];
	size_t len = 0;

	for (int i = 0; i < CONSOLE_LINES; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len,
					"PVHCONSOLE %02d %s\n", i, console_pattern);
	if (len != CONSOLE_LINES * 79)
		return fail("built %lu bytes", (unsigned long)len);
	long rc = console_io(CONSOLEIO_write, len, buf);
	if (rc < 0)
		return fail("console_io rc %ld", rc);
	return NULL;
}

/* ---- memmap: XENMEM_memory_map vs. start_info's memmap ---- */
static const char *scen_memmap(void)
{
	static struct e820entry e820[64];
	struct xen_memory_map map = { .nr_entries = ARRAY_SIZE(e820) };
	set_xen_guest_handle(map.buffer, e820);

	long rc = memory_op(XENMEM_memory_map, &map);
	if (rc != 0)
		return fail("XENMEM_memory_map rc %ld", rc);
	if (map.nr_entries < 1 || map.nr_entries > ARRAY_SIZE(e820))
		return fail("nr_entries %u", map.nr_entries);

	const struct hvm_start_info *si = start_info;
	if (si->version < 1 || !si->memmap_entries ||
	    !phys_ok(si->memmap_paddr, si->memmap_entries * sizeof(struct hvm_memmap_table_entry)))
		return fail("no start_info memmap to compare with");
	if (map.nr_entries != si->memmap_entries)
		return fail("%u entries, start_info has %u", map.nr_entries, si->memmap_entries);
	const struct hvm_memmap_table_entry *mm = PHYS(si->memmap_paddr);
	for (unsigned i = 0; i < map.nr_entries; i++)
		if (e820[i].addr != mm[i].addr || e820[i].size != mm[i].size ||
		    e820[i].type != mm[i].type)
			return fail("entry %u: 0x%lx+0x%lx/%u vs start_info 0x%lx+0x%lx/%u", i,
				    (unsigned long)e820[i].addr, (unsigned long)e820[i].size,
				    e820[i].type, (unsigned long)mm[i].addr,
				    (unsigned long)mm[i].size, mm[i].type);
	return NULL;
}

/* ---- reservation: XENMEM_current_reservation (xen/memory.h) ---- */
static const char *scen_reservation(void)
{
	domid_t self = DOMID_SELF;
	long rc = memory_op(XENMEM_current_reservation, &self);
	if (rc <= 0)
		return fail("XENMEM_current_reservation rc %ld", rc);
	printk("PVHINFO current_reservation %ld pages\n", rc);
	return NULL;
}

/*
 * ---- sharedinfo / sharedinfo_hole: XENMEM_add_to_physmap of
 * XENMAPSPACE_shared_info, idx 0 (xen/memory.h), then use the page ----
 * Mapping it again moves it (the old frame is left behind), so the second
 * scenario does not depend on the first.
 */
static const char *map_shared_info(uint64_t pa)
{
	struct xen_add_to_physmap xatp = {
		.domid = DOMID_SELF,
		.space = XENMAPSPACE_shared_info,
		.idx = 0,
		.gpfn = pa >> 12,
	};
	long rc = memory_op(XENMEM_add_to_physmap, &xatp);
	if (rc != 0)
		return fail("add_to_physmap gpfn 0x%lx rc %ld", (unsigned long)(pa >> 12), rc);

	/* evtchn_mask is guest-written; use the last word (a channel nobody has). */
	volatile struct shared_info *s = PHYS(pa);
	size_t last = ARRAY_SIZE(s->evtchn_mask) - 1;
	xen_ulong_t old = s->evtchn_mask[last];
	s->evtchn_mask[last] = (xen_ulong_t)0x5a5aa5a5c3c33c3cULL;
	xen_ulong_t got = s->evtchn_mask[last];
	s->evtchn_mask[last] = old;
	if (got != (xen_ulong_t)0x5a5aa5a5c3c33c3cULL)
		return fail("wrote 0x5a5aa5a5c3c33c3c, read 0x%lx", (unsigned long)got);
	printk("PVHINFO shared_info at 0x%lx: wc_version %u\n", (unsigned long)pa,
	       s->wc_version);
	return NULL;
}

static const char *scen_sharedinfo(void)
{
	return map_shared_info((uintptr_t)shared_info_ram_page);
}

static const char *scen_sharedinfo_hole(void)
{
	return map_shared_info(SHARED_INFO_HOLE_PA);
}

/* ---- vcpuinfo: VCPUOP_register_vcpu_info (xen/vcpu.h) ---- */
static const char *scen_vcpuinfo(void)
{
	uint64_t pa = (uintptr_t)vcpu_info_page;
	struct vcpu_register_vcpu_info r = {
		.mfn = pa >> 12,	/* PVH: frame numbers are guest frames */
		.offset = PAGE_SIZE - sizeof(struct vcpu_info) / 2,
	};
	long rc;

	/*
	 * A vcpu_info that would straddle a page boundary is refused with
	 * -ENXIO (Xen's map_vcpu_info: offset > PAGE_SIZE - sizeof). Tried
	 * first: Xen also refuses any second registration with -EINVAL, and we
	 * want this one refused for the straddling alone.
	 */
	if ((rc = vcpu_op(VCPUOP_register_vcpu_info, 0, &r)) != -XEN_ENXIO)
		return fail("page-crossing offset 0x%x: rc %ld, want %d",
			    r.offset, rc, -XEN_ENXIO);
	r.offset = 64;
	if (vcpu0_info_registered) {
		/* events.c registered it already (scenario order): once only. */
		if ((rc = vcpu_op(VCPUOP_register_vcpu_info, 0, &r)) != -XEN_EINVAL)
			return fail("second registration: rc %ld, want %d", rc, -XEN_EINVAL);
		return NULL;
	}
	if ((rc = vcpu_op(VCPUOP_register_vcpu_info, 0, &r)) != 0)
		return fail("mfn 0x%lx offset %u: rc %ld", (unsigned long)r.mfn, r.offset, rc);
	/* Registration is once only: events.c uses this one from now on. */
	vcpu0_info = (struct vcpu_info *)(vcpu_info_page + r.offset);
	vcpu0_info_registered = 1;
	return NULL;
}

/* ---- hvmparam: HVMOP_get_param (xen/hvm/hvm_op.h, params.h) ---- */
static const char *get_param(const char *what, uint32_t index)
{
	struct xen_hvm_param p = { .domid = DOMID_SELF, .index = index };
	long rc = hvm_op(HVMOP_get_param, &p);
	printk("PVHINFO HVM_PARAM_%s: rc %ld value 0x%lx\n", what, rc,
	       (unsigned long)p.value);
	if (rc > 0 || rc < -4095)
		return fail("HVM_PARAM_%s rc %ld", what, rc);
	return NULL;
}

static const char *scen_hvmparam(void)
{
	const char *r;
	if ((r = get_param("STORE_PFN", HVM_PARAM_STORE_PFN)) ||
	    (r = get_param("CONSOLE_PFN", HVM_PARAM_CONSOLE_PFN)))
		return r;

	struct xen_hvm_param p = { .domid = DOMID_SELF, .index = HVM_NR_PARAMS };
	long rc = hvm_op(HVMOP_get_param, &p);
	if (rc != -XEN_EINVAL)
		return fail("index HVM_NR_PARAMS (%u): rc %ld, want %d",
			    HVM_NR_PARAMS, rc, -XEN_EINVAL);
	return NULL;
}

/* ---- hostile: bad numbers and bad pointers; we must get errors back ---- */
static const char *scen_hostile(void)
{
	long rc;

	if ((rc = hypercall(60, 0, 0, 0, 0, 0)) != -XEN_ENOSYS)
		return fail("hypercall 60: rc %ld, want %d", rc, -XEN_ENOSYS);
	if ((rc = xen_version(XENVER_extraversion, BAD_VA)) != -XEN_EFAULT)
		return fail("xen_version unmapped ptr: rc %ld", rc);
	if ((rc = xen_version(XENVER_extraversion, NONCANON_VA)) != -XEN_EFAULT)
		return fail("xen_version non-canonical ptr: rc %ld", rc);
	if ((rc = console_io(CONSOLEIO_write, 16, BAD_VA)) != -XEN_EFAULT)
		return fail("console_io unmapped ptr: rc %ld", rc);
	if ((rc = memory_op(XENMEM_memory_map, BAD_VA)) != -XEN_EFAULT)
		return fail("memory_map unmapped arg: rc %ld", rc);

	struct xen_memory_map map = { .nr_entries = 0x7fffffff };
	set_xen_guest_handle(map.buffer, BAD_VA);
	if ((rc = memory_op(XENMEM_memory_map, &map)) != -XEN_EFAULT)
		return fail("memory_map huge nr_entries, bad buffer: rc %ld", rc);

	if ((rc = sched_op(0x7fff, NULL)) != -XEN_ENOSYS && rc != -XEN_EINVAL)
		return fail("sched_op 0x7fff: rc %ld", rc);
	return NULL;
}

/*
 * ---- int3 / intn: software interrupts at CPL0 through our IDT ----
 * (On this host the VMM injects them because KVM cannot emulate them.)
 */
struct idt_gate {		/* 64-bit interrupt gate, Intel SDM vol. 3, 6.14.1 */
	uint16_t offset_lo;
	uint16_t selector;
	uint8_t ist;
	uint8_t type_attr;	/* P=1, DPL=0, type 0xE (interrupt gate) */
	uint16_t offset_mid;
	uint32_t offset_hi;
	uint32_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct idt_gate) == 16, "IDT gate size");

static struct idt_gate idt[256];

static void set_gate(unsigned vec, uint64_t handler)
{
	idt[vec] = (struct idt_gate){
		.offset_lo = (uint16_t)handler,
		.selector = GDT_CODE64,
		.ist = 0,
		.type_attr = 0x8e,
		.offset_mid = (uint16_t)(handler >> 16),
		.offset_hi = (uint32_t)(handler >> 32),
	};
}

void idt_init(void)
{
	for (unsigned v = 0; v < 32; v++)
		set_gate(v, exc_stubs[v]);
	set_gate(3, (uintptr_t)bp_handler);
	set_gate(0x80, (uintptr_t)int80_handler);
	/* External interrupts, used by events.c (interrupts stay off otherwise). */
	set_gate(UPCALL_VECTOR, (uintptr_t)upcall_entry);
	set_gate(LAPIC_TIMER_VECTOR, (uintptr_t)lapic_timer_entry);
	set_gate(SPURIOUS_VECTOR, (uintptr_t)spurious_entry);
	idt_load();
}

/* usermode.c: its own #UD/#GP/#PF gates for the scenario's duration. */
void idt_set_gate(unsigned vec, uint64_t handler)
{
	set_gate(vec, handler);
}

/*
 * usermode.c's trap scenarios: a gate with its DPL (who may reach it with
 * INT n, SDM vol. 3, 6.12.1.1) and IST index (6.14.5); handler 0 makes the
 * gate not present again.
 */
void idt_set_gate_dpl_ist(unsigned vec, uint64_t handler, unsigned dpl, unsigned ist)
{
	if (!handler) {
		idt[vec] = (struct idt_gate){ 0 };
		return;
	}
	set_gate(vec, handler);
	idt[vec].ist = (uint8_t)(ist & 7);
	idt[vec].type_attr = (uint8_t)(0x8e | (dpl & 3) << 5);
}

/* Also run by the secondary vCPU (events.c ap_main). */
void idt_load(void)
{
	struct __attribute__((packed)) { uint16_t limit; uint64_t base; } idtr = {
		sizeof(idt) - 1, (uintptr_t)idt
	};
	__asm__ volatile("lidt %0" : : "m"(idtr));
}

static const char *scen_int3(void)
{
	uint32_t before = bp_count;
	uint64_t next;

	__asm__ volatile("int3\n"
			 ".Lafter_int3%=:\n\t"
			 "lea .Lafter_int3%=(%%rip), %0"
			 : "=r"(next) : : "memory");
	if (bp_count != before + 1)
		return fail("#BP handler ran %u times", bp_count - before);
	if (bp_rip != next)
		return fail("#BP frame RIP 0x%lx, want 0x%lx", (unsigned long)bp_rip,
			    (unsigned long)next);
	return NULL;
}

static const char *scen_intn(void)
{
	uint32_t before = int80_count;
	uint64_t next;

	__asm__ volatile("int $0x80\n"
			 ".Lafter_int80%=:\n\t"
			 "lea .Lafter_int80%=(%%rip), %0"
			 : "=r"(next) : : "memory");
	if (int80_count != before + 1)
		return fail("vector 0x80 handler ran %u times", int80_count - before);
	if (int80_rip != next)
		return fail("frame RIP 0x%lx, want 0x%lx", (unsigned long)int80_rip,
			    (unsigned long)next);
	return NULL;
}

/* ---- hc32: check what head.S's 32-bit probe recorded ---- */
static const char *scen_hc32(void)
{
	if (!hc32_ran)
		return fail("32-bit probe did not run (no Xen CPUID in 32-bit mode?)");
	if (hc32_clobbered)
		return fail("hypercall changed EBX/ECX/EDX/ESI/EDI/EBP");
	if ((int32_t)hc32_result < 0)
		return fail("xen_version rc %d", (int32_t)hc32_result);
	long v = xen_version(XENVER_version, NULL);
	if (v < 0 || (uint32_t)v != hc32_result)
		return fail("32-bit result 0x%x, 64-bit 0x%lx", hc32_result, v);
	if ((hc32_result >> 16) < 4)
		return fail("version 0x%x: major < 4", hc32_result);
	return NULL;
}

const struct scenario scenarios[] = {
	{ "startinfo", scen_startinfo },
	{ "version", scen_version },
	{ "console", scen_console },
	{ "memmap", scen_memmap },
	{ "reservation", scen_reservation },
	{ "sharedinfo", scen_sharedinfo },
	{ "sharedinfo_hole", scen_sharedinfo_hole },
	{ "vcpuinfo", scen_vcpuinfo },
	{ "hvmparam", scen_hvmparam },
	{ "hostile", scen_hostile },
	{ "int3", scen_int3 },
	{ "intn", scen_intn },
	{ "hc32", scen_hc32 },
};
const size_t nr_scenarios = ARRAY_SIZE(scenarios);
