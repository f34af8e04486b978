/*
 * pvh test guest: command line, scenario runner, result lines.
 *
 * Command line (start_info.cmdline_paddr), space-separated, all optional:
 *   pvh.transport=page|vmcall    hypercall transport (default page)
 *   pvh.scenarios=a,b,c          scenarios to run, in this order (default all)
 *   pvh.exit=poweroff|reboot|crash|acpi   shutdown reason at the end (default
 *                                poweroff; acpi: ACPI S5, see acpi.c)
 *
 * Output (Xen console), one line each:
 *   PVHTEST BOOT transport=<page|vmcall>      (also written to port 0xE9)
 *   PVHTEST <name> PASS
 *   PVHTEST <name> FAIL <short reason>
 *   PVHTEST SUMMARY <passed> passed, <failed> failed
 * A scenario may append to its PASS line (pass_note): "PVHTEST <name> PASS <note>".
 * Lines starting with "PVHINFO " are diagnostics, "PVHCONSOLE " the long
 * write of scenario console.
 */
#include "testguest.h"

/* head.S relies on these; the Xen headers cannot be included there. */
_Static_assert(offsetof(struct hvm_start_info, cmdline_paddr) == HVM_START_INFO_CMDLINE_LO,
	       "asm.h: cmdline_paddr offset");
_Static_assert(XENVER_version == HC32_XENVER_VERSION, "asm.h: XENVER_version");

const struct hvm_start_info *start_info;

static const char *cmdline = "";

/*
 * Value of option "key=" on the command line: pointer to the value and its
 * length (up to the next space), or NULL.
 */
const char *cmdline_opt(const char *key, size_t *len)
{
	size_t klen = strlen(key);
	const char *p = cmdline;

	while (*p) {
		while (*p == ' ')
			p++;
		const char *tok = p;
		while (*p && *p != ' ')
			p++;
		if ((size_t)(p - tok) >= klen && strncmp(tok, key, klen) == 0) {
			*len = (size_t)(p - tok) - klen;
			return tok + klen;
		}
	}
	return NULL;
}

static int opt_is(const char *v, size_t len, const char *word)
{
	return v && len == strlen(word) && strncmp(v, word, len) == 0;
}

static unsigned passed, failed;
static char note[160];

void pass_note(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(note, sizeof(note), fmt, ap);
	va_end(ap);
}

static void result(const char *name, size_t nlen, const char *reason)
{
	if (reason) {
		printk("PVHTEST %.*s FAIL %s\n", (int)nlen, name, reason);
		failed++;
	} else if (note[0]) {
		printk("PVHTEST %.*s PASS %s\n", (int)nlen, name, note);
		passed++;
	} else {
		printk("PVHTEST %.*s PASS\n", (int)nlen, name);
		passed++;
	}
	note[0] = 0;
}

static void summary(void)
{
	printk("PVHTEST SUMMARY %u passed, %u failed\n", passed, failed);
}

void scenario_result(const char *name, const char *reason)
{
	result(name, strlen(name), reason);
}

void finish_now(const char *name, const char *reason, unsigned int shutdown_reason)
{
	if (name)
		result(name, strlen(name), reason);
	summary();
	shutdown(shutdown_reason);
}

static void run_scenario(const char *name, size_t nlen)
{
	for (size_t i = 0; i < nr_scenarios; i++) {
		if (strlen(scenarios[i].name) == nlen &&
		    strncmp(scenarios[i].name, name, nlen) == 0) {
			result(name, nlen, scenarios[i].run());
			return;
		}
	}
	for (size_t i = 0; i < nr_bench_scenarios; i++) {
		if (strlen(bench_scenarios[i].name) == nlen &&
		    strncmp(bench_scenarios[i].name, name, nlen) == 0) {
			result(name, nlen, bench_scenarios[i].run());
			return;
		}
	}
	for (size_t i = 0; i < nr_acpi_scenarios; i++) {
		if (strlen(acpi_scenarios[i].name) == nlen &&
		    strncmp(acpi_scenarios[i].name, name, nlen) == 0) {
			result(name, nlen, acpi_scenarios[i].run());
			return;
		}
	}
	for (size_t i = 0; i < nr_xen_scenarios; i++) {
		if (strlen(xen_scenarios[i].name) == nlen &&
		    strncmp(xen_scenarios[i].name, name, nlen) == 0) {
			result(name, nlen, xen_scenarios[i].run());
			return;
		}
	}
	for (size_t i = 0; i < nr_xenstore_scenarios; i++) {
		if (strlen(xenstore_scenarios[i].name) == nlen &&
		    strncmp(xenstore_scenarios[i].name, name, nlen) == 0) {
			result(name, nlen, xenstore_scenarios[i].run());
			return;
		}
	}
	for (size_t i = 0; i < nr_grant_scenarios; i++) {
		if (strlen(grant_scenarios[i].name) == nlen &&
		    strncmp(grant_scenarios[i].name, name, nlen) == 0) {
			result(name, nlen, grant_scenarios[i].run());
			return;
		}
	}
	for (size_t i = 0; i < nr_blk_scenarios; i++) {
		if (strlen(blk_scenarios[i].name) == nlen &&
		    strncmp(blk_scenarios[i].name, name, nlen) == 0) {
			result(name, nlen, blk_scenarios[i].run());
			return;
		}
	}
	for (size_t i = 0; i < nr_net_scenarios; i++) {
		if (strlen(net_scenarios[i].name) == nlen &&
		    strncmp(net_scenarios[i].name, name, nlen) == 0) {
			result(name, nlen, net_scenarios[i].run());
			return;
		}
	}
	for (size_t i = 0; i < nr_hostile_scenarios; i++) {
		if (strlen(hostile_scenarios[i].name) == nlen &&
		    strncmp(hostile_scenarios[i].name, name, nlen) == 0) {
			result(name, nlen, hostile_scenarios[i].run());
			return;
		}
	}
	for (size_t i = 0; i < nr_user_scenarios; i++) {
		if (strlen(user_scenarios[i].name) == nlen &&
		    strncmp(user_scenarios[i].name, name, nlen) == 0) {
			result(name, nlen, user_scenarios[i].run());
			return;
		}
	}
	result(name, nlen, "unknown scenario");
}

