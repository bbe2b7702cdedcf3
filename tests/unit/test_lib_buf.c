/*
 * test_lib_buf.c - the growable buffer: content, NUL termination, the hard maximum, printf.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"

static void
test_append_and_nul(void **state)
{
	struct buf b;

	buf_init(&b, 1024);
	assert_string_equal(buf_str(&b), "");
	assert_int_equal(buf_append(&b, "abc", 3), 0);
	assert_int_equal(buf_append_str(&b, "def"), 0);
	assert_int_equal(b.len, 6);
	assert_string_equal(b.data, "abcdef");
	/* Binary content, NUL included, is kept byte for byte. */
	assert_int_equal(buf_append(&b, "\0x", 2), 0);
	assert_int_equal(b.len, 8);
	assert_memory_equal(b.data, "abcdef\0x", 8);
	assert_int_equal(b.data[8], '\0');
	buf_free(&b);
	assert_null(b.data);
}

static void
test_grows_across_many_appends(void **state)
{
	struct buf b;
	size_t i;

	buf_init(&b, 1 << 20);
	for (i = 0; i < 10000; i++)
		assert_int_equal(buf_append(&b, &"0123456789"[i % 10], 1), 0);
	assert_int_equal(b.len, 10000);
	for (i = 0; i < 10000; i++)
		assert_int_equal(b.data[i], '0' + (int)(i % 10));
	buf_free(&b);
}

static void
test_max_is_hard(void **state)
{
	struct buf b;

	buf_init(&b, 10);
	assert_int_equal(buf_append(&b, "0123456789", 10), 0);
	/* One byte over: refused, content unchanged. */
	assert_int_equal(buf_append(&b, "x", 1), -1);
	assert_int_equal(b.len, 10);
	assert_string_equal(b.data, "0123456789");
	assert_int_equal(buf_reserve(&b, 1), -1);
	assert_int_equal(buf_reserve(&b, 0), 0);
	/* The allocation never goes far beyond max. */
	assert_true(b.cap <= 11);
	buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_string_equal(buf_str(&b), "");
	assert_int_equal(buf_append(&b, "abc", 3), 0);
	/* A huge request cannot overflow the size arithmetic. */
	assert_int_equal(buf_reserve(&b, SIZE_MAX), -1);
	assert_int_equal(buf_reserve(&b, SIZE_MAX - 2), -1);
	buf_free(&b);
}

static void
test_printf(void **state)
{
	struct buf b;
	char big[300];

	buf_init(&b, 200);
	assert_int_equal(buf_printf(&b, "%s=%d", "port", 8500), 0);
	assert_int_equal(buf_printf(&b, "&%s", "x"), 0);
	assert_string_equal(b.data, "port=8500&x");
	assert_int_equal(b.len, strlen("port=8500&x"));
	/* Longer than the first allocation: formats again after growing. */
	memset(big, 'y', 150);
	big[150] = '\0';
	assert_int_equal(buf_printf(&b, "[%s]", big), 0);
	assert_int_equal(b.len, 11 + 152);
	assert_int_equal(b.data[b.len - 1], ']');
	/* Over max: refused, the content before stays intact and terminated. */
	assert_int_equal(buf_printf(&b, "%s", big), -1);
	assert_int_equal(b.len, 11 + 152);
	assert_int_equal(b.data[b.len], '\0');
	assert_int_equal(strlen(b.data), b.len);
	buf_free(&b);
}

static void
test_detach(void **state)
{
	struct buf b;
	size_t len;
	char *p;

	buf_init(&b, 100);
	p = buf_detach(&b, &len);
	assert_non_null(p);
	assert_string_equal(p, "");
	assert_int_equal(len, 0);
	free(p);
	assert_int_equal(buf_printf(&b, "%d", 42), 0);
	p = buf_detach(&b, &len);
	assert_string_equal(p, "42");
	assert_int_equal(len, 2);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	free(p);
	/* Usable again after detach. */
	assert_int_equal(buf_append_str(&b, "z"), 0);
	assert_string_equal(b.data, "z");
	buf_free(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_append_and_nul),
		cmocka_unit_test(test_grows_across_many_appends),
		cmocka_unit_test(test_max_is_hard),
		cmocka_unit_test(test_printf),
		cmocka_unit_test(test_detach),
	};

	return cmocka_run_group_tests_name("lib_buf", tests, NULL, NULL);
}
