/*
 * discovery.h - upstream instances from what the agent says. Pure: no I/O, no globals, no logging.
 *
 * Two sources, as Consul's own proxy reads them:
 *   GET /v1/health/connect/<name>?passing=1[&dc=]   -> [ServiceEntry]
 *   GET /v1/query/<name>/execute?connect=true      -> {Service, Nodes: [ServiceEntry], Datacenter, ...}
 * The dial address is chosen as Consul does: Service.Address, else Node.Address; the port is Service.Port.
 * The instance list is sorted by (address, port) and has no duplicates, so two answers compare cheaply.
 */
#ifndef HC_DISCOVERY_H
#define HC_DISCOVERY_H

#include <stdbool.h>
#include <stddef.h>

struct upstream_instance {
	char	*addr;		/* numeric IPv4 or IPv6 address, what HAProxy's `set server addr` takes */
	int	 port;		/* 1..65535 */
	char	*service_id;	/* Service.ID, for logs */
	char	*node;		/* Node.Node, for logs */
	char	*datacenter;	/* Node.Datacenter, "" when absent */
};

struct instance_list {
	struct upstream_instance *v;
	size_t	 n;
	size_t	 skipped;	/* entries left out (critical check, address not numeric, port 0) */
	char	 skip_reason[160];	/* the first reason, for a debug log */
	char	*query_service;	/* prepared query only: Service (the name the query resolved to), else NULL */
};

/* Decodes a /v1/health/connect answer. 0, or -1 with err filled (out is then empty). */
int  discovery_decode_health(const char *json, size_t len, struct instance_list *out,
    char *err, size_t errlen);
/* Decodes a /v1/query/<name>/execute?connect=true answer. 0, or -1 with err filled. */
int  discovery_decode_query(const char *json, size_t len, struct instance_list *out,
    char *err, size_t errlen);
/* True when a and b hold the same instances (addresses and ports). */
bool instance_list_equal(const struct instance_list *a, const struct instance_list *b);
/* Index of the instance addr:port in l, or -1. */
long instance_list_find(const struct instance_list *l, const char *addr, int port);
int  instance_list_copy(struct instance_list *dst, const struct instance_list *src);
void instance_list_free(struct instance_list *l);

#endif
