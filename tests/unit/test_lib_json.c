/*
 * test_lib_json.c - typed getters: present, absent, null, wrong types, ranges, big numbers, paths.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "json.h"

static const char doc[] =
    "{\"Name\":\"web\",\"Port\":21000,\"Neg\":-5,\"Big\":9007199254740993,"
    "\"Huge\":9223372036854775807,\"Frac\":1.5,\"Exp\":1e3,\"Flag\":true,\"Off\":false,"
    "\"Nil\":null,\"Obj\":{\"a\":1},\"Arr\":[1,2],\"Str5\":\"5\","
    "\"Upstreams\":[{\"DestinationName\":\"db\",\"LocalBindPort\":9191},"
    "{\"DestinationName\":\"cache\",\"LocalBindPort\":\"9192\"}],"
    "\"bind_port\":20000,\"Unknown\":{\"deep\":[{}]}}";

static int
setup(void **state)
{
	char err[256];
	json_t *root;

	if (json_parse(doc, strlen(doc), &root, err, sizeof(err)) == -1)
		return -1;
	*state = root;
	return 0;
}

static int
teardown(void **state)
{
	json_decref(*state);
	return 0;
}

static void
test_strings(void **state)
{
	const json_t *root = *state;
	const char *s = "default";
	char err[256];

	assert_int_equal(json_get_str(root, "", "Name", JSON_REQ, &s, err, sizeof(err)), 1);
	assert_string_equal(s, "web");
	/* Absent optional: 0, and the default survives. */
	s = "default";
	assert_int_equal(json_get_str(root, "", "Missing", JSON_OPT, &s, err, sizeof(err)), 0);
	assert_string_equal(s, "default");
	/* null counts as absent. */
	assert_int_equal(json_get_str(root, "", "Nil", JSON_OPT, &s, err, sizeof(err)), 0);
	assert_int_equal(json_get_str(root, "", "Nil", JSON_REQ, &s, err, sizeof(err)), -1);
	assert_string_equal(err, "field Nil: missing");
	assert_int_equal(json_get_str(root, "", "Missing", JSON_REQ, &s, err, sizeof(err)), -1);
	assert_string_equal(err, "field Missing: missing");
	assert_int_equal(json_get_str(root, "", "Port", JSON_OPT, &s, err, sizeof(err)), -1);
	assert_string_equal(err, "field Port: expected a string, got number");
	assert_string_equal(s, "default");
}

static void
test_ints(void **state)
{
	const json_t *root = *state;
	char err[256];
	int64_t v = -1;

	assert_int_equal(json_get_int(root, "", "Port", JSON_REQ, 1, 65535, &v, err, sizeof(err)), 1);
	assert_int_equal(v, 21000);
	assert_int_equal(json_get_int(root, "", "Neg", JSON_REQ, INT64_MIN, INT64_MAX, &v, err,
	    sizeof(err)), 1);
	assert_int_equal(v, -5);
	assert_int_equal(json_get_int(root, "", "Neg", JSON_REQ, 0, 10, &v, err, sizeof(err)), -1);
	assert_string_equal(err, "field Neg: -5 out of range [0, 10]");
	/* Beyond 2^53 exactly: no double rounding on the way. */
	assert_int_equal(json_get_int(root, "", "Big", JSON_REQ, 0, INT64_MAX, &v, err, sizeof(err)),
	    1);
	assert_true(v == 9007199254740993LL);
	assert_int_equal(json_get_int(root, "", "Huge", JSON_REQ, 0, INT64_MAX, &v, err, sizeof(err)),
	    1);
	assert_true(v == INT64_MAX);
	assert_int_equal(json_get_int(root, "", "Huge", JSON_REQ, 0, 65535, &v, err, sizeof(err)),
	    -1);
	assert_int_equal(json_get_int(root, "", "Frac", JSON_REQ, 0, 100, &v, err, sizeof(err)), -1);
	assert_string_equal(err, "field Frac: expected an integer, got 1.5");
	assert_int_equal(json_get_int(root, "", "Exp", JSON_REQ, 0, 100000, &v, err, sizeof(err)), 1);
	assert_int_equal(v, 1000);
	assert_int_equal(json_get_int(root, "", "Str5", JSON_REQ, 0, 10, &v, err, sizeof(err)), -1);
	assert_string_equal(err, "field Str5: expected a number, got string");
	assert_int_equal(json_get_int(root, "", "Flag", JSON_REQ, 0, 10, &v, err, sizeof(err)), -1);
	assert_string_equal(err, "field Flag: expected a number, got bool");
	v = 7;
	assert_int_equal(json_get_int(root, "", "Nope", JSON_OPT, 0, 10, &v, err, sizeof(err)), 0);
	assert_int_equal(v, 7);
}

