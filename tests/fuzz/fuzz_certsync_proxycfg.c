/*
 * Fuzz target: certsync/proxycfg.c JSON decoding. The first byte picks the entry point; for the
 * unmanaged shape the rest is split at the first 0xff byte into the service and the agent's services.
 * Invariants: no crash or leak, and a decoded configuration copies into an equal one.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxycfg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(struct proxy_cfg *c)
{
	struct proxy_cfg copy;

	if (proxycfg_copy(&copy, c) == 0) {
		if (!proxycfg_equal(c, &copy) || proxycfg_listeners_differ(c, &copy))
			abort();
		proxycfg_free(&copy);
	}
	if (c->target_service_name == NULL || c->bind_address == NULL || c->local_service_host == NULL ||
	    c->bind_port < 1 || c->bind_port > 65535 || c->local_service_port < 1 || c->local_service_port > 65535)
		abort();
	proxycfg_free(c);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxycfg_warnings w = { 0 };
	struct proxy_cfg c;
	const char *json, *sep;
	char err[256], *pid;
	size_t len;

	if (size < 1)
		return 0;
	json = (const char *)data + 1;
	len = size - 1;
	switch (data[0] % 3) {
	case 0:
		if (proxycfg_from_managed(json, len, &c, &w, err, sizeof(err)) == 0)
			check(&c);
		break;
	case 1:
		sep = memchr(json, 0xff, len);
		if (sep == NULL) {
			if (proxycfg_from_service(json, len, NULL, 0, &c, &w, err, sizeof(err)) == 0)
				check(&c);
		} else if (proxycfg_from_service(json, (size_t)(sep - json), sep + 1, len - (size_t)(sep - json) - 1,
		    &c, &w, err, sizeof(err)) == 0)
			check(&c);
		break;
	case 2:
		if (proxycfg_find_sidecar(json, len, "web", &pid, err, sizeof(err)) == 0) {
			if (pid == NULL)
				abort();
			free(pid);
		}
		break;
	}
	proxycfg_warnings_free(&w);
	return 0;
}
