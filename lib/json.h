/*
 * json.h - strict, typed helpers over jansson for the decoders of agent responses and configs.
 *
 * Pure: no I/O, no logging. Every failure fills err with the full path of the field, e.g.
 *   "field Upstreams[1].LocalBindPort: expected a number, got string".
 * Unknown members are ignored; a JSON null counts as absent (Go decodes null as the zero value).
 *
 * Getters return 1 when the member is present and well typed (*out set), 0 when it is absent and
 * optional (*out untouched, so it may hold a default), -1 on error (missing required, wrong type,
 * out of range).
 */
#ifndef HC_JSON_H
#define HC_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Flags of the getters. */
#define JSON_OPT	0x0	/* absent is fine */
#define JSON_REQ	0x1	/* absent (or null) is an error */
#define JSON_FOLD	0x2	/* match the key case-insensitively if no exact match (Go's encoding/json) */

/* Parses buf[0..len) as any JSON value (object, array, scalar). Caller json_decref()s *out. */
int	json_parse(const void *buf, size_t len, json_t **out, char *err, size_t errlen);

/* "string", "number", "object", "array", "bool", "null". */
const char *json_kind(const json_t *v);

/* Builds "ctx.key" (just "key" when ctx is empty) and "ctx[i]" for error paths and nested contexts. */
void	json_path_key(char *out, size_t outlen, const char *ctx, const char *key);
void	json_path_index(char *out, size_t outlen, const char *ctx, size_t i);

/* Checks that v (at path) is an object/array; -1 with err otherwise. */
int	json_expect_object(const json_t *v, const char *path, char *err, size_t errlen);
int	json_expect_array(const json_t *v, const char *path, char *err, size_t errlen);

/* The member key of object obj (at path ctx) or NULL; null values are returned as NULL. */
const json_t *json_member(const json_t *obj, const char *key, int flags);

int	json_get_str(const json_t *obj, const char *ctx, const char *key, int flags,
	    const char **out, char *err, size_t errlen);
/* An integer in [min, max]; a fraction, an exponent form with fraction, or a string is an error. */
int	json_get_int(const json_t *obj, const char *ctx, const char *key, int flags,
	    int64_t min, int64_t max, int64_t *out, char *err, size_t errlen);
int	json_get_bool(const json_t *obj, const char *ctx, const char *key, int flags,
	    bool *out, char *err, size_t errlen);
int	json_get_obj(const json_t *obj, const char *ctx, const char *key, int flags,
	    const json_t **out, char *err, size_t errlen);
int	json_get_arr(const json_t *obj, const char *ctx, const char *key, int flags,
	    const json_t **out, char *err, size_t errlen);

#endif