static void
test_bool_obj_arr(void **state)
{
	const json_t *root = *state, *o = NULL, *a = NULL;
	char err[256];
	bool b = false;

	assert_int_equal(json_get_bool(root, "", "Flag", JSON_REQ, &b, err, sizeof(err)), 1);
	assert_true(b);
	assert_int_equal(json_get_bool(root, "", "Off", JSON_REQ, &b, err, sizeof(err)), 1);
	assert_false(b);
	assert_int_equal(json_get_bool(root, "", "Name", JSON_REQ, &b, err, sizeof(err)), -1);
	assert_string_equal(err, "field Name: expected a bool, got string");
	assert_int_equal(json_get_obj(root, "", "Obj", JSON_REQ, &o, err, sizeof(err)), 1);
	assert_true(json_is_object(o));
	assert_int_equal(json_get_obj(root, "", "Arr", JSON_REQ, &o, err, sizeof(err)), -1);
	assert_string_equal(err, "field Arr: expected an object, got array");
	assert_int_equal(json_get_arr(root, "", "Arr", JSON_REQ, &a, err, sizeof(err)), 1);
	assert_int_equal(json_array_size(a), 2);
	assert_int_equal(json_get_arr(root, "", "Obj", JSON_REQ, &a, err, sizeof(err)), -1);
	assert_string_equal(err, "field Obj: expected an array, got object");
}

/* The way a decoder walks an array of objects, with the error naming the element. */
static void
test_nested_paths(void **state)
{
	const json_t *root = *state, *ups, *u;
	char err[256], ctx[64];
	const char *name;
	int64_t port;
	size_t i;
	int rc = 0;

	assert_int_equal(json_get_arr(root, "", "Upstreams", JSON_REQ, &ups, err, sizeof(err)), 1);
	json_array_foreach(ups, i, u) {
		json_path_index(ctx, sizeof(ctx), "Upstreams", i);
		assert_int_equal(json_expect_object(u, ctx, err, sizeof(err)), 0);
		assert_int_equal(json_get_str(u, ctx, "DestinationName", JSON_REQ, &name, err,
		    sizeof(err)), 1);
		rc = json_get_int(u, ctx, "LocalBindPort", JSON_REQ, 1, 65535, &port, err, sizeof(err));
		if (i == 0) {
			assert_int_equal(rc, 1);
			assert_int_equal(port, 9191);
		}
	}
	assert_int_equal(rc, -1);
	assert_string_equal(err, "field Upstreams[1].LocalBindPort: expected a number, got string");
	/* A getter on something that is not an object names that thing. */
	assert_int_equal(json_get_str(json_array_get(ups, 0), "Upstreams[0]", "x", JSON_OPT, &name,
	    err, sizeof(err)), 0);
	assert_int_equal(json_get_str(json_object_get(root, "Arr"), "Arr", "x", JSON_OPT, &name, err,
	    sizeof(err)), -1);
	assert_string_equal(err, "field Arr: expected an object, got array");
	assert_int_equal(json_expect_array(root, "", err, sizeof(err)), -1);
	assert_string_equal(err, "expected an array, got object");
}

static void
test_fold(void **state)
{
	const json_t *root = *state;
	char err[256];
	int64_t v = 0;

	assert_int_equal(json_get_int(root, "", "BIND_PORT", JSON_OPT, 0, 65535, &v, err, sizeof(err)),
	    0);
	assert_int_equal(json_get_int(root, "", "BIND_PORT", JSON_OPT | JSON_FOLD, 0, 65535, &v, err,
	    sizeof(err)), 1);
	assert_int_equal(v, 20000);
}

static void
test_parse_errors(void **state)
{
	static const char *const bad[] = {
		"", "{", "{\"a\":}", "[1,]", "{\"a\":1}x", "{\"a\":\"\\u0000\"}",
		"{\"a\":99999999999999999999999}", "\xff",
	};
	char err[256];
	json_t *v;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(json_parse(bad[i], strlen(bad[i]), &v, err, sizeof(err)), -1);
		assert_true(strncmp(err, "invalid JSON", 12) == 0);
	}
	/* Scalars and arrays at the top are fine (Consul returns arrays). */
	assert_int_equal(json_parse("[]", 2, &v, err, sizeof(err)), 0);
	assert_true(json_is_array(v));
	json_decref(v);
	assert_int_equal(json_parse("true", 4, &v, err, sizeof(err)), 0);
	json_decref(v);
	/* An embedded NUL in the input is not silently cut. */
	assert_int_equal(json_parse("{}\0{}", 5, &v, err, sizeof(err)), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_strings, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ints, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bool_obj_arr, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nested_paths, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fold, setup, teardown),
		cmocka_unit_test(test_parse_errors),
	};

	return cmocka_run_group_tests_name("lib_json", tests, NULL, NULL);
}
