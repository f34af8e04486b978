/*
 * The harness every host test shares (included after the guest sources it
 * tests): `verbose` (set by main from -v), printk and fail as lib.c has
 * them, and CHECK, which counts checks and failures for check_summary.
 */
static int verbose;

void printk(const char *fmt, ...)
{
	va_list ap;
	if (!verbose)
		return;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}

/* As lib.c: one 160-byte buffer. */
static char fail_buf[160];

const char *fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(fail_buf, sizeof(fail_buf), fmt, ap);
	va_end(ap);
	return fail_buf;
}

static unsigned checks __attribute__((unused)), failures __attribute__((unused));
#define CHECK(cond, ...) do { checks++; if (!(cond)) { failures++; printf("BAD  %s:%d: ", __FILE__, __LINE__); \
	printf(__VA_ARGS__); printf("\n"); } else if (verbose) { printf("ok   "); printf(__VA_ARGS__); printf("\n"); } } while (0)

/* The last line of a test's output, and its exit status. */
static int __attribute__((unused)) check_summary(void)
{
	printf("%u checks, %u failed\n", checks, failures);
	return failures ? 1 : 0;
}
