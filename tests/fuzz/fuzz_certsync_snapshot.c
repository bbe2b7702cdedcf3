/*
 * fuzz_certsync_snapshot.c - snapshot_decode on arbitrary bytes.
 *
 * Byte 0 picks a mode. Odd: when the input ends like a checksum (bin8 of 32 bytes), the right SHA-256 of
 * what precedes it is patched in first, so that mutations get past the checksum and reach the field
 * checks. Whatever decodes must encode again and decode to the same state (same bytes when re-encoded).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "snapfile_input.h"
#include "snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct certsync_snapshot s, s2;
	uint8_t *buf, *enc = NULL, *enc2 = NULL;
	size_t len, elen, elen2;
	char err[256];

	if ((buf = snapfile_fuzz_input(data, size, &len)) == NULL)
		return 0;
	if (snapshot_decode(buf, len, (data[0] & 2) ? NULL : "web-sidecar-proxy", (data[0] & 2) ? "web" : NULL,
	    &s, err, sizeof(err)) == SNAPSHOT_OK) {
		if (snapshot_encode(&s, &enc, &elen, err, sizeof(err)) != 0)
			__builtin_trap();	/* a decoded state is always encodable */
		if (snapshot_decode(enc, elen, s.proxy_id, NULL, &s2, err, sizeof(err)) != SNAPSHOT_OK)
			__builtin_trap();
		if (snapshot_encode(&s2, &enc2, &elen2, err, sizeof(err)) != 0 || elen2 != elen ||
		    memcmp(enc, enc2, elen) != 0)
			__builtin_trap();
		snapshot_free(&s2);
		snapshot_free(&s);
		free(enc);
		free(enc2);
	}
	free(buf);
	return 0;
}
