/*
 * fuzz_lib_snapfile.c - snapfile_open on arbitrary bytes, with the envelope of either daemon's snapshot
 * (byte 0 picks). Odd byte 0: when the input ends like a checksum (bin8 of 32 bytes), the right SHA-256
 * of what precedes it is patched in first, so that mutations get past the checksum. Whatever opens must
 * have the magic, the version and a checksum of exactly the bytes before it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "snapfile_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct snapfile_format formats[2] = {
	{ "haproxy-connect certsync snapshot", "certsync snapshot", 1, 6, 16u * 1024u * 1024u, 8 },
	{ "haproxy-connect spoa decisions", "connect-spoa decision snapshot", 1, 6, 64u * 1024u * 1024u, 4 },
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct snapfile_format *f;
	const msgpack_object *it;
	msgpack_unpacked u;
	uint8_t *buf, md[32];
	size_t len, hdr;
	char err[256];

	if ((buf = snapfile_fuzz_input(data, size, &len)) == NULL)
		return 0;
	f = &formats[(data[0] >> 1) & 1];
	if (snapfile_open(f, buf, len, &u, &it, err, sizeof(err)) == SNAPFILE_OK) {
		if (it == NULL || it[0].type != MSGPACK_OBJECT_STR ||
		    it[0].via.str.size != strlen(f->magic) || memcmp(it[0].via.str.ptr, f->magic, strlen(f->magic)) != 0 ||
		    it[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER || it[1].via.u64 != f->version)
			__builtin_trap();
		/* The checksum is the last 32 bytes, over everything before its bin8/16/32 header. */
		if (it[f->nitems - 1].type != MSGPACK_OBJECT_BIN || it[f->nitems - 1].via.bin.size != 32 ||
		    len < 34 || memcmp(it[f->nitems - 1].via.bin.ptr, buf + len - 32, 32) != 0)
			__builtin_trap();
		if (buf[len - 34] == 0xc4)
			hdr = 2;
		else if (len >= 35 && buf[len - 35] == 0xc5)
			hdr = 3;
		else if (len >= 37 && buf[len - 37] == 0xc6)
			hdr = 5;
		else
			__builtin_trap();
		if (snapfile_sha256(buf, len - 32 - hdr, md) != 0 || memcmp(md, buf + len - 32, 32) != 0)
			__builtin_trap();
	}
	msgpack_unpacked_destroy(&u);
	free(buf);
	return 0;
}
