/*
 * pvh test guest: PVH entry, the 32-bit hypercall probe (scenario hc32),
 * the switch to long mode, and the interrupt/exception stubs.
 *
 * Entry state (Xen docs/misc/pvh.pandoc, "x86/HVM direct boot ABI"):
 * 32-bit flat protected mode, paging off, interrupts off, %ebx = physical
 * address of struct hvm_start_info; CS is a flat 32-bit code segment and
 * DS/ES/SS flat data segments, but their selectors, the GDTR and the IDTR
 * are unspecified, so we load our own GDT before touching any selector.
 */
#include <xen/elfnote.h>
#include <xen/xen.h>
#include <xen/arch-x86/cpuid.h>
#include "asm.h"

/* Long mode (Intel SDM vol. 3, 10.8.5): PAE, CR3 = the shared page tables,
 * EFER.LME, then CR0.PG; the caller's far jump then enters 64-bit code. */
/* Every data segment register: the flat data selector. */
.macro LOAD_DATA_SEGMENTS
	mov	$GDT_DATA, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
.endm

/* Our GDT with flat 32-bit data segments everywhere and our 32-bit code
 * segment in CS (a far jump to the next instruction). */
.macro LOAD_FLAT_GDT
	lgdt	gdt_desc
	LOAD_DATA_SEGMENTS
	ljmp	$GDT_CODE32, $1f
1:
.endm

.macro ENABLE_LONG_MODE
	mov	%cr4, %eax
	or	$CR4_PAE, %eax
	mov	%eax, %cr4
	mov	$pml4, %eax
	mov	%eax, %cr3
	mov	$MSR_EFER, %ecx
	rdmsr
	or	$EFER_LME, %eax
	wrmsr
	mov	%cr0, %eax
	or	$(CR0_PG | CR0_PE), %eax
	mov	%eax, %cr0
.endm

/*
 * The PVH note (xen/elfnote.h, XEN_ELFNOTE_PHYS32_ENTRY): name "Xen",
 * desc = 32-bit physical address of the entry point. Linux declares the same
 * note in arch/x86/platform/pvh/head.S (there with a pointer-sized desc; a
 * 4-byte desc is what the ELF note reader in Xen's libelf also accepts).
 */
	.section .note.Xen, "a", @note
	.balign 4
	.long 2f - 1f			/* namesz */
	.long 4f - 3f			/* descsz */
	.long XEN_ELFNOTE_PHYS32_ENTRY	/* type */
1:	.asciz "Xen"
2:	.balign 4
3:	.long pvh_start32
4:	.balign 4

/* ------------------------------------------------------------------ */
	.section .text.head, "ax"
	.code32
	.globl pvh_start32
pvh_start32:
	/*
	 * POST code 0 to port 0x80 (no device: the VMM drops it). It traps, so
	 * the VMM sees the guest's first instruction: pvh-bench times
	 * `pvh run` start -> first guest instruction with it, beside a bare VM
	 * whose first instruction is also an OUT. EAX is not defined at PVH
	 * entry; any value will do.
	 */
	outb	%al, $0x80
	cld
	cli
	mov	%ebx, pvh_start_info_pa

	LOAD_FLAT_GDT	/* our own CS (pvh.pandoc leaves the selector unspecified) */
	mov	$stack_top, %esp

	call	hc32_probe

	/* Long mode (Intel SDM vol. 3, 10.8.5): PAE, CR3, EFER.LME, CR0.PG. */
	ENABLE_LONG_MODE
	ljmp	$GDT_CODE64, $start64

/*
 * Secondary vCPU entry (scenario smp). VCPUOP_initialise starts the vCPU
 * here in the state of a VCPU_HVM_MODE_32B vcpu_hvm_context
 * (xen/hvm/hvm_vcpu.h): flat 32-bit protected mode, paging off, ESP set by
 * the context. Same GDT, page tables and long-mode switch as the BSP, its
 * own stack, then ap_main() (events.c), which never returns.
 */
	.globl ap_start32
ap_start32:
	cli
	LOAD_FLAT_GDT
	mov	$ap_stack_top, %esp
	ENABLE_LONG_MODE
	ljmp	$GDT_CODE64, $ap_start64

