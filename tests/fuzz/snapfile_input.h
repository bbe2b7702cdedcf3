/*
 * snapfile_input.h - the input of the snapshot fuzz targets: byte 0 picks a mode, the rest is the file.
 * Odd mode: when the file ends like a checksum (bin8 of 32 bytes), the right SHA-256 of what precedes
 * it is patched in first, so that mutations get past the checksum.
 */
#ifndef HC_FUZZ_SNAPFILE_INPUT_H
#define HC_FUZZ_SNAPFILE_INPUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "snapfile.h"

/* A malloc()ed copy of the file (*len bytes, maybe 0), or NULL when size is 0 or out of memory. */
static inline uint8_t *
snapfile_fuzz_input(const uint8_t *data, size_t size, size_t *len)
{
	uint8_t *buf;

	if (size < 1)
		return NULL;
	*len = size - 1;
	if ((buf = malloc(*len > 0 ? *len : 1)) == NULL)
		return NULL;
	memcpy(buf, data + 1, *len);
	if ((data[0] & 1) && *len >= 34 && buf[*len - 34] == 0xc4 && buf[*len - 33] == 32)
		(void)snapfile_sha256(buf, *len - 34, buf + *len - 32);
	return buf;
}

#endif
