/*
 * fuzz_certsync_discovery.c - both discovery decoders on arbitrary bytes. The first byte picks the decoder.
 */
#include <stddef.h>
#include <stdint.h>

#include "discovery.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct instance_list l, c;
	char err[256];
	int rc;

	if (size < 1)
		return 0;
	if (data[0] & 1)
		rc = discovery_decode_query((const char *)data + 1, size - 1, &l, err, sizeof(err));
	else
		rc = discovery_decode_health((const char *)data + 1, size - 1, &l, err, sizeof(err));
	if (rc == 0) {
		if (instance_list_copy(&c, &l) == 0) {
			if (!instance_list_equal(&c, &l))
				__builtin_trap();
			instance_list_free(&c);
		}
		if (l.n > 0 && instance_list_find(&l, l.v[0].addr, l.v[0].port) != 0)
			__builtin_trap();
		instance_list_free(&l);
	}
	return 0;
}
