/*
 * reseal.h - for the snapshot unit tests (include after cmocka.h): packs a changed, unpacked snapshot
 * again with a correct checksum, so that a test gets past the envelope to the checks behind it.
 */
#ifndef HC_TEST_RESEAL_H
#define HC_TEST_RESEAL_H

#include <msgpack.h>

#include "snapfile.h"

/* Packs top's items but the last, then a fresh SHA-256 of those bytes; *out is free()d by the caller. */
static inline void
reseal(const msgpack_object *top, uint8_t **out, size_t *outlen)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint32_t i, n = top->via.array.size;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, n);
	for (i = 0; i + 1 < n; i++)
		msgpack_pack_object(&pk, top->via.array.ptr[i]);
	assert_int_equal(snapfile_seal(&sb, &pk), 0);
	*outlen = sb.size;
	*out = (uint8_t *)msgpack_sbuffer_release(&sb);
}

#endif
