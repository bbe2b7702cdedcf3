/*
 * snapfile.c - see snapfile.h.
 */
#include <stdio.h>
#include <string.h>

#include <msgpack.h>
#include <openssl/evp.h>

#include "snapfile.h"

/* ---- step 1: structural check of the raw bytes ---------------------------------------------- */

struct mpcur {
	const uint8_t	*b;
	size_t		 len;
	size_t		 off;
};

/* Reads an n-byte big-endian unsigned; -1 when fewer than n bytes are left. */
static int
cur_be(struct mpcur *c, size_t n, uint64_t *v)
{
	size_t i;

	if (c->len - c->off < n)
		return -1;
	*v = 0;
	for (i = 0; i < n; i++)
		*v = (*v << 8) | c->b[c->off + i];
	c->off += n;
	return 0;
}

/*
 * Skips one msgpack object (no ext types) at the cursor, nested at most max_depth levels below depth 0.
 * 0, or -1 when malformed or truncated.
 */
static int
mp_skip(struct mpcur *c, int depth, int max_depth)
{
	uint64_t n = 0, i;
	uint8_t t;

	if (depth > max_depth || c->len - c->off < 1)
		return -1;
	t = c->b[c->off++];
	if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3)
		return 0;
	if ((t & 0xf0) == 0x80) {
		n = 2u * (t & 0x0fu);
		goto items;
	}
	if ((t & 0xf0) == 0x90) {
		n = t & 0x0fu;
		goto items;
	}
	if ((t & 0xe0) == 0xa0) {
		n = t & 0x1fu;
		goto bytes;
	}
	switch (t) {
	case 0xc4: case 0xd9: if (cur_be(c, 1, &n) == -1) return -1; goto bytes;
	case 0xc5: case 0xda: if (cur_be(c, 2, &n) == -1) return -1; goto bytes;
	case 0xc6: case 0xdb: if (cur_be(c, 4, &n) == -1) return -1; goto bytes;
	case 0xcc: case 0xd0: n = 1; goto bytes;
	case 0xcd: case 0xd1: n = 2; goto bytes;
	case 0xca: case 0xce: case 0xd2: n = 4; goto bytes;
	case 0xcb: case 0xcf: case 0xd3: n = 8; goto bytes;
	case 0xdc: if (cur_be(c, 2, &n) == -1) return -1; goto items;
	case 0xdd: if (cur_be(c, 4, &n) == -1) return -1; goto items;
	case 0xde: if (cur_be(c, 2, &n) == -1) return -1; n *= 2; goto items;
	case 0xdf: if (cur_be(c, 4, &n) == -1) return -1; n *= 2; goto items;
	default:
		return -1;	/* 0xc1 (never used) and the ext types */
	}
bytes:
	if (c->len - c->off < n)
		return -1;
	c->off += (size_t)n;
	return 0;
items:
	/* Every item takes at least one byte: a count beyond the bytes left is a lie. */
	if (n > c->len - c->off)
		return -1;
	for (i = 0; i < n; i++)
		if (mp_skip(c, depth + 1, max_depth) == -1)
			return -1;
	return 0;
}

/* Offset of item idx of the top-level array of b, already checked by mp_skip. */
static size_t
top_item_offset(const uint8_t *b, size_t len, size_t idx, int max_depth)
{
	struct mpcur c = { b, len, 1 };
	uint64_t n;
	size_t i;

	if (b[0] == 0xdc)
		(void)cur_be(&c, 2, &n);
	else if (b[0] == 0xdd)
		(void)cur_be(&c, 4, &n);
	for (i = 0; i < idx; i++)
		(void)mp_skip(&c, 1, max_depth);
	return c.off;
}

/* ---- step 2: the envelope's items ------------------------------------------------------------ */

int
snapfile_sha256(const void *data, size_t len, uint8_t out[32])
{
	unsigned int n = 0;

	if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != 32)
		return -1;
	return 0;
}

