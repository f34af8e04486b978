/*
 * Benchmark loops, run only when named on the command line:
 *   pvh.scenarios=bench_exit,bench_hypercall pvh.bench=N
 * Each does N round trips to the VMM and prints
 *   PVHBENCH <name> iterations=<N> cycles=<TSC cycles> tsc_khz=<kHz>
 * with the TSC frequency from Xen's time leaf (arch-x86/cpuid.h: leaf
 * base+3, sub-leaf 0, ECX = TSC kHz). The host converts to nanoseconds.
 */
#include "testguest.h"

static unsigned long iterations(void)
{
	size_t len;
	const char *v = cmdline_opt("pvh.bench=", &len);
	unsigned long n = 0;
	for (size_t i = 0; v && i < len && v[i] >= '0' && v[i] <= '9'; i++)
		n = n * 10 + (unsigned long)(v[i] - '0');
	return n ? n : 1000;
}

/* Raw leaf base+3 ECX (0 if unknown: the host then reports no ns figure). */
static uint32_t leaf_tsc_khz(void)
{
	uint32_t a, b, c = 0, d, base = xen_cpuid_base();
	if (base) {
		__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d)
				 : "a"(base + 3), "c"(0));
	}
	return c;
}

static void report(const char *name, unsigned long n, uint64_t cycles)
{
	printk("PVHBENCH %s iterations=%lu cycles=%lu tsc_khz=%u\n", name, n,
	       (unsigned long)cycles, leaf_tsc_khz());
}

/*
 * A bare exit: an OUT to a port no device owns; the VMM drops it. Eight per
 * loop iteration, then `dec %rcx; jnz`. The loop is written out in assembly
 * because the host's reference (KVMMicrobenchmark.LongModeLoop.eightOutLoop)
 * runs these very bytes on a bare 64-bit VM: on a software backend each
 * CPL0 instruction is emulated, so both sides must execute the same ones.
 */
static const char *bench_exit(void)
{
	unsigned long n = (iterations() + 7) / 8, count = n;
	uint64_t t0 = rdtsc();
	__asm__ volatile("1:\n\t"
			 "outb %%al, $0xeb\n\toutb %%al, $0xeb\n\t"
			 "outb %%al, $0xeb\n\toutb %%al, $0xeb\n\t"
			 "outb %%al, $0xeb\n\toutb %%al, $0xeb\n\t"
			 "outb %%al, $0xeb\n\toutb %%al, $0xeb\n\t"
			 "dec %%rcx\n\tjnz 1b"
			 : "+c"(count) : "a"(0) : "memory");
	report("bench_exit", n * 8, rdtsc() - t0);
	return NULL;
}

/*
 * The cheapest hypercall, xen_version(XENVER_version, NULL), through the
 * selected transport. The loop is `1: mov $17, %eax; call *%rbx; dec %rcx;
 * jnz 1b` (Xen's ABI: RAX = hypercall number, RDI, RSI the arguments) with
 * RDI = RSI = 0 and RBX at the hypercall page's stub __HYPERVISOR_xen_version,
 * or (vmcall transport) at the `vmcall; ret` / `vmmcall; ret` site the guest
 * picked, as Linux's static call ends up after its first hypercall. These
 * are the bytes of the host's bare references
 * (KVMMicrobenchmark.LongModeLoop.callLoop).
 */
static const char *bench_hypercall(void)
{
	unsigned long n = iterations(), count = n, result;
	void *target = transport == TRANSPORT_VMCALL
		? xen_hypercall_setfunc()
		: (void *)(hypercall_page + __HYPERVISOR_xen_version * 32);
	uint64_t t0 = rdtsc();
	__asm__ volatile("1:\n\tmov $%c[nr], %%eax\n\tcall *%%rbx\n\t"
			 "dec %%rcx\n\tjnz 1b"
			 : "+c"(count), "=a"(result)
			 : "b"(target), [nr] "i"(__HYPERVISOR_xen_version),
			   "D"(XENVER_version), "S"(0)
			 : "memory", "cc");
	uint64_t t1 = rdtsc();
	report(transport == TRANSPORT_VMCALL ? "bench_hypercall_vmcall" : "bench_hypercall_page", n, t1 - t0);
	return (long)result < 0 ? "xen_version failed" : NULL;
}

/*
 * The initrd as the first start_info module (pvh.pandoc: modlist_paddr,
 * hvm_modlist_entry). The test hands over a file that starts with a known
 * line; the guest checks it and prints size and a byte sum for the host to
 * compare against the file.
 */
static const char *scen_module(void)
{
	static const char magic[] = "PVH-TEST-INITRD\n";
	const struct hvm_start_info *si = start_info;
	if (si->nr_modules != 1)
		return "want exactly one module";
	if (!phys_ok(si->modlist_paddr, sizeof(struct hvm_modlist_entry)))
		return "module list outside RAM";
	const struct hvm_modlist_entry *m = PHYS(si->modlist_paddr);
	if (m->paddr & (PAGE_SIZE - 1))
		return "module not page aligned";
	if (m->size < sizeof(magic) - 1 || !phys_ok(m->paddr, m->size))
		return "module outside RAM";
	if (memcmp(PHYS(m->paddr), magic, sizeof(magic) - 1) != 0)
		return "module does not start with the test line";
	uint32_t sum = 0;
	const uint8_t *b = PHYS(m->paddr);
	for (uint64_t i = 0; i < m->size; i++)
		sum += b[i];
	printk("PVHINFO module size=%lu sum=%u\n", (unsigned long)m->size, sum);
	return NULL;
}

/* Scenarios run only when named. */
const struct scenario bench_scenarios[] = {
	{ "module", scen_module },
	{ "bench_exit", bench_exit },
	{ "bench_hypercall", bench_hypercall },
};
const size_t nr_bench_scenarios = ARRAY_SIZE(bench_scenarios);
