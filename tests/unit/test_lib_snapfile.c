/*
 * test_lib_snapfile.c - the snapshot envelope both daemons write: what snapfile_begin/_seal produce
 * (checked against an independent SHA-256 and msgpack-c's own encoding), and every way snapfile_open
 * refuses a buffer (empty, too big, not an array, truncated anywhere, trailing bytes, nesting, counts
 * that lie, ext types, magic, version, item count, checksum type and value).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>
#include <openssl/evp.h>

#include "snapfile.h"

#define MAGIC	"haproxy-connect test envelope"

static const struct snapfile_format fmt = {
	.magic = MAGIC,
	.what = "test envelope",
	.version = 3,
	.nitems = 5,
	.max_len = 4096,
	.max_depth = 3,
};

static void
pk_cstr(msgpack_packer *pk, const char *s)
{
	assert_int_equal(msgpack_pack_str(pk, strlen(s)), 0);
	assert_int_equal(msgpack_pack_str_body(pk, s, strlen(s)), 0);
}

/* A valid file of fmt: magic, version, "payload", [1, [2, 3]] (as deep as fmt allows), checksum. */
static void
good_file(uint8_t **out, size_t *outlen)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	assert_int_equal(snapfile_begin(&fmt, &sb, &pk), 0);
	pk_cstr(&pk, "payload");
	msgpack_pack_array(&pk, 2);
	msgpack_pack_int64(&pk, 1);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_int64(&pk, 2);
	msgpack_pack_int64(&pk, 3);
	assert_int_equal(snapfile_seal(&sb, &pk), 0);
	*outlen = sb.size;
	*out = (uint8_t *)msgpack_sbuffer_release(&sb);
}

/* Packs items as the envelope would, sealing with an independently computed SHA-256 (or none). */
static void
raw_file(uint32_t nitems, const char *magic, uint64_t version,
    const char *payload, int sum_len, uint8_t **out, size_t *outlen)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint8_t md[32];
	unsigned int mdlen = 0;
	uint32_t i;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, nitems);
	pk_cstr(&pk, magic);
	msgpack_pack_uint64(&pk, version);
	for (i = 3; i < nitems; i++)
		pk_cstr(&pk, payload);
	assert_int_equal(EVP_Digest(sb.data, sb.size, md, &mdlen, EVP_sha256(), NULL), 1);
	assert_int_equal(mdlen, 32);
	msgpack_pack_bin(&pk, (size_t)sum_len);
	msgpack_pack_bin_body(&pk, md, (size_t)sum_len);
	*outlen = sb.size;
	*out = (uint8_t *)msgpack_sbuffer_release(&sb);
}

static enum snapfile_status
open_buf(const uint8_t *buf, size_t len, const msgpack_object **items, char *err, size_t errlen)
{
	msgpack_unpacked u;
	enum snapfile_status st;

	st = snapfile_open(&fmt, buf, len, &u, items, err, errlen);
	msgpack_unpacked_destroy(&u);
	return st;
}

static void
expect(const uint8_t *buf, size_t len, enum snapfile_status want, const char *in_err)
{
	const msgpack_object *items = (const msgpack_object *)&items;
	char err[256] = "";

	assert_int_equal(open_buf(buf, len, &items, err, sizeof(err)), want);
	assert_null(items);
	if (strstr(err, in_err) == NULL)
		fail_msg("error \"%s\" does not say \"%s\"", err, in_err);
}

static void
test_round_trip(void **state)
{
	msgpack_unpacked u;
	const msgpack_object *it;
	uint8_t *buf, md[32];
	unsigned int mdlen = 0;
	size_t len;
	char err[256];

	good_file(&buf, &len);
	/* The layout: fixarray(5), the magic, the version, ..., bin8 of 32 bytes last. */
	assert_int_equal(buf[0], 0x95);
	assert_int_equal(buf[len - 34], 0xc4);
	assert_int_equal(buf[len - 33], 32);
	assert_int_equal(EVP_Digest(buf, len - 34, md, &mdlen, EVP_sha256(), NULL), 1);
	assert_memory_equal(md, buf + len - 32, 32);
	assert_int_equal(snapfile_sha256(buf, len - 34, md), 0);
	assert_memory_equal(md, buf + len - 32, 32);

	assert_int_equal(snapfile_open(&fmt, buf, len, &u, &it, err, sizeof(err)), SNAPFILE_OK);
	assert_non_null(it);
	assert_int_equal(it[0].type, MSGPACK_OBJECT_STR);
	assert_int_equal(it[0].via.str.size, strlen(MAGIC));
	assert_int_equal(it[1].via.u64, 3);
	assert_int_equal(it[2].type, MSGPACK_OBJECT_STR);
	assert_memory_equal(it[2].via.str.ptr, "payload", 7);
	assert_int_equal(it[3].type, MSGPACK_OBJECT_ARRAY);
	assert_int_equal(it[4].type, MSGPACK_OBJECT_BIN);
	msgpack_unpacked_destroy(&u);
	free(buf);
}