enum snapfile_status
snapfile_open(const struct snapfile_format *f, const uint8_t *buf, size_t len, msgpack_unpacked *u,
    const msgpack_object **items, char *err, size_t errlen)
{
	struct mpcur cur = { buf, len, 0 };
	const msgpack_object *top, *it, *sum;
	uint8_t want[32];
	size_t off = 0;

	msgpack_unpacked_init(u);
	*items = NULL;
	if (buf == NULL || len == 0) {
		snprintf(err, errlen, "empty");
		return SNAPFILE_CORRUPT;
	}
	if (len > f->max_len) {
		snprintf(err, errlen, "%zu bytes exceed %zu", len, f->max_len);
		return SNAPFILE_CORRUPT;
	}
	if ((buf[0] & 0xf0) != 0x90 && buf[0] != 0xdc && buf[0] != 0xdd) {
		snprintf(err, errlen, "not a %s (no msgpack array)", f->what);
		return SNAPFILE_CORRUPT;
	}
	if (mp_skip(&cur, 0, f->max_depth) == -1) {
		snprintf(err, errlen, "truncated or malformed msgpack (%zu bytes)", len);
		return SNAPFILE_CORRUPT;
	}
	if (cur.off != len) {
		snprintf(err, errlen, "%zu bytes of trailing data", len - cur.off);
		return SNAPFILE_CORRUPT;
	}
	if (msgpack_unpack_next(u, (const char *)buf, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len) {
		snprintf(err, errlen, "msgpack decoding failed");
		return SNAPFILE_CORRUPT;
	}
	top = &u->data;
	if (top->type != MSGPACK_OBJECT_ARRAY || top->via.array.size < 2 ||
	    top->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
	    top->via.array.ptr[0].via.str.size != strlen(f->magic) ||
	    memcmp(top->via.array.ptr[0].via.str.ptr, f->magic, strlen(f->magic)) != 0) {
		snprintf(err, errlen, "not a %s (bad magic)", f->what);
		return SNAPFILE_CORRUPT;
	}
	it = top->via.array.ptr;
	if (it[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER || it[1].via.u64 != f->version) {
		if (it[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
			snprintf(err, errlen, "format version %llu, this build reads version %u",
			    (unsigned long long)it[1].via.u64, f->version);
		else
			snprintf(err, errlen, "format version is not an integer");
		return SNAPFILE_VERSION_UNKNOWN;
	}
	if (top->via.array.size != f->nitems) {
		snprintf(err, errlen, "%u header items, expected %u", top->via.array.size, f->nitems);
		return SNAPFILE_CORRUPT;
	}
	sum = &it[f->nitems - 1];
	if (sum->type != MSGPACK_OBJECT_BIN || sum->via.bin.size != 32) {
		snprintf(err, errlen, "checksum: expected 32 bytes of SHA-256");
		return SNAPFILE_CORRUPT;
	}
	if (snapfile_sha256(buf, top_item_offset(buf, len, f->nitems - 1, f->max_depth), want) == -1 ||
	    memcmp(want, sum->via.bin.ptr, 32) != 0) {
		snprintf(err, errlen, "checksum mismatch");
		return SNAPFILE_CORRUPT;
	}
	*items = it;
	return SNAPFILE_OK;
}

/* ---- writing ------------------------------------------------------------------------------------ */

int
snapfile_begin(const struct snapfile_format *f, msgpack_sbuffer *sb, msgpack_packer *pk)
{
	size_t n = strlen(f->magic);
	int rc = 0;

	msgpack_sbuffer_init(sb);
	msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
	rc |= msgpack_pack_array(pk, f->nitems);
	rc |= msgpack_pack_str(pk, n);
	rc |= msgpack_pack_str_body(pk, f->magic, n);
	rc |= msgpack_pack_uint32(pk, f->version);
	return rc != 0 ? -1 : 0;
}

int
snapfile_seal(msgpack_sbuffer *sb, msgpack_packer *pk)
{
	uint8_t digest[32];

	if (snapfile_sha256(sb->data, sb->size, digest) == -1 || msgpack_pack_bin(pk, 32) != 0 ||
	    msgpack_pack_bin_body(pk, digest, 32) != 0)
		return -1;
	return 0;
}
