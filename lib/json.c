/*
 * json.c - see json.h.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "json.h"

int
json_parse(const void *buf, size_t len, json_t **out, char *err, size_t errlen)
{
	json_error_t jerr;

	*out = json_loadb(buf, len, JSON_DECODE_ANY, &jerr);
	if (*out == NULL) {
		snprintf(err, errlen, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
		    jerr.text);
		return -1;
	}
	return 0;
}

const char *
json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "object";
	case JSON_ARRAY:
		return "array";
	case JSON_STRING:
		return "string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "bool";
	case JSON_NULL:
		return "null";
	}
	return "unknown";
}

void
json_path_key(char *out, size_t outlen, const char *ctx, const char *key)
{
	if (ctx == NULL || *ctx == '\0')
		snprintf(out, outlen, "%s", key);
	else
		snprintf(out, outlen, "%s.%s", ctx, key);
}

void
json_path_index(char *out, size_t outlen, const char *ctx, size_t i)
{
	snprintf(out, outlen, "%s[%zu]", ctx != NULL ? ctx : "", i);
}

static int
type_error(const char *path, const char *want, const json_t *v, char *err, size_t errlen)
{
	if (path == NULL || *path == '\0')
		snprintf(err, errlen, "expected %s, got %s", want, json_kind(v));
	else
		snprintf(err, errlen, "field %s: expected %s, got %s", path, want, json_kind(v));
	return -1;
}

int
json_expect_object(const json_t *v, const char *path, char *err, size_t errlen)
{
	return json_is_object(v) ? 0 : type_error(path, "an object", v, err, errlen);
}

int
json_expect_array(const json_t *v, const char *path, char *err, size_t errlen)
{
	return json_is_array(v) ? 0 : type_error(path, "an array", v, err, errlen);
}

const json_t *
json_member(const json_t *obj, const char *key, int flags)
{
	const json_t *v;
	const char *k;
	json_t *val;

	if (!json_is_object(obj))
		return NULL;
	v = json_object_get(obj, key);
	if (v == NULL && (flags & JSON_FOLD)) {
		/* json_object_foreach wants a non-const object; it does not modify it. */
		json_object_foreach((json_t *)(uintptr_t)obj, k, val) {
			if (strcasecmp(k, key) == 0) {
				v = val;
				break;
			}
		}
	}
	return v == NULL || json_is_null(v) ? NULL : v;
}

/*
 * Common start of every getter: finds the member, fills path. 1 present, 0 absent and optional,
 * -1 on error (obj not an object, absent and required).
 */
static int
lookup(const json_t *obj, const char *ctx, const char *key, int flags, const json_t **v,
    char *path, size_t pathlen, char *err, size_t errlen)
{
	json_path_key(path, pathlen, ctx, key);
	if (!json_is_object(obj)) {
		if (ctx == NULL || *ctx == '\0')
			snprintf(err, errlen, "expected an object, got %s", obj != NULL ?
			    json_kind(obj) : "nothing");
		else
			snprintf(err, errlen, "field %s: expected an object, got %s", ctx, obj != NULL ?
			    json_kind(obj) : "nothing");
		return -1;
	}
	*v = json_member(obj, key, flags);
	if (*v == NULL) {
		if (flags & JSON_REQ) {
			snprintf(err, errlen, "field %s: missing", path);
			return -1;
		}
		return 0;
	}
	return 1;
}

int
json_get_str(const json_t *obj, const char *ctx, const char *key, int flags, const char **out,
    char *err, size_t errlen)
{
	char path[256];
	const json_t *v;
	int rc;

	if ((rc = lookup(obj, ctx, key, flags, &v, path, sizeof(path), err, errlen)) != 1)
		return rc;
	if (!json_is_string(v))
		return type_error(path, "a string", v, err, errlen);
	/* jansson accepts \u0000 only with JSON_ALLOW_NUL, which we do not set: C strings are safe. */
	*out = json_string_value(v);
	return 1;
}

int
json_get_int(const json_t *obj, const char *ctx, const char *key, int flags, int64_t min,
    int64_t max, int64_t *out, char *err, size_t errlen)
{
	char path[256];
	const json_t *v;
	json_int_t i;
	double d;
	int rc;

	if ((rc = lookup(obj, ctx, key, flags, &v, path, sizeof(path), err, errlen)) != 1)
		return rc;
	if (json_is_real(v)) {
		d = json_real_value(v);
		/* 1e3 is an integer written in exponent form; 1.5 is not. */
		if (d < -9.2e18 || d > 9.2e18 || d != (double)(int64_t)d) {
			snprintf(err, errlen, "field %s: expected an integer, got %g", path, d);
			return -1;
		}
		i = (json_int_t)d;
	} else if (json_is_integer(v)) {
		i = json_integer_value(v);
	} else
		return type_error(path, "a number", v, err, errlen);
	if ((int64_t)i < min || (int64_t)i > max) {
		snprintf(err, errlen, "field %s: %lld out of range [%lld, %lld]", path, (long long)i,
		    (long long)min, (long long)max);
		return -1;
	}
	*out = (int64_t)i;
	return 1;
}

int
json_get_bool(const json_t *obj, const char *ctx, const char *key, int flags, bool *out,
    char *err, size_t errlen)
{
	char path[256];
	const json_t *v;
	int rc;

	if ((rc = lookup(obj, ctx, key, flags, &v, path, sizeof(path), err, errlen)) != 1)
		return rc;
	if (!json_is_boolean(v))
		return type_error(path, "a bool", v, err, errlen);
	*out = json_is_true(v);
	return 1;
}

int
json_get_obj(const json_t *obj, const char *ctx, const char *key, int flags, const json_t **out,
    char *err, size_t errlen)
{
	char path[256];
	const json_t *v;
	int rc;

	if ((rc = lookup(obj, ctx, key, flags, &v, path, sizeof(path), err, errlen)) != 1)
		return rc;
	if (!json_is_object(v))
		return type_error(path, "an object", v, err, errlen);
	*out = v;
	return 1;
}

int
json_get_arr(const json_t *obj, const char *ctx, const char *key, int flags, const json_t **out,
    char *err, size_t errlen)
{
	char path[256];
	const json_t *v;
	int rc;

	if ((rc = lookup(obj, ctx, key, flags, &v, path, sizeof(path), err, errlen)) != 1)
		return rc;
	if (!json_is_array(v))
		return type_error(path, "an array", v, err, errlen);
	*out = v;
	return 1;
}