/*
 * Scenario smp_sipi: the native start-up of vCPU 1 (INIT, SIPI, SIPI), as
 * Linux brings up the secondary CPUs of a PVH guest. events.c copies
 * sipi_tramp_start..sipi_tramp_end to SIPI_TRAMP_PA (a RAM page below
 * 1 MiB); the SIPI vector SIPI_TRAMP_PA >> 12 starts the AP there in real
 * mode with CS = SIPI_TRAMP_PA >> 4, IP = 0 (Intel SDM vol. 3, 9.4.4).
 * Only offsets within the page are used until the far jump, which leaves
 * for ap_sipi32 by its absolute (linked) address.
 *
 * Real mode: DS = CS; write SIPI_MAGIC to SIPI_FLAG_OFF and CS to
 * SIPI_CS_OFF (the first milestone). If the BSP set SIPI_GO_OFF, go on:
 * our GDT (lgdtl through a copy of its descriptor in the page), CR0 = PE,
 * far jump to 32-bit ap_sipi32, then the same long-mode switch as the BSP
 * and sipi_ap_main() (events.c). Otherwise cli; hlt forever.
 */
	.code16
	.globl sipi_tramp_start, sipi_tramp_end
	.balign 16
sipi_tramp_start:
	cli
	mov	%cs, %ax
	mov	%ax, %ds
	movl	$SIPI_MAGIC, SIPI_FLAG_OFF
	mov	%cs, SIPI_CS_OFF
	cmpb	$0, SIPI_GO_OFF
	je	2f
	lgdtl	sipi_gdt_desc - sipi_tramp_start
	mov	$CR0_PE, %eax
	mov	%eax, %cr0
	ljmpl	$GDT_CODE32, $ap_sipi32
2:	cli
	hlt
	jmp	2b
	.balign 8
sipi_gdt_desc:
	.word	gdt_end - gdt - 1
	.long	gdt
sipi_tramp_end:
	.code32

/*
 * vCPU 1 in 32-bit protected mode after the trampoline's far jump. The data
 * segments still hold their real-mode bases and 64 KiB limits: load flat
 * ones (the trampoline's lgdtl already loaded our GDT) before any memory
 * access, or the absolute gdt_desc in LOAD_FLAT_GDT is beyond DS's limit
 * (#GP, and with the real-mode IDT a triple fault).
 */
ap_sipi32:
	mov	$GDT_DATA, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	LOAD_FLAT_GDT
	movl	$SIPI_STAGE_PM32, sipi_stage
	mov	$ap_stack_top, %esp
	ENABLE_LONG_MODE
	ljmp	$GDT_CODE64, $ap_sipi64

/*
 * Scenario hc32: one xen_version(XENVER_version) hypercall from 32-bit
 * protected mode through the hypercall page, using the 32-bit register ABI
 * (EAX = number, set by the stub; EBX, ECX, EDX, ESI, EDI = arguments).
 * Runs only if the command line selects it: no "pvh.scenarios=" at all
 * (default: all scenarios) or a list that mentions "hc32". The result is
 * checked later from C (scenarios.c).
 */
hc32_probe:
	push	%ebx
	push	%esi
	push	%edi
	push	%ebp
	mov	pvh_start_info_pa, %ebx
	mov	HVM_START_INFO_CMDLINE_LO(%ebx), %esi
	cmpl	$0, HVM_START_INFO_CMDLINE_LO+4(%ebx)
	jne	.Lhc32_done		/* command line above 4 GiB: give up */
	test	%esi, %esi
	jz	.Lhc32_run		/* no command line: all scenarios */
	mov	$str_scenarios_opt, %edi
	call	strstr32
	test	%eax, %eax
	jz	.Lhc32_run
	mov	$str_hc32, %edi
	call	strstr32
	test	%eax, %eax
	jz	.Lhc32_done
.Lhc32_run:
	call	xen_cpuid_base32
	test	%eax, %eax
	jz	.Lhc32_done
	add	$2, %eax		/* leaf base+2: EBX = hypercall MSR */
	cpuid
	mov	%ebx, %ecx
	mov	$hypercall_page, %eax
	xor	%edx, %edx
	wrmsr				/* the VMM fills hypercall_page */

	mov	$HC32_XENVER_VERSION, %ebx
	xor	%ecx, %ecx
	mov	$0x5a5a0001, %edx	/* canaries: unused argument registers */
	mov	$0x5a5a0002, %esi	/* must come back unchanged */
	mov	$0x5a5a0003, %edi
	mov	$0x5a5a0004, %ebp
	call	hypercall_page + __HYPERVISOR_xen_version * 32
	mov	%eax, hc32_result
	xor	%eax, %eax
	cmp	$HC32_XENVER_VERSION, %ebx
	setne	%al
	or	%eax, hc32_clobbered
	test	%ecx, %ecx
	setne	%al
	or	%eax, hc32_clobbered
	cmp	$0x5a5a0001, %edx
	setne	%al
	or	%eax, hc32_clobbered
	cmp	$0x5a5a0002, %esi
	setne	%al
	or	%eax, hc32_clobbered
	cmp	$0x5a5a0003, %edi
	setne	%al
	or	%eax, hc32_clobbered
	cmp	$0x5a5a0004, %ebp
	setne	%al
	or	%eax, hc32_clobbered
	movl	$1, hc32_ran
