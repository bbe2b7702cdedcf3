/*
 * test_lib_duration.c - Go-style durations as operators type them on the command line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "duration.h"

static void
ok(const char *s, double want)
{
	double v = -42;

	if (duration_parse(s, &v) != 0)
		fail_msg("\"%s\" refused", s);
	if (v < want * (1 - 1e-12) - 1e-15 || v > want * (1 + 1e-12) + 1e-15)
		fail_msg("\"%s\" = %.12g, want %.12g", s, v, want);
}

static void
bad(const char *s)
{
	double v = -42;

	if (duration_parse(s, &v) != -1)
		fail_msg("\"%s\" accepted as %g", s, v);
	assert_true(v == -42);	/* left alone */
}

static void
test_units(void **state)
{
	(void)state;
	ok("400ms", 0.4);
	ok("1.5s", 1.5);
	ok("1m30s", 90);
	ok("2h", 7200);
	ok("250us", 250e-6);
	ok("250\xc2\xb5s", 250e-6);
	ok("10ns", 10e-9);
	ok("1h1m1s1ms", 3661.001);
	ok("0", 0);
	ok("0s", 0);
	ok("3", 3);		/* a bare number is seconds */
	ok("0.25", 0.25);
}

static void
test_refused(void **state)
{
	(void)state;
	bad(NULL);
	bad("");
	bad("-1s");
	bad("+1s");
	bad("s");
	bad("1x");
	bad("1 s");
	bad("1s ");
	bad("1.5.5s");
	bad("ms");
	bad("1s2");		/* a bare number only alone */
	bad("inf");
	bad("nan");
	bad("1e400s");
	bad("0x10s");
	bad("1e3s");
	bad(".");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_units),
		cmocka_unit_test(test_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