static void
test_refused_bytes(void **state)
{
	static const uint8_t lying_count[] = { 0xdd, 0xff, 0xff, 0xff, 0xff, 0xa0 };
	static const uint8_t lying_str[] = { 0x95, 0xdb, 0x7f, 0xff, 0xff, 0xff, 0x41 };
	static const uint8_t ext[] = { 0x95, 0xd4, 0x01, 0x00, 0xc0, 0xc0, 0xc0 };
	static const uint8_t never_used[] = { 0x91, 0xc1 };
	static const uint8_t map[] = { 0x81, 0xa1, 0x61, 0x01 };
	uint8_t *buf, *big, deep[16];
	size_t len, i;

	expect(NULL, 0, SNAPFILE_CORRUPT, "empty");
	good_file(&buf, &len);
	expect(buf, 0, SNAPFILE_CORRUPT, "empty");
	/* Every prefix is refused, never read beyond. */
	for (i = 1; i < len; i++) {
		uint8_t *copy = malloc(i);

		assert_non_null(copy);
		memcpy(copy, buf, i);
		expect(copy, i, SNAPFILE_CORRUPT, "truncated");
		free(copy);
	}
	/* One byte more. */
	big = malloc(len + 1);
	assert_non_null(big);
	memcpy(big, buf, len);
	big[len] = 0xc0;
	expect(big, len + 1, SNAPFILE_CORRUPT, "1 bytes of trailing data");
	free(big);
	/* Over max_len: refused before being looked at. */
	big = calloc(1, fmt.max_len + 1);
	assert_non_null(big);
	memcpy(big, buf, len);
	expect(big, fmt.max_len + 1, SNAPFILE_CORRUPT, "4097 bytes exceed 4096");
	free(big);
	free(buf);

	expect(map, sizeof(map), SNAPFILE_CORRUPT, "not a test envelope (no msgpack array)");
	expect(lying_count, sizeof(lying_count), SNAPFILE_CORRUPT, "truncated or malformed");
	expect(lying_str, sizeof(lying_str), SNAPFILE_CORRUPT, "truncated or malformed");
	expect(ext, sizeof(ext), SNAPFILE_CORRUPT, "truncated or malformed");
	expect(never_used, sizeof(never_used), SNAPFILE_CORRUPT, "truncated or malformed");
	/* Nesting: max_depth 3 allows an object 3 levels below the top array, not 4. */
	memset(deep, 0x91, sizeof(deep));
	deep[3] = 0xc0;
	expect(deep, 4, SNAPFILE_CORRUPT, "bad magic");	/* got past the structure walk */
	deep[3] = 0x91;
	deep[4] = 0xc0;
	expect(deep, 5, SNAPFILE_CORRUPT, "truncated or malformed");
}

static void
test_refused_envelope(void **state)
{
	const msgpack_object *items;
	uint8_t *buf;
	size_t len;
	char err[256];

	raw_file(5, MAGIC, 3, "x", 32, &buf, &len);
	assert_int_equal(open_buf(buf, len, &items, err, sizeof(err)), SNAPFILE_OK);
	assert_non_null(items);
	/* The checksum covers every byte before it: any flipped bit is refused. */
	buf[len / 2] ^= 0x01;
	expect(buf, len, SNAPFILE_CORRUPT, "checksum mismatch");
	buf[len / 2] ^= 0x01;
	buf[len - 1] ^= 0x80;
	expect(buf, len, SNAPFILE_CORRUPT, "checksum mismatch");
	free(buf);

	raw_file(5, MAGIC, 3, "x", 31, &buf, &len);
	expect(buf, len, SNAPFILE_CORRUPT, "checksum: expected 32 bytes of SHA-256");
	free(buf);
	raw_file(5, "haproxy-connect test envelopE", 3, "x", 32, &buf, &len);
	expect(buf, len, SNAPFILE_CORRUPT, "not a test envelope (bad magic)");
	free(buf);
	raw_file(5, "haproxy-connect test", 3, "x", 32, &buf, &len);
	expect(buf, len, SNAPFILE_CORRUPT, "bad magic");
	free(buf);
	raw_file(5, MAGIC, 4, "x", 32, &buf, &len);
	expect(buf, len, SNAPFILE_VERSION_UNKNOWN, "format version 4, this build reads version 3");
	free(buf);
	/* A version other than this one is reported before the item count: another layout is expected. */
	raw_file(7, MAGIC, 2, "x", 32, &buf, &len);
	expect(buf, len, SNAPFILE_VERSION_UNKNOWN, "format version 2");
	free(buf);
	raw_file(6, MAGIC, 3, "x", 32, &buf, &len);
	expect(buf, len, SNAPFILE_CORRUPT, "6 header items, expected 5");
	free(buf);
	raw_file(4, MAGIC, 3, "x", 32, &buf, &len);
	expect(buf, len, SNAPFILE_CORRUPT, "4 header items, expected 5");
	free(buf);
}

static void
test_version_not_an_integer(void **state)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 5);
	pk_cstr(&pk, MAGIC);
	pk_cstr(&pk, "3");
	pk_cstr(&pk, "x");
	pk_cstr(&pk, "x");
	assert_int_equal(snapfile_seal(&sb, &pk), 0);
	expect((const uint8_t *)sb.data, sb.size, SNAPFILE_VERSION_UNKNOWN,
	    "format version is not an integer");
	msgpack_sbuffer_destroy(&sb);

	/* -1 is an integer but not a version. */
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 5);
	pk_cstr(&pk, MAGIC);
	msgpack_pack_int64(&pk, -1);
	pk_cstr(&pk, "x");
	pk_cstr(&pk, "x");
	assert_int_equal(snapfile_seal(&sb, &pk), 0);
	expect((const uint8_t *)sb.data, sb.size, SNAPFILE_VERSION_UNKNOWN, "not an integer");
	msgpack_sbuffer_destroy(&sb);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_refused_bytes),
		cmocka_unit_test(test_refused_envelope),
		cmocka_unit_test(test_version_not_an_integer),
	};

	return cmocka_run_group_tests_name("lib_snapfile", tests, NULL, NULL);
}