.Lhc32_done:
	pop	%ebp
	pop	%edi
	pop	%esi
	pop	%ebx
	ret

/* %eax = 1 if the NUL-terminated string at %edi occurs in the one at %esi. */
strstr32:
	push	%esi
	push	%ebx
	push	%edx
.Lss_outer:
	xor	%edx, %edx
.Lss_inner:
	movb	(%edi,%edx), %al
	test	%al, %al
	jz	.Lss_found
	cmpb	%al, (%esi,%edx)
	jne	.Lss_next
	inc	%edx
	jmp	.Lss_inner
.Lss_next:
	cmpb	$0, (%esi)
	je	.Lss_notfound
	inc	%esi
	jmp	.Lss_outer
.Lss_found:
	mov	$1, %eax
	jmp	.Lss_ret
.Lss_notfound:
	xor	%eax, %eax
.Lss_ret:
	pop	%edx
	pop	%ebx
	pop	%esi
	ret

/* %eax = Xen's CPUID base leaf, or 0 (same search as xen_cpuid_base()). */
xen_cpuid_base32:
	push	%ebx
	push	%esi
	mov	$XEN_CPUID_FIRST_LEAF, %esi
1:	mov	%esi, %eax
	xor	%ecx, %ecx
	cpuid
	cmp	$XEN_CPUID_SIGNATURE_EBX, %ebx
	jne	2f
	cmp	$XEN_CPUID_SIGNATURE_ECX, %ecx
	jne	2f
	cmp	$XEN_CPUID_SIGNATURE_EDX, %edx
	jne	2f
	sub	%esi, %eax		/* max leaf - base must be >= 2 */
	cmp	$2, %eax
	jb	2f
	mov	%esi, %eax
	jmp	3f
2:	add	$0x100, %esi
	cmp	$XEN_CPUID_LAST_BASE, %esi
	jbe	1b
	xor	%eax, %eax
3:	pop	%esi
	pop	%ebx
	ret

/* ------------------------------------------------------------------ */
	.code64
start64:
	LOAD_DATA_SEGMENTS
	mov	$stack_top, %rsp

	/* Zero .bss (small: a few hundred bytes; the big pages are NOLOAD). */
	mov	$__bss_start, %edi
	mov	$__bss_end, %ecx
	sub	%edi, %ecx
	shr	$3, %ecx
	xor	%eax, %eax
	rep stosq

	mov	pvh_start_info_pa, %edi	/* zero-extends into %rdi */
	call	pvh_main
1:	cli
	hlt
	jmp	1b

/*
 * Interrupt entry points (64-bit IDT gates, installed by idt_init()).
 *
 * #BP (vector 3) and vector 0x80 just count and record the return RIP, then
 * iretq. On this host `int3`/`int $n` at CPL0 cannot be emulated by KVM, so
 * the VMM delivers them through this IDT itself; the frame must be the one
 * the CPU would build (RIP of the next instruction, CS, RFLAGS, RSP, SS).
 */
	.text
	.globl bp_handler
bp_handler:
	push	%rax
	mov	8(%rsp), %rax
	mov	%rax, bp_rip
	incl	bp_count
	pop	%rax
	iretq

	.globl int80_handler
int80_handler:
	push	%rax
	mov	8(%rsp), %rax
	mov	%rax, int80_rip
	incl	int80_count
	pop	%rax
	iretq

/*
 * External interrupts (events.c): the event-channel upcall vector and the
 * local APIC timer used as a watchdog for bounded `hlt`. The stubs save the
 * caller-saved registers (9 pushes keep the C call 16-byte aligned after the
 * 5-word interrupt frame), call the C handler, restore and iretq. The
 * handlers write the LAPIC EOI themselves. The spurious vector (0xff) gets
 * no EOI (Intel SDM vol. 3, 11.9).
 */
