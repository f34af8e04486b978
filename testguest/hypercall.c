/*
 * pvh test guest: finding Xen, choosing a hypercall transport, console.
 */
#include "testguest.h"

enum transport transport = TRANSPORT_PAGE;

/*
 * Without Xen (e.g. booted by plain QEMU to debug the early code) the
 * console falls back to port 0xE9 and every hypercall fails with -ENOSYS,
 * so the scenarios still run and report.
 */
static int have_xen;

long hc_page_call(unsigned long nr, unsigned long a1, unsigned long a2,
		  unsigned long a3, unsigned long a4, unsigned long a5);
long hc_static_call(unsigned long nr, unsigned long a1, unsigned long a2,
		    unsigned long a3, unsigned long a4, unsigned long a5);
void *xen_hypercall_setfunc(void);

/*
 * Xen advertises itself at one of the CPUID leaves 0x40000000 +
 * 0x100 * k (xen/arch-x86/cpuid.h: "XenVMMXenVMM" in EBX, ECX, EDX of the
 * base leaf; the base may move when another hypervisor signature comes
 * first, e.g. Viridian). EAX of the base leaf is the last valid leaf; we
 * need base+2.
 */
uint32_t xen_cpuid_base(void)
{
	for (uint32_t base = XEN_CPUID_FIRST_LEAF; base <= XEN_CPUID_LAST_BASE;
	     base += 0x100) {
		uint32_t a, b, c, d;
		cpuid(base, &a, &b, &c, &d);
		if (b == XEN_CPUID_SIGNATURE_EBX && c == XEN_CPUID_SIGNATURE_ECX &&
		    d == XEN_CPUID_SIGNATURE_EDX && a >= base + 2)
			return base;
	}
	return 0;
}

/*
 * Page transport: CPUID leaf base+2 gives the number of hypercall pages
 * (EAX) and the MSR (EBX); writing the page's physical address to it asks
 * the hypervisor to fill the page (xen/arch-x86/cpuid.h, leaf 3).
 * The vmcall transport needs no set-up.
 */
void hypercall_init(uint32_t base)
{
	uint32_t pages, msr, c, d;

	have_xen = base != 0;
	if (!have_xen || transport != TRANSPORT_PAGE)
		return;
	cpuid(base + 2, &pages, &msr, &c, &d);
	uint64_t pa = (uint64_t)(uintptr_t)hypercall_page; /* identity mapped */
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)pa),
			 "d"((uint32_t)(pa >> 32)) : "memory");
}

long hypercall(unsigned int nr, unsigned long a1, unsigned long a2,
	       unsigned long a3, unsigned long a4, unsigned long a5)
{
	if (!have_xen)
		return -XEN_ENOSYS;
	if (transport == TRANSPORT_VMCALL)
		return hc_static_call(nr, a1, a2, a3, a4, a5);
	return hc_page_call(nr, a1, a2, a3, a4, a5);
}

/*
 * Called from xen_hypercall_hvm (hypercall.S) to pick the instruction the
 * CPU understands, like Linux's __xen_hypercall_setfunc(): AMD and Hygon
 * use vmmcall, everything else vmcall.
 */
void *xen_hypercall_setfunc(void)
{
	static void *func;

	if (!func) {
		uint32_t a, b, c, d;
		cpuid(0, &a, &b, &c, &d);
		int amd = (b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163) || /* AuthenticAMD */
			  (b == 0x6f677948 && d == 0x6e65476e && c == 0x656e6975);   /* HygonGenuine */
		func = amd ? (void *)xen_hypercall_amd : (void *)xen_hypercall_intel;
	}
	return func;
}

/* Port 0xE9: the debug console (one OUT per byte). */
void e9_write(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		outb(0xe9, (uint8_t)s[i]);
}

/* Xen console: console_io(CONSOLEIO_write, len, buf) (xen/xen.h). */
void console_write(const char *s, size_t len)
{
	if (have_xen)
		console_io(CONSOLEIO_write, len, s);
	else
		e9_write(s, len);
}

void printk(const char *fmt, ...)
{
	static char buf[512];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 1)
		n = sizeof(buf) - 1;
	console_write(buf, (size_t)n);
}

/* sched_op(SCHEDOP_shutdown, {reason}) (xen/sched.h). Never returns. */
void shutdown(unsigned int reason)
{
	struct sched_shutdown s = { .reason = reason };
	long rc = sched_op(SCHEDOP_shutdown, &s);
	printk("PVHINFO shutdown returned %ld\n", rc);
	for (;;)
		__asm__ volatile("cli; hlt");
}
