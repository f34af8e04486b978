/*
 * ACPI power-off, the way Linux's acpi_power_off does it on a
 * hardware-reduced platform (ACPI 6.5 §4.8.3.7, §7.4.2 \_S5): find the FADT
 * through start_info's RSDP and the XSDT, take SLEEP_CONTROL_REG from it and
 * SLP_TYP from the DSDT's \_S5 package, then write SLP_TYP << 2 | SLP_EN.
 *
 *   pvh.scenarios=acpi_s5   check the tables and print what was found
 *   pvh.exit=acpi           power off that way at the end instead of
 *                           SCHEDOP_shutdown
 */
#include "testguest.h"

struct acpi_s5 {
	uint16_t port;   /* sleep control register (System I/O) */
	uint8_t slp_typ; /* from \_S5 */
};

static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* A table at `pa` with signature `sig`; its length, or 0. */
static uint32_t acpi_table(uint64_t pa, const char *sig)
{
	if (!phys_ok(pa, 36) || memcmp(PHYS(pa), sig, 4) != 0)
		return 0;
	uint32_t len = rd32((const uint8_t *)PHYS(pa) + 4);
	if (len < 36 || !phys_ok(pa, len))
		return 0;
	uint8_t sum = 0;
	for (uint32_t i = 0; i < len; i++)
		sum += ((const uint8_t *)PHYS(pa))[i];
	return sum == 0 ? len : 0;
}

static const char *acpi_find_s5(struct acpi_s5 *out)
{
	const struct hvm_start_info *si = start_info;
	if (!phys_ok(si->rsdp_paddr, 36))
		return "no RSDP";
	const uint8_t *rsdp = PHYS(si->rsdp_paddr);
	if (memcmp(rsdp, "RSD PTR ", 8) != 0 || rsdp[15] < 2)
		return "no ACPI 2.0 RSDP";
	uint64_t xsdt = rd64(rsdp + 24);
	uint32_t xlen = acpi_table(xsdt, "XSDT");
	if (!xlen)
		return "bad XSDT";
	uint64_t fadt = 0;
	uint32_t flen = 0;
	for (uint32_t off = 36; off + 8 <= xlen; off += 8) {
		uint64_t t = rd64((const uint8_t *)PHYS(xsdt) + off);
		if ((flen = acpi_table(t, "FACP")) != 0) {
			fadt = t;
			break;
		}
	}
	if (!fadt || flen < 268)
		return "no FADT with sleep registers";
	const uint8_t *f = PHYS(fadt);
	if (!(rd32(f + 112) & (1u << 20)))
		return "FADT not hardware-reduced";
	/* SLEEP_CONTROL_REG: Generic Address Structure at 244. */
	if (f[244] != 1 || f[245] != 8 || rd64(f + 248) == 0 || rd64(f + 248) > 0xffff)
		return "SLEEP_CONTROL_REG is not an 8-bit I/O port";
	if (rd64(f + 260) == 0)
		return "no SLEEP_STATUS_REG";
	out->port = (uint16_t)rd64(f + 248);

	uint64_t dsdt = rd64(f + 140);
	uint32_t dlen = acpi_table(dsdt, "DSDT");
	if (!dlen)
		return "bad DSDT";
	/* NameOp? "_S5_" PackageOp PkgLength NumElements, then a ByteConst/Zero/One. */
	const uint8_t *d = PHYS(dsdt);
	for (uint32_t i = 36; i + 8 <= dlen; i++) {
		if (memcmp(d + i, "_S5_", 4) != 0 || d[i + 4] != 0x12)
			continue;
		const uint8_t *e = d + i + 7; /* past PackageOp, 1-byte PkgLength, NumElements */
		if (e[0] == 0x0a && i + 9 <= dlen)
			out->slp_typ = e[1];
		else if (e[0] == 0x00 || e[0] == 0x01)
			out->slp_typ = e[0];
		else
			return "\\_S5 SLP_TYPa is not a constant";
		return NULL;
	}
	return "no \\_S5 in the DSDT";
}

static const char *scen_acpi_s5(void)
{
	struct acpi_s5 s5;
	const char *why = acpi_find_s5(&s5);
	if (why)
		return why;
	printk("PVHINFO acpi_s5 sleep_control=0x%x slp_typ=%u\n", s5.port, s5.slp_typ);
	return NULL;
}

/* Returns only if the VMM ignored the write (or the tables are wrong). */
void acpi_poweroff(void)
{
	struct acpi_s5 s5;
	const char *why = acpi_find_s5(&s5);
	if (why) {
		printk("PVHTEST acpi poweroff: %s\n", why);
		return;
	}
	outb(s5.port, (uint8_t)(((s5.slp_typ & 7) << 2) | 0x20));
	printk("PVHTEST acpi poweroff: still running after the S5 write\n");
}

const struct scenario acpi_scenarios[] = {
	{ "acpi_s5", scen_acpi_s5 },
};
const size_t nr_acpi_scenarios = ARRAY_SIZE(acpi_scenarios);
