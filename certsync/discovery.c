/*
 * discovery.c - see discovery.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "discovery.h"
#include "errbuf.h"

#define DISCOVERY_MAX_INSTANCES	65536

static void
skip(struct instance_list *l, const char *fmt, ...)
{
	va_list ap;

	if (l->skipped++ == 0) {
		va_start(ap, fmt);
		vsnprintf(l->skip_reason, sizeof(l->skip_reason), fmt, ap);
		va_end(ap);
	}
}

void
instance_list_free(struct instance_list *l)
{
	size_t i;

	if (l == NULL)
		return;
	for (i = 0; i < l->n; i++) {
		free(l->v[i].addr);
		free(l->v[i].service_id);
		free(l->v[i].node);
		free(l->v[i].datacenter);
	}
	free(l->v);
	free(l->query_service);
	memset(l, 0, sizeof(*l));
}

/* An optional string member: NULL when absent or JSON null, -1 when present with another type. */
static int
opt_string(json_t *obj, const char *key, const char **out, const char *where, char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, key);

	*out = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_string(v)) {
		errbuf_set(err, errlen, "%s.%s: expected a string", where, key);
		return -1;
	}
	*out = json_string_value(v);
	return 0;
}

/*
 * Canonical text of a numeric address (so that "::0001" and "::1" compare equal and match what HAProxy
 * reports back). 0 with out filled, -1 when s is not a numeric IPv4/IPv6 address.
 */
static int
canon_addr(const char *s, char *out, size_t outlen)
{
	unsigned char a[sizeof(struct in6_addr)];

	if (inet_pton(AF_INET, s, a) == 1)
		return inet_ntop(AF_INET, a, out, outlen) == NULL ? -1 : 0;
	if (inet_pton(AF_INET6, s, a) == 1)
		return inet_ntop(AF_INET6, a, out, outlen) == NULL ? -1 : 0;
	return -1;
}

static int
inst_cmp(const void *pa, const void *pb)
{
	const struct upstream_instance *a = pa, *b = pb;
	int c = strcmp(a->addr, b->addr);

	if (c != 0)
		return c;
	return (a->port > b->port) - (a->port < b->port);
}

