/*
 * pvh test guest: the two 64-bit hypercall transports.
 *
 * Xen's 64-bit hypercall ABI (xen/arch-x86/xen-x86_64.h): RAX = number,
 * arguments in RDI, RSI, RDX, R10, R8; result in RAX. Our C entry points
 * take (nr, a1, a2, a3, a4, a5) in the SysV registers RDI, RSI, RDX, RCX,
 * R8, R9 and shuffle them into place.
 */
#include <xen/xen.h>

/*
 * 1. Hypercall page. The guest names a page-aligned frame with WRMSR (MSR
 *    index from CPUID leaf base+2); the hypervisor fills it with 32-byte
 *    stubs, stub N performing hypercall N and setting EAX itself.
 */
	.section .pages, "aw", @nobits
	.balign 4096
	.globl hypercall_page
hypercall_page:
	.skip 4096

/*
 * Scratch RAM frames: sharedinfo and vcpuinfo (scenarios.c); events.c maps
 * shared_info at its own frame, xen_shared_info_page.
 */
	.globl shared_info_ram_page, vcpu_info_page, xen_shared_info_page
shared_info_ram_page:
	.skip 4096
vcpu_info_page:
	.skip 4096
xen_shared_info_page:
	.skip 4096
/* Stack of the secondary vCPU (scenario smp, head.S ap_start32). */
	.globl ap_stack_top
	.skip 0x4000
ap_stack_top:

	.text
	.globl hc_page_call
hc_page_call:
	mov	%rdi, %rax
	mov	%rsi, %rdi
	mov	%rdx, %rsi
	mov	%rcx, %rdx
	mov	%r8, %r10
	mov	%r9, %r8
	shl	$5, %rax		/* 32 bytes per stub */
	add	$hypercall_page, %rax
	call	*%rax
	ret

/*
 * 2. vmcall/vmmcall, laid out like Linux since XSA-466
 *    (arch/x86/xen/xen-head.S and enlighten.c): callers use the static call
 *    xen_hypercall, whose trampoline __SCT__xen_hypercall is exported in
 *    __ksymtab and jumps to xen_hypercall_hvm; that one selects the vendor
 *    variant and tail-jumps to xen_hypercall_amd (vmmcall; ret) or
 *    xen_hypercall_intel (vmcall; ret). The VMM finds the two instructions
 *    from the ELF by following exactly this chain, puts hardware
 *    breakpoints on them, performs the hypercall and skips the 3 bytes.
 *    Unlike Linux we never repoint the trampoline, so every call takes the
 *    whole chain.
 */
	.globl hc_static_call
hc_static_call:
	mov	%rdi, %rax
	mov	%rsi, %rdi
	mov	%rdx, %rsi
	mov	%rcx, %rdx
	mov	%r8, %r10
	mov	%r9, %r8
	call	__SCT__xen_hypercall
	ret

/*
 * Static-call trampoline: "jmp rel32" (e9) to the current target, then the
 * 3-byte "ud1 %esp, %ecx" (0f b9 cc) Linux's x86 static_call appends as a
 * trampoline signature.
 */
	.balign 8
	.globl __SCT__xen_hypercall
	.type __SCT__xen_hypercall, @function
__SCT__xen_hypercall:
	.byte	0xe9
	.long	xen_hypercall_hvm - (. + 4)
	.byte	0x0f, 0xb9, 0xcc
	.size __SCT__xen_hypercall, . - __SCT__xen_hypercall

/*
 * Entered with the hypercall number in RAX and the arguments in place:
 * everything the C helper may clobber is saved, and only the flags of the
 * compare survive into the final jz/jmp (pop does not change flags).
 */
	.balign 16
	.globl xen_hypercall_hvm
	.type xen_hypercall_hvm, @function
xen_hypercall_hvm:
	push	%rax
	push	%rcx
	push	%rdx
	push	%rdi
	push	%rsi
	push	%r11
	push	%r10
	push	%r9
	push	%r8
	call	xen_hypercall_setfunc	/* RAX = xen_hypercall_amd or _intel */
	lea	xen_hypercall_amd(%rip), %rcx
	cmp	%rax, %rcx
	pop	%r8
	pop	%r9
	pop	%r10
	pop	%r11
	pop	%rsi
	pop	%rdi
	pop	%rdx
	pop	%rcx
	pop	%rax
	jz	xen_hypercall_amd
	jmp	xen_hypercall_intel
	.size xen_hypercall_hvm, . - xen_hypercall_hvm

	.balign 32
	.globl xen_hypercall_amd
	.type xen_hypercall_amd, @function
xen_hypercall_amd:
	vmmcall				/* 0f 01 d9 */
	ret
	.size xen_hypercall_amd, . - xen_hypercall_amd

	.balign 32
	.globl xen_hypercall_intel
	.type xen_hypercall_intel, @function
xen_hypercall_intel:
	vmcall				/* 0f 01 c1 */
	ret
	.size xen_hypercall_intel, . - xen_hypercall_intel

/*
 * Export table, in the format of Linux's struct kernel_symbol with
 * CONFIG_HAVE_ARCH_PREL32_RELOCATIONS (include/linux/export-internal.h):
 * three int32 fields, each "target - &field": value, name, namespace.
 * Sorted by name, as in vmlinux. The namespace of both is "" (no namespace).
 */
	.section __ksymtab, "a"
	.balign 4
__ksymtab___SCT__xen_hypercall:
	.long	__SCT__xen_hypercall - .
	.long	__kstrtab___SCT__xen_hypercall - .
	.long	__kstrtabns_none - .
__ksymtab_hypercall_page:
	.long	hypercall_page - .
	.long	__kstrtab_hypercall_page - .
	.long	__kstrtabns_none - .

	.section __ksymtab_strings, "a"
__kstrtab___SCT__xen_hypercall:
	.asciz	"__SCT__xen_hypercall"
__kstrtab_hypercall_page:
	.asciz	"hypercall_page"
__kstrtabns_none:
	.asciz	""
