/*
 * fuzz_lib_json.c - the json helpers over any input: parse, then walk every member and element with
 * every typed getter (as decoders do), building error paths as they go.
 */
#include <stddef.h>
#include <stdint.h>

#include "json.h"

static void
walk(const json_t *v, const char *ctx, int depth)
{
	char err[256], path[256];
	const json_t *o, *e;
	const char *key, *s;
	int64_t i;
	size_t n;
	bool b;

	if (depth > 16)
		return;
	if (json_is_object(v)) {
		json_object_foreach((json_t *)(uintptr_t)v, key, e) {
			json_get_str(v, ctx, key, JSON_REQ, &s, err, sizeof(err));
			json_get_int(v, ctx, key, JSON_REQ, 1, 65535, &i, err, sizeof(err));
			json_get_int(v, ctx, key, JSON_OPT | JSON_FOLD, INT64_MIN, INT64_MAX, &i, err,
			    sizeof(err));
			json_get_bool(v, ctx, key, JSON_REQ, &b, err, sizeof(err));
			json_get_arr(v, ctx, key, JSON_OPT, &o, err, sizeof(err));
			if (json_get_obj(v, ctx, key, JSON_REQ | JSON_FOLD, &o, err, sizeof(err)) == 1 ||
			    json_is_array(e)) {
				json_path_key(path, sizeof(path), ctx, key);
				walk(e, path, depth + 1);
			}
		}
	} else if (json_is_array(v)) {
		json_array_foreach(v, n, e) {
			json_path_index(path, sizeof(path), ctx, n);
			json_expect_object(e, path, err, sizeof(err));
			walk(e, path, depth + 1);
		}
	} else {
		json_get_str(v, ctx, "x", JSON_OPT, &s, err, sizeof(err));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	json_t *root;

	if (json_parse(data, size, &root, err, sizeof(err)) == -1)
		return 0;
	walk(root, "", 0);
	json_decref(root);
	return 0;
}