.macro IRQ_STUB name, handler, frame=0
	.globl \name
\name:
	push	%rax
	push	%rcx
	push	%rdx
	push	%rsi
	push	%rdi
	push	%r8
	push	%r9
	push	%r10
	push	%r11
	cld
	.if \frame
	lea	72(%rsp), %rdi		/* the interrupt frame, past the 9 pushes */
	.endif
	call	\handler
	pop	%r11
	pop	%r10
	pop	%r9
	pop	%r8
	pop	%rdi
	pop	%rsi
	pop	%rdx
	pop	%rcx
	pop	%rax
	iretq
.endm

	IRQ_STUB upcall_entry, evtchn_upcall
	IRQ_STUB lapic_timer_entry, lapic_timer_tick

/* usermode_syscall_irq: the LAPIC timer or the upcall, with its interrupt frame (RDI). */
	IRQ_STUB user_irq_entry, user_irq_tick, frame=1
	IRQ_STUB user_upcall_entry, user_upcall_tick, frame=1

	.globl spurious_entry
spurious_entry:
	iretq

	.code64
ap_start64:
	LOAD_DATA_SEGMENTS
	mov	$ap_stack_top, %rsp
	call	ap_main
1:	cli
	hlt
	jmp	1b

ap_sipi64:
	LOAD_DATA_SEGMENTS
	mov	$ap_stack_top, %rsp
	movl	$SIPI_STAGE_LONG64, sipi_stage
	call	sipi_ap_main
1:	cli
	hlt
	jmp	1b

/*
 * Scenario usermode_syscall (usermode.c). SYSCALL/SYSRET between CPL3 and
 * CPL0 (Intel SDM vol. 2B SYSCALL, SYSRET; vol. 3, 5.8.8).
 *
 * long user_enter(uint64_t rip, uint64_t rsp): saves the callee-saved
 * registers and RSP (user_kernel_rsp), then iretq to CPL3 (CS
 * GDT_USER_CODE64|3, SS GDT_USER_DATA|3, RFLAGS 0x2: interrupts off).
 * Control comes back through user_return with %eax = 0 (exit syscall),
 * the exception vector (user_exc_*), or USER_BAD_SYSCALL.
 */
	.text
	.globl user_enter
user_enter:
	push	%rbx
	push	%rbp
	push	%r12
	push	%r13
	push	%r14
	push	%r15
	mov	%rdx, %r12		/* usermode_syscall_irq: the loop count */
	mov	%rsp, user_kernel_rsp
	push	$(GDT_USER_DATA | 3)
	push	%rsi
	pushq	user_rflags
	push	$(GDT_USER_CODE64 | 3)
	push	%rdi
	iretq

user_return:
	cld
	mov	user_kernel_rsp, %rsp
	pop	%r15
	pop	%r14
	pop	%r13
	pop	%r12
	pop	%rbp
	pop	%rbx
	ret

/*
 * MSR_LSTAR. Expected at CPL0 with CS = GDT_CODE64, SS = GDT_DATA, RSP
 * still the user's. RAX 1: record CS, SS, RCX, R11, RSP (usys1), return to
 * RCX with sysretq, or with iretq if user_iret_mode (pvh.user=iret). RAX 2:
 * record CS, SS, RCX, R11 and RBX/RDX = the user's CS/SS after the first
 * return (usys2), then user_return with 0. Only absolute stores: if SYSCALL
 * left the CPU at CPL3, the very first fetch here faults (supervisor page).
 */
	.globl syscall_entry, syscall_entry_stackless_end
syscall_entry:
	cmp	$3, %rax		/* usermode_syscall_irq: count, sysret; no stack use */
	jne	4f
	incl	usys_count
	sysretq
syscall_entry_stackless_end:
4:	cmp	$1, %rax
	jne	2f
	movw	%cs, usys1_cs
	movw	%ss, usys1_ss
	mov	%rcx, usys1_rcx
	mov	%r11, usys1_r11
	mov	%rsp, usys1_rsp
	incl	usys_count
	cmpl	$0, user_iret_mode
	jne	1f
	sysretq
1:	mov	$user_kstack_top, %rsp
	push	$(GDT_USER_DATA | 3)
	pushq	usys1_rsp
	push	%r11
	push	$(GDT_USER_CODE64 | 3)
	push	%rcx
	iretq