void pvh_main(uint32_t start_info_pa)
{
	/* pvh.pandoc: %ebx points at hvm_start_info; trust it only if valid. */
	start_info = PHYS(start_info_pa);
	if (phys_ok(start_info_pa, sizeof(*start_info)) &&
	    start_info->magic == XEN_HVM_START_MAGIC_VALUE &&
	    phys_ok(start_info->cmdline_paddr, 1))
		cmdline = PHYS(start_info->cmdline_paddr);

	size_t len;
	const char *t = cmdline_opt("pvh.transport=", &len);
	const char *bad_transport = NULL;
	if (opt_is(t, len, "vmcall"))
		transport = TRANSPORT_VMCALL;
	else if (t && !opt_is(t, len, "page"))
		bad_transport = t;

	/* First line: byte by byte to port 0xE9, then (below) to the Xen console. */
	char boot[64];
	int n = snprintf(boot, sizeof(boot), "PVHTEST BOOT transport=%s\n",
			 transport == TRANSPORT_VMCALL ? "vmcall" : "page");
	e9_write(boot, (size_t)n);

	uint32_t base = xen_cpuid_base();
	hypercall_init(base);
	if (base) {
		console_write(boot, (size_t)n);
	} else {
		printk("PVHINFO no Xen CPUID signature: console on port 0xE9, "
		       "hypercalls fail with -ENOSYS\n");
		result("xen", 3, "no Xen CPUID signature");
	}

	idt_init();

	if (bad_transport) {
		size_t l = 0;
		while (bad_transport[l] && bad_transport[l] != ' ')
			l++;
		printk("PVHINFO unknown pvh.transport=%.*s, using page\n", (int)l, bad_transport);
		result("cmdline", 7, "unknown transport");
	}

	const char *list = cmdline_opt("pvh.scenarios=", &len);
	if (list) {
		const char *end = list + len;
		while (list < end) {
			const char *comma = list;
			while (comma < end && *comma != ',')
				comma++;
			if (comma > list)
				run_scenario(list, (size_t)(comma - list));
			list = comma + 1;
		}
	} else {
		for (size_t i = 0; i < nr_scenarios; i++)
			result(scenarios[i].name, strlen(scenarios[i].name),
			       scenarios[i].run());
	}

	summary();

	const char *e = cmdline_opt("pvh.exit=", &len);
	unsigned reason = SHUTDOWN_poweroff;
	if (opt_is(e, len, "acpi")) {
		acpi_poweroff();	/* returns only if it failed */
		reason = SHUTDOWN_crash;
	} else if (opt_is(e, len, "reboot"))
		reason = SHUTDOWN_reboot;
	else if (opt_is(e, len, "crash"))
		reason = SHUTDOWN_crash;
	shutdown(reason);
}

/* Frame built by exc_stub_N / exc_common (head.S). */
struct exc_frame {
	uint64_t vector, error, rip, cs, rflags, rsp, ss;
};

void exception_fatal(const struct exc_frame *f)
{
	char buf[160];
	uint64_t cr2;
	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	int n = snprintf(buf, sizeof(buf),
			 "PVHTEST EXCEPTION vector %lu error 0x%lx rip 0x%lx cr2 0x%lx\n",
			 f->vector, f->error, f->rip, cr2);
	e9_write(buf, (size_t)n);

	/* The fault may come from the hypercall path itself: try it only once. */
	static int nested;
	if (!nested++) {
		console_write(buf, (size_t)n);
		shutdown(SHUTDOWN_crash);
	}
	for (;;)
		__asm__ volatile("cli; hlt");
}
