/*
 * fuzz_spoa_cache_snapshot.c - dcsnap_decode on arbitrary bytes.
 *
 * Byte 0 picks a mode. Odd: when the input ends like a checksum (bin8 of 32 bytes), the right SHA-256 of
 * what precedes it is patched in first, so that mutations get past the checksum and reach the entry
 * checks. Whatever decodes must encode again to a snapshot that decodes to the same entries.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache_snapshot.h"
#include "snapfile_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
set_foreach(void *cache, dcsnap_visit_fn *visit, void *arg)
{
	const struct dcsnap *s = cache;
	size_t i;

	for (i = 0; i < s->n; i++)
		if (visit(arg, &s->v[i]) == -1)
			return -1;
	return 0;
}

static int
same(const struct dcsnap_entry *a, const struct dcsnap_entry *b)
{
	return strcmp(a->target, b->target) == 0 && strcmp(a->caller_uri, b->caller_uri) == 0 &&
	    strcmp(a->reason, b->reason) == 0 && strcmp(a->source_app, b->source_app) == 0 &&
	    a->allow == b->allow && a->obtained_ms == b->obtained_ms;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dcsnap s, s2;
	uint8_t *buf, *enc;
	size_t len, elen, n, i;
	char err[256];

	if ((buf = snapfile_fuzz_input(data, size, &len)) == NULL)
		return 0;
	if (dcsnap_decode(buf, len, (data[0] & 2) ? "" : "db", &s, err, sizeof(err)) == DCSNAP_OK) {
		if (dcsnap_encode(s.owner, s.written_at_ms, set_foreach, &s, &enc, &elen, &n, err,
		    sizeof(err)) != 0 || n != s.n)
			__builtin_trap();
		if (dcsnap_decode(enc, elen, s.owner, &s2, err, sizeof(err)) != DCSNAP_OK || s2.n != s.n)
			__builtin_trap();
		for (i = 0; i < s.n; i++)
			if (!dcsnap_entry_valid(&s.v[i]) || !same(&s.v[i], &s2.v[i]))
				__builtin_trap();
		dcsnap_free(&s2);
		dcsnap_free(&s);
		free(enc);
	}
	free(buf);
	return 0;
}
