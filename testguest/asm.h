/*
 * Constants shared by the assembly files and C (no C syntax here).
 * Values that come from Xen's public headers are checked against them with
 * _Static_assert in main.c, because those headers are not assembler-safe.
 */
#ifndef PVH_TESTGUEST_ASM_H
#define PVH_TESTGUEST_ASM_H

/* Our GDT (head.S). */
#define GDT_CODE64	0x08
#define GDT_DATA	0x10
#define GDT_CODE32	0x18
/* Scenario usermode_syscall: SYSRET's layout from STAR[63:48] = GDT_CODE32
 * (user SS = +8, user CS = +16, both |3); TSS descriptor (16 bytes). */
#define GDT_USER_DATA	0x20
#define GDT_USER_CODE64	0x28
#define GDT_TSS		0x30
/* User RFLAGS: interrupts off; AC and DF (harmless at CPL3 with CR0.AM
 * clear and no string instructions) so that SFMASK's effect shows. */
#define USER_RFLAGS	0x40402
#define USER_BAD_SYSCALL 0x100		/* user_enter(): unknown RAX at syscall_entry */

/* Architectural bits (Intel SDM vol. 3). */
#define CR0_PE		0x00000001
#define CR0_PG		0x80000000
#define CR4_PAE		0x00000020
#define MSR_EFER	0xc0000080
#define EFER_LME	0x00000100
#define PTE_P		0x001
#define PTE_RW		0x002
#define PTE_PS		0x080

#define STACK_SIZE	0x4000

/* offsetof(struct hvm_start_info, cmdline_paddr) (start_info.h). */
#define HVM_START_INFO_CMDLINE_LO	24
/* XENVER_version (xen/version.h). */
#define HC32_XENVER_VERSION		0
/* Last CPUID base we probe for the Xen signature (base step 0x100). */
#define XEN_CPUID_LAST_BASE		0x40010000

/* The hole page scenario sharedinfo_hole maps shared_info at. */
#define SHARED_INFO_HOLE_PA		0xfeff0000

/* Interrupt vectors (events.c): Xen event-channel upcall, LAPIC watchdog. */
#define UPCALL_VECTOR			0xf3
#define LAPIC_TIMER_VECTOR		0xf4
#define SPURIOUS_VECTOR			0xff

/*
 * Scenario smp_sipi (events.c, head.S): the real-mode trampoline's page
 * (RAM below 1 MiB, unused by the image, which starts at 1 MiB) and the
 * offsets in it the trampoline writes (DS = CS = SIPI_TRAMP_PA >> 4).
 */
#define SIPI_TRAMP_PA			0x8000
#define SIPI_FLAG_OFF			0x800	/* dword: SIPI_MAGIC once real mode ran */
#define SIPI_CS_OFF			0x804	/* word: CS as the AP saw it */
#define SIPI_GO_OFF			0x808	/* byte: BSP sets 1 to go on to long mode */
#define SIPI_MAGIC			0x49504953	/* "SIPI" */
/* sipi_stage (head.S .data): set by vCPU 1 as it goes. */
#define SIPI_STAGE_PM32			2
#define SIPI_STAGE_LONG64		3
#define SIPI_STAGE_C			4	/* sipi_ap_main() finished */

#endif