2:	movw	%cs, usys2_cs
	cmp	$2, %rax
	jne	3f
	movw	%ss, usys2_ss
	mov	%rcx, usys2_rcx
	mov	%r11, usys2_r11
	mov	%rbx, usys2_user_cs
	mov	%rdx, usys2_user_ss
	incl	usys_count
	xor	%eax, %eax
	jmp	user_return
3:	mov	%rax, usys_bad_nr
	mov	$USER_BAD_SYSCALL, %eax
	jmp	user_return

/* #UD, #GP, #PF while the scenario runs: record the frame, user_return. */
.macro USER_EXC vec
	.globl user_exc_\vec
user_exc_\vec:
	.if \vec == 6
	push	$0
	.endif
	push	$\vec
	jmp	user_exc_common
.endm
	USER_EXC 6
	USER_EXC 13
	USER_EXC 14

user_exc_common:
	cld				/* user RFLAGS has DF set */
	mov	%rcx, uexc_rcx		/* RCX/R11 as the faulting code left them */
	mov	%r11, uexc_r11
	pop	%rax
	mov	%rax, uexc_vector
	pop	%rax
	mov	%rax, uexc_error
	pop	%rax
	mov	%rax, uexc_rip
	pop	%rax
	mov	%rax, uexc_cs
	pop	%rax
	mov	%rax, uexc_rflags
	pop	%rax
	mov	%rax, uexc_rsp
	pop	%rax
	mov	%rax, uexc_ss
	mov	%cr2, %rax
	mov	%rax, uexc_cr2
	mov	uexc_vector, %eax
	jmp	user_return

/*
 * The CPL3 code, copied by usermode.c to user_code_page (mapped at
 * USER_VA); position independent. hlt at CPL3 is a #GP: the end marker.
 */
	.globl user_code_start, user_code_sys1_next, user_code_sys2_next, user_code_end
user_code_start:
	mov	$1, %eax
	syscall
user_code_sys1_next:
	mov	%cs, %ebx
	mov	%ss, %edx
	mov	$2, %eax
	syscall
user_code_sys2_next:
	hlt
/* usermode_syscall_irq: R12 syscalls (RAX 3) with interrupts on, then exit (RAX 2). */
	.globl user_loop_start
user_loop_start:
1:	mov	$3, %eax
	syscall
	dec	%r12
	jnz	1b
	mov	%cs, %ebx
	mov	%ss, %edx
	mov	$2, %eax
	syscall
	hlt
user_code_end:

/*
 * Exceptions 0-31 other than #BP: report and stop (exception_fatal() prints
 * the frame and shuts down with SHUTDOWN_crash). Vectors 8, 10-14, 17, 21,
 * 29 and 30 push an error code; the others get a dummy 0 so that the frame
 * is always: vector, error code, RIP, CS, RFLAGS, RSP, SS.
 */
.macro EXC_STUB vec
exc_stub_\vec:
	.if (\vec == 8) || (\vec >= 10 && \vec <= 14) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
	.else
	push	$0
	.endif
	push	$\vec
	jmp	exc_common
.endm

	.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	EXC_STUB \v
	.endr

exc_common:
	mov	%rsp, %rdi
	and	$-16, %rsp
	call	exception_fatal
1:	cli
	hlt
	jmp	1b

	.section .rodata
	.balign 8
	.globl exc_stubs
exc_stubs:
	.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.quad exc_stub_\v
	.endr

str_scenarios_opt:	.asciz "pvh.scenarios="
str_hc32:		.asciz "hc32"

/* ------------------------------------------------------------------ */
	.data
	.balign 8
	.globl pvh_start_info_pa, hc32_ran, hc32_result, hc32_clobbered
pvh_start_info_pa:	.long 0	/* written before .bss is zeroed: keep in .data */
hc32_ran:		.long 0
hc32_result:		.long 0
hc32_clobbered:		.long 0

	/* usermode_syscall (usermode.c zeroes them before each run) */
	.globl user_kernel_rsp, user_iret_mode, usys_count, usys_bad_nr
	.globl usys1_cs, usys1_ss, usys1_rcx, usys1_r11, usys1_rsp
	.globl usys2_cs, usys2_ss, usys2_rcx, usys2_r11, usys2_user_cs, usys2_user_ss
	.globl uexc_vector, uexc_error, uexc_rip, uexc_cs, uexc_rflags, uexc_rsp, uexc_ss, uexc_cr2
	.globl uexc_rcx, uexc_r11