/* Decodes one ServiceEntry {Node, Service, Checks} and appends it to l (or counts it as skipped). */
static int
decode_entry(json_t *e, size_t idx, struct instance_list *l, char *err, size_t errlen)
{
	json_t *node, *svc, *checks, *port, *c;
	const char *saddr, *naddr, *addr, *sid, *nname, *dc, *status;
	char where[48], canon[INET6_ADDRSTRLEN];
	struct upstream_instance *in;
	json_int_t p;
	bool critical = false;
	size_t i;

	snprintf(where, sizeof(where), "[%zu]", idx);
	if (!json_is_object(e)) {
		errbuf_set(err, errlen, "%s: expected an object", where);
		return -1;
	}
	node = json_object_get(e, "Node");
	svc = json_object_get(e, "Service");
	if (!json_is_object(node) || !json_is_object(svc)) {
		errbuf_set(err, errlen, "%s: Node and Service must be objects", where);
		return -1;
	}
	if (opt_string(svc, "Address", &saddr, where, err, errlen) == -1 ||
	    opt_string(node, "Address", &naddr, where, err, errlen) == -1 ||
	    opt_string(svc, "ID", &sid, where, err, errlen) == -1 ||
	    opt_string(node, "Node", &nname, where, err, errlen) == -1 ||
	    opt_string(node, "Datacenter", &dc, where, err, errlen) == -1)
		return -1;
	port = json_object_get(svc, "Port");
	if (!json_is_integer(port)) {
		errbuf_set(err, errlen, "%s.Service.Port: expected a number", where);
		return -1;
	}
	p = json_integer_value(port);
	if (p < 0 || p > 65535) {
		errbuf_set(err, errlen, "%s.Service.Port: %lld is not a port", where, (long long)p);
		return -1;
	}
	checks = json_object_get(e, "Checks");
	if (checks != NULL && !json_is_null(checks) && !json_is_array(checks)) {
		errbuf_set(err, errlen, "%s.Checks: expected an array", where);
		return -1;
	}
	/* The agent filters by health already (?passing, prepared queries drop critical); a critical
	 * check that slipped through is still never dialled. */
	json_array_foreach(checks, i, c) {
		if (!json_is_object(c))
			continue;
		if (opt_string(c, "Status", &status, where, err, errlen) == -1)
			return -1;
		if (status != NULL && strcmp(status, "critical") == 0)
			critical = true;
	}
	/* Consul's dial address: the service's own address, else its node's. */
	addr = (saddr != NULL && saddr[0] != '\0') ? saddr : naddr;
	if (addr == NULL || addr[0] == '\0') {
		skip(l, "%s: no Service.Address nor Node.Address", where);
		return 0;
	}
	if (p == 0) {
		skip(l, "%s: Service.Port is 0", where);
		return 0;
	}
	if (canon_addr(addr, canon, sizeof(canon)) == -1) {
		skip(l, "%s: address \"%.64s\" is not a numeric IP address", where, addr);
		return 0;
	}
	if (critical) {
		skip(l, "%s: %s:%lld has a critical check", where, canon, (long long)p);
		return 0;
	}
	if (l->n >= DISCOVERY_MAX_INSTANCES) {
		errbuf_set(err, errlen, "more than %d instances", DISCOVERY_MAX_INSTANCES);
		return -1;
	}
	in = &l->v[l->n];
	memset(in, 0, sizeof(*in));
	in->addr = strdup(canon);
	in->port = (int)p;
	in->service_id = strdup(sid != NULL ? sid : "");
	in->node = strdup(nname != NULL ? nname : "");
	in->datacenter = strdup(dc != NULL ? dc : "");
	l->n++;
	if (in->addr == NULL || in->service_id == NULL || in->node == NULL || in->datacenter == NULL) {
		errbuf_set(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

/* Decodes an array of ServiceEntry into out, sorted and without duplicates. */
static int
decode_entries(json_t *arr, struct instance_list *out, char *err, size_t errlen)
{
	json_t *e;
	size_t i, w;

	if (!json_is_array(arr)) {
		errbuf_set(err, errlen, "expected an array of service entries");
		return -1;
	}
	if (json_array_size(arr) > DISCOVERY_MAX_INSTANCES) {
		errbuf_set(err, errlen, "more than %d instances", DISCOVERY_MAX_INSTANCES);
		return -1;
	}
	if (json_array_size(arr) > 0) {
		out->v = calloc(json_array_size(arr), sizeof(*out->v));
		if (out->v == NULL) {
			errbuf_set(err, errlen, "out of memory");
			return -1;
		}
	}
	json_array_foreach(arr, i, e) {
		if (decode_entry(e, i, out, err, errlen) == -1)
			return -1;
	}
	if (out->n > 1)
		qsort(out->v, out->n, sizeof(*out->v), inst_cmp);
	/* The same address:port twice (two registrations of one proxy) is one server. */
	for (i = 1, w = (out->n > 0 ? 1 : 0); i < out->n; i++) {
		if (inst_cmp(&out->v[w - 1], &out->v[i]) == 0) {
			free(out->v[i].addr);
			free(out->v[i].service_id);
			free(out->v[i].node);
			free(out->v[i].datacenter);
			continue;
		}
		out->v[w++] = out->v[i];
	}
	out->n = w;
	return 0;
}

static json_t *
parse(const char *json, size_t len, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root;

	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL)
		errbuf_set(err, errlen, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
		    jerr.text);
	return root;
}

int
discovery_decode_health(const char *json, size_t len, struct instance_list *out, char *err, size_t errlen)
{
	json_t *root;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((root = parse(json, len, err, errlen)) == NULL)
		return -1;
	rc = decode_entries(root, out, err, errlen);
	json_decref(root);
	if (rc == -1)
		instance_list_free(out);
	return rc;
}

int
discovery_decode_query(const char *json, size_t len, struct instance_list *out, char *err, size_t errlen)
{
	json_t *root, *nodes;
	const char *svc;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	if ((root = parse(json, len, err, errlen)) == NULL)
		return -1;
	if (!json_is_object(root)) {
		errbuf_set(err, errlen, "prepared query answer: expected an object");
		goto out;
	}
	if (opt_string(root, "Service", &svc, "query", err, errlen) == -1)
		goto out;
	nodes = json_object_get(root, "Nodes");
	if (nodes == NULL || json_is_null(nodes)) {
		/* Consul answers "Nodes": null when nothing matched; treat as empty. */
		rc = 0;
	} else if (!json_is_array(nodes)) {
		errbuf_set(err, errlen, "Nodes: expected an array");
	} else if (decode_entries(nodes, out, err, errlen) == 0) {
		rc = 0;
	} else {
		/* err already says which entry; prefix it for the reader */
		char tmp[256];

		snprintf(tmp, sizeof(tmp), "Nodes%s", err != NULL ? err : "");
		errbuf_set(err, errlen, "%s", tmp);
	}
	if (rc == 0 && svc != NULL && (out->query_service = strdup(svc)) == NULL) {
		errbuf_set(err, errlen, "out of memory");
		rc = -1;
	}
out:
	json_decref(root);
	if (rc == -1)
		instance_list_free(out);
	return rc;
}

bool
instance_list_equal(const struct instance_list *a, const struct instance_list *b)
{
	size_t i;

	if (a->n != b->n)
		return false;
	for (i = 0; i < a->n; i++) {
		if (inst_cmp(&a->v[i], &b->v[i]) != 0)
			return false;
	}
	return true;
}

long
instance_list_find(const struct instance_list *l, const char *addr, int port)
{
	size_t i;

	for (i = 0; i < l->n; i++) {
		if (l->v[i].port == port && strcmp(l->v[i].addr, addr) == 0)
			return (long)i;
	}
	return -1;
}

int
instance_list_copy(struct instance_list *dst, const struct instance_list *src)
{
	size_t i;

	memset(dst, 0, sizeof(*dst));
	dst->skipped = src->skipped;
	memcpy(dst->skip_reason, src->skip_reason, sizeof(dst->skip_reason));
	if (src->query_service != NULL && (dst->query_service = strdup(src->query_service)) == NULL)
		goto fail;
	if (src->n == 0)
		return 0;
	if ((dst->v = calloc(src->n, sizeof(*dst->v))) == NULL)
		goto fail;
	for (i = 0; i < src->n; i++) {
		struct upstream_instance *d = &dst->v[i];
		const struct upstream_instance *s = &src->v[i];

		dst->n++;
		d->port = s->port;
		d->addr = strdup(s->addr);
		d->service_id = strdup(s->service_id);
		d->node = strdup(s->node);
		d->datacenter = strdup(s->datacenter);
		if (d->addr == NULL || d->service_id == NULL || d->node == NULL || d->datacenter == NULL)
			goto fail;
	}
	return 0;
fail:
	instance_list_free(dst);
	return -1;
}
