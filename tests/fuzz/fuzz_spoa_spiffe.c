/*
 * fuzz_spoa_spiffe.c - arbitrary bytes as a DER certificate and as a URI argument.
 * The first byte picks the parser; the rest is the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "spiffe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spiffe_id id;
	char err[256];

	if (size == 0)
		return 0;
	if (data[0] & 1) {
		if (spiffe_parse_uri((const char *)data + 1, size - 1, &id, err, sizeof(err)) == 0) {
			/* An accepted URI is plain: it round-trips and every part is non-empty. */
			if (strlen(id.uri) != size - 1 || memcmp(id.uri, data + 1, size - 1) != 0 ||
			    id.service[0] == '\0' || id.ns[0] == '\0' || id.dc[0] == '\0' ||
			    id.trust_domain[0] == '\0')
				__builtin_trap();
		}
	} else {
		if (spiffe_from_der(data + 1, size - 1, &id, err, sizeof(err)) == 0 && id.service[0] == '\0')
			__builtin_trap();
	}
	return 0;
}