user_kernel_rsp:	.quad 0
	.globl user_rflags
user_rflags:		.quad USER_RFLAGS
user_iret_mode:		.long 0
usys_count:		.long 0
usys_bad_nr:		.quad 0
usys1_cs:		.quad 0
usys1_ss:		.quad 0
usys1_rcx:		.quad 0
usys1_r11:		.quad 0
usys1_rsp:		.quad 0
usys2_cs:		.quad 0
usys2_ss:		.quad 0
usys2_rcx:		.quad 0
usys2_r11:		.quad 0
usys2_user_cs:		.quad 0
usys2_user_ss:		.quad 0
uexc_vector:		.quad 0
uexc_error:		.quad 0
uexc_rip:		.quad 0
uexc_cs:		.quad 0
uexc_rflags:		.quad 0
uexc_rsp:		.quad 0
uexc_ss:		.quad 0
uexc_cr2:		.quad 0
uexc_rcx:		.quad 0
uexc_r11:		.quad 0

	.globl sipi_stage
sipi_stage:		.long 0	/* smp_sipi: how far vCPU 1 got (asm.h SIPI_STAGE_*) */

	.globl bp_count, bp_rip, int80_count, int80_rip
bp_count:	.long 0
int80_count:	.long 0
bp_rip:		.quad 0
int80_rip:	.quad 0

/* GDT: null, 64-bit code, flat data, flat 32-bit code (see asm.h). */
	.balign 16
	.globl gdt
gdt:
	.quad 0
	.quad 0x00af9a000000ffff	/* GDT_CODE64: L=1, DPL0, exec/read */
	.quad 0x00cf92000000ffff	/* GDT_DATA: 4 GiB, read/write */
	.quad 0x00cf9a000000ffff	/* GDT_CODE32: 4 GiB, D=1, exec/read */
	/* usermode_syscall: SYSRET's layout (STAR[63:48] = GDT_CODE32:
	 * SS = +8 |3, CS = +16 |3); SYSCALL's is GDT_CODE64, GDT_DATA. */
	.quad 0x00cff2000000ffff	/* GDT_USER_DATA: 4 GiB, DPL3, read/write */
	.quad 0x00affa000000ffff	/* GDT_USER_CODE64: L=1, DPL3, exec/read */
	.globl gdt_tss
gdt_tss:
	.quad 0, 0			/* GDT_TSS: 64-bit TSS, written by usermode.c */
gdt_end:
gdt_desc:
	.word gdt_end - gdt - 1
	.quad gdt

/*
 * Page tables, built at assembly time (no loop at run time): identity map
 * of the low 4 GiB with 2 MiB pages. That covers the image, start_info,
 * the command line, ACPI tables and the memory-map hole just below 4 GiB
 * (scenario sharedinfo_hole maps the shared-info page at 0xFEFF0000).
 * Everything above 4 GiB is unmapped; scenario hostile relies on that.
 */
	.section .data.pagetables, "aw"
	.balign 4096
	.globl pml4
pml4:
	.quad pdpt + PTE_P + PTE_RW
	.fill 511, 8, 0
pdpt:
	.quad pd + 0x0000 + PTE_P + PTE_RW
	.quad pd + 0x1000 + PTE_P + PTE_RW
	.quad pd + 0x2000 + PTE_P + PTE_RW
	.quad pd + 0x3000 + PTE_P + PTE_RW
	.fill 508, 8, 0
pd:
	.set pd_i, 0
	.rept 2048
	.quad (pd_i << 21) + PTE_P + PTE_RW + PTE_PS
	.set pd_i, pd_i + 1
	.endr

/* Scenario usermode_syscall (usermode.c): page tables of the user
 * mapping at USER_VA, its code and stack pages, the kernel stack for
 * SYSCALL-with-iretq and for exceptions from CPL3 (TSS RSP0). */
	.section .pages, "aw", @nobits
	.balign 4096
	.globl user_pdpt, user_pd, user_pt, user_code_page, user_stack_page, user_kstack_top
user_pdpt:	.skip 4096
user_pd:	.skip 4096
user_pt:	.skip 4096
user_code_page:	.skip 4096
user_stack_page: .skip 4096
	.skip 8192
user_kstack_top:

/* Stack (NOLOAD, see linker.ld). */
	.section .pages, "aw", @nobits
	.balign 4096
stack_bottom:
	.skip STACK_SIZE
stack_top:
