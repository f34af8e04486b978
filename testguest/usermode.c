/*
 * pvh test guest: scenario usermode_syscall (run only when named).
 *
 * One trip to CPL3 and back the way Linux does it: iretq to 64-bit user
 * code, which does `syscall` (RAX 1); syscall_entry (head.S, MSR_LSTAR)
 * records CS/SS/RCX/R11 and returns with sysretq (or iretq with
 * pvh.user=iret); the user code then records its CS/SS in RBX/RDX and does
 * `syscall` (RAX 2), whose handler goes back to the scenario. #UD, #GP and
 * #PF are caught for the duration (head.S user_exc_*) and reported with
 * their frame. Intel SDM vol. 2B SYSCALL/SYSRET, vol. 3 5.8.8, 7.7 (TSS).
 *
 * Set-up: GDT entries GDT_USER_DATA (0x20, DPL3) and GDT_USER_CODE64 (0x28,
 * L=1, DPL3) after GDT_CODE32 (head.S), so STAR = 0x0018000800000000:
 * SYSCALL CS 0x08 / SS 0x10, SYSRET CS 0x2b / SS 0x23. A 64-bit TSS
 * (GDT_TSS 0x30) with RSP0 = user_kstack_top, loaded with ltr. A 4 KiB
 * mapping at USER_VA (PML4 slot 1, all levels U/S): the code page (read
 * only) and the stack page; the kernel's identity map stays supervisor, so
 * a SYSCALL that does not leave CPL3 faults fetching LSTAR (#PF err 0x15).
 * EFER.SCE, STAR, LSTAR = syscall_entry, SFMASK = IF|TF|DF|AC. Everything
 * but TR is put back afterwards (the slot-1 mapping removed: scenario
 * hostile relies on nothing above 4 GiB being mapped).
 */
#include "testguest.h"

#define USER_VA		0x0000008000000000UL	/* PML4 slot 1 */
#define USER_CODE_VA	USER_VA
#define USER_STACK_TOP	(USER_VA + 0x2000)

#define MSR_STAR	0xc0000081
#define MSR_LSTAR	0xc0000082
#define MSR_SFMASK	0xc0000084
#define EFER_SCE	0x1
#define PTE_US		0x004
#define SFMASK_BITS	(0x40000UL | 0x400 | 0x200 | 0x100)	/* AC DF IF TF */
#define STAR_VALUE	(((uint64_t)GDT_CODE32 << 48) | ((uint64_t)GDT_CODE64 << 32))

extern uint64_t pml4[512], gdt[], gdt_tss[2];
extern uint8_t user_pdpt[], user_pd[], user_pt[], user_code_page[], user_stack_page[],
	user_kstack_top[];
extern uint8_t user_code_start[], user_code_sys1_next[], user_code_sys2_next[], user_code_end[];
extern uint32_t user_iret_mode;
extern volatile uint32_t usys_count;
extern volatile uint64_t usys_bad_nr, usys1_cs, usys1_ss, usys1_rcx, usys1_r11, usys1_rsp,
	usys2_cs, usys2_ss, usys2_rcx, usys2_r11, usys2_user_cs, usys2_user_ss,
	uexc_vector, uexc_error, uexc_rip, uexc_cs, uexc_rflags, uexc_rsp, uexc_ss, uexc_cr2,
	uexc_rcx, uexc_r11;
long user_enter(uint64_t rip, uint64_t rsp, uint64_t loops);
void syscall_entry(void), user_exc_6(void), user_exc_13(void), user_exc_14(void);
extern uint8_t syscall_entry_stackless_end[], user_loop_start[];
extern uint64_t user_rflags;
void user_irq_entry(void), user_upcall_entry(void), lapic_timer_entry(void);

struct tss64 {			/* Intel SDM vol. 3, 8.7 */
	uint32_t reserved0;
	uint64_t rsp[3];
	uint64_t reserved1;
	uint64_t ist[7];
	uint64_t reserved2;
	uint16_t reserved3;
	uint16_t iomap_base;
} __attribute__((packed));
_Static_assert(sizeof(struct tss64) == 104, "TSS size");

static struct tss64 tss __attribute__((aligned(16)));
/* IST1 (usermode_int1, usermode_step): #DB's own stack, as Linux gives it. */
static uint8_t utrap_ist_stack[2048] __attribute__((aligned(16)));

static uint64_t rdmsr64(uint32_t msr)
{
	uint32_t lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((uint64_t)hi << 32) | lo;
}

static void wrmsr64(uint32_t msr, uint64_t v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}

static void reload_cr3(void)
{
	uint64_t cr3;
	__asm__ volatile("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3) : : "memory");
}

static void load_tss(void)
{
	memset(&tss, 0, sizeof(tss));
	tss.rsp[0] = (uintptr_t)user_kstack_top;
	tss.ist[0] = (uintptr_t)(utrap_ist_stack + sizeof(utrap_ist_stack));	/* IST1: #DB, usermode_int1/step */
	tss.iomap_base = sizeof(tss);		/* no I/O bitmap */
	uint64_t base = (uintptr_t)&tss, limit = sizeof(tss) - 1;
	/* Available 64-bit TSS (type 9), P; rewritten every run, so ltr never
	 * sees the busy type a previous run left. */
	gdt_tss[0] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89UL << 40) |
		     (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
	gdt_tss[1] = base >> 32;
	__asm__ volatile("ltr %w0" : : "r"(GDT_TSS) : "memory");
}

static void map_user(void)
{
	memset(user_pdpt, 0, PAGE_SIZE);
	memset(user_pd, 0, PAGE_SIZE);
	memset(user_pt, 0, PAGE_SIZE);
	memset(user_code_page, 0xf4, PAGE_SIZE);	/* hlt: #GP at CPL3 */
	memcpy(user_code_page, user_code_start, (size_t)(user_code_end - user_code_start));
	memset(user_stack_page, 0, PAGE_SIZE);
	uint64_t *pdpt = (uint64_t *)user_pdpt, *pd = (uint64_t *)user_pd, *pt = (uint64_t *)user_pt;
	pt[0] = (uintptr_t)user_code_page | PTE_P | PTE_US;
	pt[1] = (uintptr_t)user_stack_page | PTE_P | PTE_RW | PTE_US;
	pd[0] = (uintptr_t)user_pt | PTE_P | PTE_RW | PTE_US;
	pdpt[0] = (uintptr_t)user_pd | PTE_P | PTE_RW | PTE_US;
	pml4[(USER_VA >> 39) & 511] = (uintptr_t)user_pdpt | PTE_P | PTE_RW | PTE_US;
	reload_cr3();
}

static const char *exc_name(uint64_t v)
{
	return v == 6 ? "#UD" : v == 13 ? "#GP" : v == 14 ? "#PF" : "?";
}

static const char *scen_usermode_syscall(void)
{
	size_t len;
	const char *mode = cmdline_opt("pvh.user=", &len);
	int iret = mode && len == 4 && strncmp(mode, "iret", 4) == 0;
	if (mode && !iret && !(len == 6 && strncmp(mode, "sysret", 6) == 0))
		return fail("pvh.user=%.*s: want sysret or iret", (int)len, mode);
	const char *ret_how = iret ? "iret" : "sysret";

	user_iret_mode = iret;
	usys_count = 0;
	usys_bad_nr = usys1_cs = usys1_ss = usys1_rcx = usys1_r11 = usys1_rsp = 0;
	usys2_cs = usys2_ss = usys2_rcx = usys2_r11 = usys2_user_cs = usys2_user_ss = 0;
	uexc_vector = uexc_error = uexc_rip = uexc_cs = uexc_rflags = uexc_rsp = uexc_ss = uexc_cr2 = 0;
	uexc_rcx = uexc_r11 = 0;

	load_tss();
	map_user();
	idt_set_gate(6, (uintptr_t)user_exc_6);
	idt_set_gate(13, (uintptr_t)user_exc_13);
	idt_set_gate(14, (uintptr_t)user_exc_14);

	uint64_t efer = rdmsr64(MSR_EFER), star = rdmsr64(MSR_STAR), lstar = rdmsr64(MSR_LSTAR),
		 sfmask = rdmsr64(MSR_SFMASK);
	wrmsr64(MSR_EFER, efer | EFER_SCE);
	wrmsr64(MSR_STAR, STAR_VALUE);
	wrmsr64(MSR_LSTAR, (uintptr_t)syscall_entry);
	wrmsr64(MSR_SFMASK, SFMASK_BITS);

	uint64_t rip1 = USER_CODE_VA + (uint64_t)(user_code_sys1_next - user_code_start);
	uint64_t rip2 = USER_CODE_VA + (uint64_t)(user_code_sys2_next - user_code_start);
	printk("PVHINFO usermode_syscall: STAR 0x%lx LSTAR 0x%lx SFMASK 0x%lx, TR 0x%x RSP0 0x%lx, "
	       "iretq to CS 0x%x SS 0x%x RIP 0x%lx RSP 0x%lx RFLAGS 0x%x, return by %s\n",
	       (unsigned long)STAR_VALUE, (unsigned long)(uintptr_t)syscall_entry, SFMASK_BITS,
	       GDT_TSS, (unsigned long)tss.rsp[0], GDT_USER_CODE64 | 3, GDT_USER_DATA | 3,
	       USER_CODE_VA, USER_STACK_TOP, USER_RFLAGS, ret_how);

	long r = user_enter(USER_CODE_VA, USER_STACK_TOP, 0);

	wrmsr64(MSR_SFMASK, sfmask);
	wrmsr64(MSR_LSTAR, lstar);
	wrmsr64(MSR_STAR, star);
	wrmsr64(MSR_EFER, efer);
	for (unsigned v = 6; v <= 14; v += (v == 6 ? 7 : 1))
		idt_set_gate(v, exc_stubs[v]);
	pml4[(USER_VA >> 39) & 511] = 0;
	reload_cr3();

	printk("PVHINFO usermode_syscall: result %ld, %u syscalls; syscall 1: CS 0x%lx SS 0x%lx "
	       "RCX 0x%lx R11 0x%lx RSP 0x%lx; syscall 2: CS 0x%lx SS 0x%lx RCX 0x%lx R11 0x%lx, "
	       "user CS 0x%lx SS 0x%lx after the first return\n",
	       r, usys_count, usys1_cs & 0xffff, usys1_ss & 0xffff, usys1_rcx, usys1_r11, usys1_rsp,
	       usys2_cs & 0xffff, usys2_ss & 0xffff, usys2_rcx, usys2_r11,
	       usys2_user_cs & 0xffff, usys2_user_ss & 0xffff);

	if (r == USER_BAD_SYSCALL)
		return fail("syscall_entry reached with RAX 0x%lx after %u syscalls",
			    usys_bad_nr, usys_count);
	if (r != 0) {
		printk("PVHINFO usermode_syscall: %s vector %ld error 0x%lx RIP 0x%lx CS 0x%lx "
		       "RFLAGS 0x%lx RSP 0x%lx SS 0x%lx CR2 0x%lx; RCX 0x%lx R11 0x%lx at the fault "
		       "(user RIP after syscall 1 0x%lx, user RFLAGS 0x%x)\n",
		       exc_name(uexc_vector), r, uexc_error, uexc_rip, uexc_cs & 0xffff,
		       uexc_rflags, uexc_rsp, uexc_ss & 0xffff, uexc_cr2, uexc_rcx, uexc_r11,
		       rip1, USER_RFLAGS);
		const char *where = usys_count == 0 ? "no syscall handled"
				    : usys_count == 1 ? "after syscall 1" : "after syscall 2";
		const char *what = "";
		if (uexc_rip == (uintptr_t)syscall_entry && (uexc_cs & 3) == 3)
			what = ": SYSCALL stayed at CPL3";
		return fail("%s at CPL%lu rip=0x%lx cs=0x%lx err=0x%lx rflags=0x%lx rcx=0x%lx "
			    "r11=0x%lx, %s%s",
			    exc_name(uexc_vector), uexc_cs & 3, uexc_rip, uexc_cs & 0xffff,
			    uexc_error, uexc_rflags, uexc_rcx, uexc_r11, where, what);
	}

	if ((usys1_cs & 0xffff) != GDT_CODE64 || (usys1_ss & 0xffff) != GDT_DATA)
		return fail("syscall 1 entered with CS 0x%lx SS 0x%lx, want 0x%x 0x%x",
			    usys1_cs & 0xffff, usys1_ss & 0xffff, GDT_CODE64, GDT_DATA);
	if (usys1_rcx != rip1)
		return fail("syscall 1: RCX 0x%lx, want 0x%lx", usys1_rcx, rip1);
	/* RF may be set; IF too: kvm_pvm runs guest CPL3 code natively with
	 * IF on in hardware, and SYSCALL saves that RFLAGS in R11. */
	if ((usys1_r11 & ~0x10200UL) != (USER_RFLAGS & ~0x200UL))
		return fail("syscall 1: R11 0x%lx, want RFLAGS 0x%x", usys1_r11, USER_RFLAGS);
	if (usys1_rsp != USER_STACK_TOP)
		return fail("syscall 1: RSP 0x%lx, want the user's 0x%lx", usys1_rsp, USER_STACK_TOP);
	/* Back at CPL3. The selector values are not checked: kvm_pvm runs guest
	 * CPL3 code natively with the host's own user selectors (0x33/0x2b),
	 * whatever the guest loaded, so `mov %cs` there reads those. */
	if ((usys2_user_cs & 3) != 3 || (usys2_user_ss & 3) != 3)
		return fail("after %s: user CS 0x%lx SS 0x%lx, want 0x%x 0x%x", ret_how,
			    usys2_user_cs & 0xffff, usys2_user_ss & 0xffff,
			    GDT_USER_CODE64 | 3, GDT_USER_DATA | 3);
	if ((usys2_cs & 0xffff) != GDT_CODE64 || usys2_rcx != rip2)
		return fail("syscall 2: CS 0x%lx RCX 0x%lx, want 0x%x 0x%lx", usys2_cs & 0xffff,
			    usys2_rcx, GDT_CODE64, rip2);
	pass_note("entered kernel at CS 0x%lx via SYSCALL, RCX=0x%lx R11=0x%lx, %s ok "
		  "(user CS 0x%lx SS 0x%lx), second SYSCALL RCX=0x%lx",
		  usys1_cs & 0xffff, usys1_rcx, usys1_r11, ret_how, usys2_user_cs & 0xffff,
		  usys2_user_ss & 0xffff, usys2_rcx);
	return NULL;
}

/*
 * Scenario usermode_syscall_irq: SYSCALL with interrupts pending. User code
 * (IF on) does pvh.usys_n syscalls (RAX 3, default 2000) whose entry only
 * counts and returns with sysretq, never touching the stack, while an
 * interrupt fires every 20 us: the LAPIC timer, or with pvh.usys_irq=upcall
 * the Xen upcall of VIRQ_TIMER (a one-shot re-armed from each upcall: the
 * per-vCPU upcall vector, or the callback vector with pvh.upcall=callback).
 * SFMASK clears IF, so no interrupt may be delivered between the SYSCALL
 * and the SYSRET (Intel SDM vol. 2B SYSCALL): one delivered there runs at
 * CPL0 on the user's stack (as Linux's entry_SYSCALL_64 would, before it
 * switches stacks). The handler counts interrupts taken in that window.
 */
static volatile uint32_t uirq_ticks, uirq_user_ticks, uirq_bad;
static volatile uint64_t uirq_bad_rip, uirq_bad_rsp, uirq_bad_rflags;

static void user_irq_count(const uint64_t *frame)
{
	uirq_ticks++;
	if ((frame[1] & 3) == 3)
		uirq_user_ticks++;
	else if (frame[0] >= (uintptr_t)syscall_entry && frame[0] < (uintptr_t)syscall_entry_stackless_end) {
		if (!uirq_bad++) {
			uirq_bad_rip = frame[0];
			uirq_bad_rsp = frame[3];
			uirq_bad_rflags = frame[2];
		}
	}
}

void user_irq_tick(const uint64_t *frame)
{
	user_irq_count(frame);
	lapic_ack();
}

/* From user_upcall_entry (head.S): the upcall, then the next one-shot. */
void user_upcall_tick(const uint64_t *frame)
{
	user_irq_count(frame);
	evtchn_upcall();
	upcall_timer_rearm();
}

static const char *scen_usermode_syscall_irq(void)
{
	size_t len;
	const char *v = cmdline_opt("pvh.usys_n=", &len);
	uint64_t loops = 0;
	for (size_t i = 0; v && i < len && v[i] >= '0' && v[i] <= '9'; i++)
		loops = loops * 10 + (uint64_t)(v[i] - '0');
	if (!loops)
		loops = 2000;
	usys_count = 0;
	uirq_ticks = uirq_user_ticks = uirq_bad = 0;
	uexc_vector = 0;
	load_tss();
	map_user();
	idt_set_gate(6, (uintptr_t)user_exc_6);
	idt_set_gate(13, (uintptr_t)user_exc_13);
	idt_set_gate(14, (uintptr_t)user_exc_14);
	size_t irq_len;
	const char *irq = cmdline_opt("pvh.usys_irq=", &irq_len);
	int upcall = irq && irq_len == 6 && strncmp(irq, "upcall", 6) == 0;
	const char *r0;
	if (upcall && (r0 = xen_setup()))
		return r0;
	idt_set_gate(upcall ? UPCALL_VECTOR : LAPIC_TIMER_VECTOR, (uintptr_t)(upcall ? user_upcall_entry : user_irq_entry));
	uint64_t efer = rdmsr64(MSR_EFER), star = rdmsr64(MSR_STAR), lstar = rdmsr64(MSR_LSTAR),
		 sfmask = rdmsr64(MSR_SFMASK);
	wrmsr64(MSR_EFER, efer | EFER_SCE);
	wrmsr64(MSR_STAR, STAR_VALUE);
	wrmsr64(MSR_LSTAR, (uintptr_t)syscall_entry);
	wrmsr64(MSR_SFMASK, SFMASK_BITS);
	user_rflags = USER_RFLAGS | 0x200;
	if (upcall) {
		if ((r0 = upcall_timer_start(20000)))
			return r0;
	} else if (!lapic_periodic_start(20000)) {
		return fail("no local APIC timer");
	}

	long r = user_enter(USER_CODE_VA + (uint64_t)(user_loop_start - user_code_start), USER_STACK_TOP, loops);

	if (upcall)
		upcall_timer_stop();
	else
		lapic_periodic_stop();
	user_rflags = USER_RFLAGS;
	wrmsr64(MSR_SFMASK, sfmask);
	wrmsr64(MSR_LSTAR, lstar);
	wrmsr64(MSR_STAR, star);
	wrmsr64(MSR_EFER, efer);
	for (unsigned v = 6; v <= 14; v += (v == 6 ? 7 : 1))
		idt_set_gate(v, exc_stubs[v]);
	if (upcall)
		idt_set_gate(UPCALL_VECTOR, (uintptr_t)upcall_entry);
	else
		idt_set_gate(LAPIC_TIMER_VECTOR, (uintptr_t)lapic_timer_entry);
	pml4[(USER_VA >> 39) & 511] = 0;
	reload_cr3();

	printk("PVHINFO usermode_syscall_irq: result %ld, %u syscalls, %u %s interrupts (%u in user "
	       "mode), %u inside the SYSCALL entry\n", r, usys_count, uirq_ticks, upcall ? "upcall" : "timer",
	       uirq_user_ticks, uirq_bad);
	if (r != 0)
		return fail("%s at CPL%lu rip=0x%lx cs=0x%lx err=0x%lx rsp=0x%lx after %u syscalls",
			    exc_name(uexc_vector), uexc_cs & 3, uexc_rip, uexc_cs & 0xffff, uexc_error,
			    uexc_rsp, usys_count);
	if (uirq_bad)
		return fail("%u interrupts delivered inside the SYSCALL entry with IF clear (first at "
			    "rip=0x%lx rsp=0x%lx rflags=0x%lx) in %u syscalls",
			    uirq_bad, uirq_bad_rip, uirq_bad_rsp, uirq_bad_rflags, usys_count);
	if (usys_count != loops + 1)
		return fail("%u syscalls, want %lu", usys_count, (unsigned long)loops + 1);
	if (!uirq_user_ticks)
		return fail("no timer interrupt reached user mode in %u syscalls (TPR left raised?)", usys_count);
	pass_note("%u syscalls with a 20 us %s: %u interrupts, %u in user mode, none inside the "
		  "SYSCALL entry", usys_count, upcall ? "upcall timer" : "timer", uirq_ticks, uirq_user_ticks);
	return NULL;
}

/*
 * Scenarios usermode_int80, usermode_int3, usermode_int1, usermode_step,
 * usermode_intgp, usermode_int3_dpl0, usermode_into: traps raised at CPL3, delivered through this IDT as the
 * hardware would (Intel SDM vol. 3, 6.12.1: privilege change through the
 * gate's CS, stack from TSS RSP0 or the gate's IST, 6.14.4/6.14.5; 6.12.1.1:
 * INT n/INT3 need gate DPL >= CPL, INT1 and exceptions do not; vol. 2
 * "INT n/INTO/INT3/INT1"; vol. 3, 17.3.1: the single-step trap).
 *
 * Each case iretqs to one user instruction sequence (utrap_* below, copied
 * to the user code page at UTRAP_CODE_OFFSET). The expected trap lands in
 * utrap_entry_* (vectors 1, 3, 0x80, and 0x81, which must never be
 * reached), which records the frame the CPU pushed, where it pushed it, and
 * DR6 (utrap_recs), clears RFLAGS.TF in the frame and iretqs; the user code
 * then runs into `hlt`, a #GP at CPL3, caught by user_exc_13 (head.S), which
 * ends the run. Gates, as Linux sets them (arch/x86/kernel/idt.c): 0x80 and
 * #BP DPL3; #DB DPL0 on IST1; 0x81 DPL0, so `int $0x81` at CPL3 is
 * #GP((0x81 << 3) | 2) (error code: IDT bit, SDM vol. 3, 6.13).
 */
#define UTRAP_CODE_OFFSET	0x800
#define UTRAP_MAX		4
#define UTRAP_OVERFLOW		0xffffUL	/* error code of the run's end after UTRAP_MAX traps */
#define UTRAP_IST		1
#define GP_VECTOR		13
#define UD_VECTOR		6

struct utrap_rec {
	/* Layout shared with utrap_common below: 9 quadwords. */
	uint64_t vector, error, rip, cs, rflags, rsp, ss, frame, dr6;
};
_Static_assert(sizeof(struct utrap_rec) == 72, "utrap_rec layout");

volatile uint32_t utrap_n;
volatile struct utrap_rec utrap_recs[UTRAP_MAX];

extern uint8_t utrap_code_start[], utrap_code_end[], utrap_int80[], utrap_int80_next[],
	utrap_int3[], utrap_int3_next[], utrap_int1[], utrap_int1_next[], utrap_step[],
	utrap_step_next[], utrap_intgp[], utrap_into[], utrap_end_int80[], utrap_end_int3[],
	utrap_end_int1[], utrap_end_step[];
void utrap_entry_1(void), utrap_entry_3(void), utrap_entry_128(void), utrap_entry_129(void);
void idt_set_gate_dpl_ist(unsigned vec, uint64_t handler, unsigned dpl, unsigned ist);

__asm__(
	".text\n"
	/* The recorder: vector and a dummy error code pushed by the entry. */
	".macro UTRAP_ENTRY vec\n"
	".globl utrap_entry_\\vec\n"
	"utrap_entry_\\vec:\n"
	"	push $0\n"
	"	push $\\vec\n"
	"	jmp utrap_common\n"
	".endm\n"
	"	UTRAP_ENTRY 1\n"
	"	UTRAP_ENTRY 3\n"
	"	UTRAP_ENTRY 128\n"
	"	UTRAP_ENTRY 129\n"
	"utrap_common:\n"
	"	push %rax\n"
	"	push %rbx\n"
	"	mov utrap_n, %ebx\n"
	"	cmp $" "4" ", %ebx\n"	/* UTRAP_MAX: a trap that keeps coming back ends the run */
	"	jae 9f\n"
	"	imul $72, %rbx, %rbx\n"
	"	add $utrap_recs, %rbx\n"
	"	mov 16(%rsp), %rax\n	mov %rax, 0(%rbx)\n"	/* vector */
	"	mov 24(%rsp), %rax\n	mov %rax, 8(%rbx)\n"	/* error code */
	"	mov 32(%rsp), %rax\n	mov %rax, 16(%rbx)\n"	/* RIP */
	"	mov 40(%rsp), %rax\n	mov %rax, 24(%rbx)\n"	/* CS */
	"	mov 48(%rsp), %rax\n	mov %rax, 32(%rbx)\n"	/* RFLAGS */
	"	mov 56(%rsp), %rax\n	mov %rax, 40(%rbx)\n"	/* RSP */
	"	mov 64(%rsp), %rax\n	mov %rax, 48(%rbx)\n"	/* SS */
	"	lea 32(%rsp), %rax\n	mov %rax, 56(%rbx)\n"	/* where the CPU put RIP */
	"	mov %dr6, %rax\n	mov %rax, 64(%rbx)\n"
	"	incl utrap_n\n"
	/* DR6 is never cleared by the processor (SDM vol. 3, 17.2.3). */
	"	mov $0xffff0ff0, %eax\n"
	"	mov %rax, %dr6\n"
	"	andq $~0x100, 48(%rsp)\n"	/* RFLAGS.TF off: one step only */
	"	pop %rbx\n"
	"	pop %rax\n"
	"	add $16, %rsp\n"
	"	iretq\n"
	/* Too many traps: end the run through user_exc_13 with error UTRAP_OVERFLOW. */
	"9:	pop %rbx\n"
	"	pop %rax\n"
	"	add $16, %rsp\n"
	"	push $0xffff\n"
	"	jmp user_exc_13\n"

	/* The CPL3 code (position independent). Labels *_next: where a trap's
	 * frame must point (the instruction after); utrap_end_*: the hlt. */
	".globl utrap_code_start, utrap_code_end, utrap_int80, utrap_int80_next, utrap_int3\n"
	".globl utrap_int3_next, utrap_int1, utrap_int1_next, utrap_step, utrap_step_next\n"
	".globl utrap_intgp, utrap_into, utrap_end_int80, utrap_end_int3, utrap_end_int1\n"
	".globl utrap_end_step\n"
	"utrap_code_start:\n"
	"utrap_int80:	int $0x80\n"
	"utrap_int80_next:\n"
	"utrap_end_int80: hlt\n"
	"utrap_int3:	int3\n"
	"utrap_int3_next:\n"
	"utrap_end_int3: hlt\n"
	"utrap_int1:	.byte 0xf1\n"		/* INT1 / ICEBP */
	"utrap_int1_next:\n"
	"utrap_end_int1: hlt\n"
	/* popfq sets TF; the trap follows the next instruction (SDM vol. 3, 17.3.1.4). */
	"utrap_step:	pushfq\n"
	"	orq $0x100, (%rsp)\n"
	"	popfq\n"
	"	nop\n"
	"utrap_step_next:\n"
	"	nop\n"
	"utrap_end_step: hlt\n"
	"utrap_intgp:	int $0x81\n"
	"	hlt\n"
	/* INTO (CE): invalid in 64-bit mode, #UD whatever OF is (SDM vol. 2, INTO). */
	"utrap_into:	.byte 0xce\n"
	"	hlt\n"
	"utrap_code_end:\n");

struct utrap_case {
	const char *name;
	uint8_t *code, *next, *end;	/* next/end NULL: the run must end in a fault at code */
	uint64_t vector;
	unsigned bp_dpl;		/* #BP's gate DPL: 3 as Linux, 0 to see INT3's DPL check */
	uint64_t fault;			/* next NULL: the fault at code, #GP((vector << 3) | 2) or #UD */
};

static uint64_t utrap_va(const uint8_t *label)
{
	return USER_CODE_VA + UTRAP_CODE_OFFSET + (uint64_t)(label - utrap_code_start);
}

static const char *vector_name(uint64_t v)
{
	return v == 1 ? "#DB" : v == 3 ? "#BP" : v == 6 ? "#UD" : v == 13 ? "#GP" : v == 14 ? "#PF"
	       : v == 0x80 ? "int 0x80" : v == 0x81 ? "int 0x81" : "?";
}

static const char *run_utrap(const struct utrap_case *c)
{
	if ((size_t)(user_code_end - user_code_start) > UTRAP_CODE_OFFSET ||
	    UTRAP_CODE_OFFSET + (size_t)(utrap_code_end - utrap_code_start) > PAGE_SIZE)
		return fail("user code does not fit the page");
	utrap_n = 0;
	memset((void *)utrap_recs, 0, sizeof(utrap_recs));
	uexc_vector = uexc_error = uexc_rip = uexc_cs = uexc_rflags = uexc_rsp = uexc_ss = uexc_cr2 = 0;

	load_tss();
	map_user();
	memcpy(user_code_page + UTRAP_CODE_OFFSET, utrap_code_start,
	       (size_t)(utrap_code_end - utrap_code_start));
	uint64_t dr6_clear = 0xffff0ff0;
	__asm__ volatile("mov %0, %%dr6" : : "r"(dr6_clear));
	idt_set_gate(6, (uintptr_t)user_exc_6);
	idt_set_gate(13, (uintptr_t)user_exc_13);
	idt_set_gate(14, (uintptr_t)user_exc_14);
	idt_set_gate_dpl_ist(1, (uintptr_t)utrap_entry_1, 0, UTRAP_IST);
	idt_set_gate_dpl_ist(3, (uintptr_t)utrap_entry_3, c->bp_dpl, 0);
	idt_set_gate_dpl_ist(0x80, (uintptr_t)utrap_entry_128, 3, 0);
	idt_set_gate_dpl_ist(0x81, (uintptr_t)utrap_entry_129, 0, 0);
	/* As an OS enables SYSCALL after setting its IDT (pvh's software-backend
	 * fix-ups read the gates when LSTAR is written). */
	uint64_t lstar = rdmsr64(MSR_LSTAR);
	wrmsr64(MSR_LSTAR, (uintptr_t)syscall_entry);

	long r = user_enter(utrap_va(c->code), USER_STACK_TOP, 0);

	wrmsr64(MSR_LSTAR, lstar);
	idt_set_gate_dpl_ist(0x81, 0, 0, 0);
	idt_set_gate(0x80, (uintptr_t)int80_handler);
	idt_set_gate(3, (uintptr_t)bp_handler);
	for (unsigned v = 1; v <= 14; v += (v == 1 ? 5 : v == 6 ? 7 : 1))
		idt_set_gate(v, exc_stubs[v]);
	pml4[(USER_VA >> 39) & 511] = 0;
	reload_cr3();

	uint32_t n = utrap_n;
	for (uint32_t i = 0; i < n && i < UTRAP_MAX; i++) {
		const volatile struct utrap_rec *t = &utrap_recs[i];
		printk("PVHINFO %s: trap %u: vector %lu (%s) error 0x%lx RIP 0x%lx CS 0x%lx RFLAGS 0x%lx "
		       "RSP 0x%lx SS 0x%lx, frame at 0x%lx, DR6 0x%lx\n", c->name, i, t->vector,
		       vector_name(t->vector), t->error, t->rip, t->cs & 0xffff, t->rflags, t->rsp,
		       t->ss & 0xffff, t->frame, t->dr6);
	}
	printk("PVHINFO %s: ended by %s (vector %ld) error 0x%lx RIP 0x%lx CS 0x%lx RFLAGS 0x%lx "
	       "RSP 0x%lx SS 0x%lx; code at 0x%lx\n", c->name, vector_name((uint64_t)r), r, uexc_error,
	       uexc_rip, uexc_cs & 0xffff, uexc_rflags, uexc_rsp, uexc_ss & 0xffff, utrap_va(c->code));

	uint64_t end_vector = c->next ? GP_VECTOR : c->fault;
	if ((uint64_t)r != end_vector)
		return fail("ended by %s (vector %ld) at rip=0x%lx cs=0x%lx err=0x%lx after %u traps, "
			    "want %s", vector_name((uint64_t)r), r, uexc_rip, uexc_cs & 0xffff,
			    uexc_error, n, c->next ? "the #GP of hlt" : vector_name(end_vector));
	if (uexc_error == UTRAP_OVERFLOW)
		return fail("more than %u traps, the last vector %lu at rip=0x%lx", UTRAP_MAX,
			    utrap_recs[UTRAP_MAX - 1].vector, uexc_rip);

	if (!c->next) {
		/* usermode_intgp, usermode_int3_dpl0, usermode_into: the fault ends the
		 * run, RIP on the instruction; INTO's #UD has no error code (head.S
		 * pushes 0 for it). */
		uint64_t want = end_vector == GP_VECTOR ? (c->vector << 3) | 2 : 0;
		if (n)
			return fail("vector 0x%lx through a DPL0 gate reached vector %lu (rip=0x%lx), "
				    "want %s(0x%lx)", c->vector, utrap_recs[0].vector, utrap_recs[0].rip,
				    vector_name(end_vector), want);
		if (uexc_error != want || uexc_rip != utrap_va(c->code) || (uexc_cs & 3) != 3)
			return fail("%s error 0x%lx rip=0x%lx cs=0x%lx, want error 0x%lx rip=0x%lx at CPL3",
				    vector_name(end_vector), uexc_error, uexc_rip, uexc_cs & 0xffff, want,
				    utrap_va(c->code));
		pass_note("%s error 0x%lx rip=0x%lx cs=0x%lx", vector_name(end_vector), uexc_error,
			  uexc_rip, uexc_cs & 0xffff);
		return NULL;
	}

	if (n != 1)
		return fail("%u traps before the end (#GP at rip=0x%lx), want one %s", n, uexc_rip,
			    vector_name(c->vector));
	const volatile struct utrap_rec *t = &utrap_recs[0];
	uint64_t stack_top = c->vector == 1 ? (uintptr_t)(utrap_ist_stack + sizeof(utrap_ist_stack))
					    : (uintptr_t)user_kstack_top;
	if (t->vector != c->vector || t->rip != utrap_va(c->next))
		return fail("%s at rip=0x%lx, want %s at rip=0x%lx", vector_name(t->vector), t->rip,
			    vector_name(c->vector), utrap_va(c->next));
	if ((t->cs & 0xffff) != (GDT_USER_CODE64 | 3) || (t->ss & 0xffff) != (GDT_USER_DATA | 3) ||
	    t->rsp != USER_STACK_TOP)
		return fail("frame CS 0x%lx SS 0x%lx RSP 0x%lx, want the user's 0x%x 0x%x 0x%lx",
			    t->cs & 0xffff, t->ss & 0xffff, t->rsp, GDT_USER_CODE64 | 3,
			    GDT_USER_DATA | 3, USER_STACK_TOP);
	/* Five words pushed below the 16-byte aligned stack top (SDM vol. 3, 6.14.2). */
	if (t->frame != stack_top - 40)
		return fail("frame RIP at 0x%lx, want 0x%lx (%s - 40)", t->frame, stack_top - 40,
			    c->vector == 1 ? "IST1" : "RSP0");
	if (c->vector == 1 && c->end == utrap_end_step && !(t->dr6 & 0x4000))
		return fail("DR6 0x%lx: BS (bit 14) clear after a single step", t->dr6);
	if (uexc_rip != utrap_va(c->end) || (uexc_cs & 3) != 3)
		return fail("after iretq: #GP at rip=0x%lx cs=0x%lx, want the hlt at 0x%lx at CPL3",
			    uexc_rip, uexc_cs & 0xffff, utrap_va(c->end));
	pass_note("%s rip=0x%lx cs=0x%lx rflags=0x%lx on %s, DR6 0x%lx, back at CPL3",
		  vector_name(t->vector), t->rip, t->cs & 0xffff, t->rflags,
		  c->vector == 1 ? "IST1" : "RSP0", t->dr6);
	return NULL;
}

/* One scenario per case (a scenario's run() takes no argument). */
#define UTRAP_SCENARIO(fn, ...)							\
	static const char *fn(void)						\
	{									\
		static const struct utrap_case c = { __VA_ARGS__ };		\
		return run_utrap(&c);						\
	}
UTRAP_SCENARIO(scen_usermode_int80, "usermode_int80", utrap_int80, utrap_int80_next, utrap_end_int80, 0x80, 3, 0)
UTRAP_SCENARIO(scen_usermode_int3, "usermode_int3", utrap_int3, utrap_int3_next, utrap_end_int3, 3, 3, 0)
UTRAP_SCENARIO(scen_usermode_int1, "usermode_int1", utrap_int1, utrap_int1_next, utrap_end_int1, 1, 3, 0)
UTRAP_SCENARIO(scen_usermode_step, "usermode_step", utrap_step, utrap_step_next, utrap_end_step, 1, 3, 0)
UTRAP_SCENARIO(scen_usermode_intgp, "usermode_intgp", utrap_intgp, NULL, NULL, 0x81, 3, GP_VECTOR)
/* int3 through a DPL0 #BP gate: #GP((3 << 3) | 2) at the int3 (INT3 is a
 * software interrupt: the DPL check applies, unlike INT1's). */
UTRAP_SCENARIO(scen_usermode_int3_dpl0, "usermode_int3_dpl0", utrap_int3, NULL, NULL, 3, 0, GP_VECTOR)
/* INTO in 64-bit mode: #UD at the instruction, not vector 4 (SDM vol. 2, INTO). */
UTRAP_SCENARIO(scen_usermode_into, "usermode_into", utrap_into, NULL, NULL, 4, 3, UD_VECTOR)

/* Run only when named (see testguest/README.md). */
const struct scenario user_scenarios[] = {
	{ "usermode_syscall", scen_usermode_syscall },
	{ "usermode_syscall_irq", scen_usermode_syscall_irq },
	{ "usermode_int80", scen_usermode_int80 },
	{ "usermode_int3", scen_usermode_int3 },
	{ "usermode_int1", scen_usermode_int1 },
	{ "usermode_step", scen_usermode_step },
	{ "usermode_intgp", scen_usermode_intgp },
	{ "usermode_int3_dpl0", scen_usermode_int3_dpl0 },
	{ "usermode_into", scen_usermode_into },
};
const size_t nr_user_scenarios = ARRAY_SIZE(user_scenarios);
