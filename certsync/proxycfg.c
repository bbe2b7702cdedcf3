/*
 * proxycfg.c - decode a Connect proxy's configuration from what the Consul agent says (proxycfg.h).
 *
 * Shapes (consul-api.md sections 5 and 6, Consul 1.2-1.5):
 *   managed   GET /v1/agent/connect/proxy/<id>: Config{bind_address, bind_port, local_service_address,
 *             local_connect_timeout_ms, handshake_timeout_ms, protocol, upstreams (1.2, snake_case)} and,
 *             from 1.3, top-level Upstreams (PascalCase, each with an opaque Config).
 *   unmanaged an AgentService of Kind connect-proxy: 1.2 ProxyDestination, 1.3+ Proxy{...}. As in Consul's
 *             built-in proxy (connect/proxy/config.go), the public listener is the registration's
 *             Address (default 0.0.0.0) and Port, and the local service is Proxy.LocalServiceAddress
 *             (default 127.0.0.1) and Proxy.LocalServicePort; Config's bind and local service keys are
 *             ignored there (with a warning).
 * Consul passes the opaque Config maps through untouched, so numbers there may be JSON numbers (also Go's
 * "1e+06" float form) or strings of digits; every value is range-checked. Unknown Config keys give one
 * warning each. Every value that ends up in the HAProxy configuration is checked against a strict
 * character set here, so a name cannot carry configuration keywords.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "proxycfg.h"

#define PC_PRINTF(a, b) __attribute__((format(printf, a, b)))

#define DEFAULT_BIND_ADDRESS		"0.0.0.0"
#define DEFAULT_LOCAL_HOST		"127.0.0.1"
#define DEFAULT_LOCAL_CONNECT_MS	1000
#define DEFAULT_HANDSHAKE_MS		10000
#define DEFAULT_UPSTREAM_CONNECT_MS	10000
#define MAX_TIMEOUT_MS			86400000LL	/* one day */
#define MAX_UPSTREAMS			1024
#define MAX_NAME			256

struct dctx {
	struct proxycfg_warnings *warn;
	char		*err;
	size_t		 errlen;
};

static int  seterr(struct dctx *d, const char *fmt, ...) PC_PRINTF(2, 3);
static void warnf(struct dctx *d, const char *fmt, ...) PC_PRINTF(2, 3);

static int
seterr(struct dctx *d, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(d->err, d->errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* Appends one warning, once: an identical message is not repeated. Allocation failures drop it. */
static void
warnf(struct dctx *d, const char *fmt, ...)
{
	char msg[512], **nm, *copy;
	va_list ap;
	size_t i;

	if (d->warn == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	for (i = 0; i < d->warn->n; i++)
		if (strcmp(d->warn->msgs[i], msg) == 0)
			return;
	if ((copy = strdup(msg)) == NULL)
		return;
	if ((nm = realloc(d->warn->msgs, (d->warn->n + 1) * sizeof(*nm))) == NULL) {
		free(copy);
		return;
	}
	d->warn->msgs = nm;
	d->warn->msgs[d->warn->n++] = copy;
}

void
proxycfg_warnings_free(struct proxycfg_warnings *w)
{
	size_t i;

	if (w == NULL)
		return;
	for (i = 0; i < w->n; i++)
		free(w->msgs[i]);
	free(w->msgs);
	w->msgs = NULL;
	w->n = 0;
}

/* ---- value helpers ---- */

/* A short, printable rendering of a JSON value for error messages. */
static void
show(const json_t *v, char *out, size_t outlen)
{
	const char *s;
	size_t i, o = 0;

	switch (json_typeof(v)) {
	case JSON_INTEGER:
		snprintf(out, outlen, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return;
	case JSON_REAL:
		snprintf(out, outlen, "%g", json_real_value(v));
		return;
	case JSON_STRING:
		s = json_string_value(v);
		if (outlen < 8) {
			snprintf(out, outlen, "\"\"");
			return;
		}
		out[o++] = '"';
		for (i = 0; s[i] != '\0' && i < 64 && o + 6 < outlen; i++) {
			unsigned char c = (unsigned char)s[i];

			if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
				o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
			else
				out[o++] = (char)c;
		}
		if (s[i] != '\0' && o + 4 < outlen) {
			memcpy(out + o, "...", 3);
			o += 3;
		}
		out[o++] = '"';
		out[o] = '\0';
		return;
	case JSON_TRUE:
		snprintf(out, outlen, "true");
		return;
	case JSON_FALSE:
		snprintf(out, outlen, "false");
		return;
	case JSON_NULL:
		snprintf(out, outlen, "null");
		return;
	case JSON_OBJECT:
		snprintf(out, outlen, "an object");
		return;
	case JSON_ARRAY:
		snprintf(out, outlen, "an array");
		return;
	}
	snprintf(out, outlen, "?");
}

/* show() for a C string: quoted and escaped as a JSON string value is ("the value" when out of memory). */
static void
show_cstr(const char *s, char *out, size_t outlen)
{
	json_t *tmp = json_string(s);

	if (tmp != NULL)
		show(tmp, out, outlen);
	else
		snprintf(out, outlen, "the value");
	json_decref(tmp);
}

/*
 * A whole number from a JSON integer, an integral JSON real, or a string of 1..18 decimal digits.
 * 1 with *out, 0 when v is NULL or null (absent), -1 with an error "<path>: <value> is not a number".
 */
static int
get_int(struct dctx *d, const json_t *v, const char *path, long long *out)
{
	char shown[96];

	if (v == NULL || json_is_null(v))
		return 0;
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return 1;
	}
	if (json_is_real(v)) {
		double x = json_real_value(v);

		if (isfinite(x) && x == floor(x) && x >= -1e15 && x <= 1e15) {
			*out = (long long)x;
			return 1;
		}
	} else if (json_is_string(v)) {
		const char *s = json_string_value(v);
		size_t i, n = json_string_length(v);
		long long x = 0;

		if (n >= 1 && n <= 18) {
			for (i = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++)
				x = x * 10 + (s[i] - '0');
			if (i == n) {
				*out = x;
				return 1;
			}
		}
	}
	show(v, shown, sizeof(shown));
	return seterr(d, "%s: %s is not a number", path, shown);
}

/* 1..65535. 1, 0 absent, -1. */
static int
get_port(struct dctx *d, const json_t *v, const char *path, int *out)
{
	char shown[96];
	long long x;
	int rc;

	if ((rc = get_int(d, v, path, &x)) == 0)
		return 0;
	if (rc == -1 || x < 1 || x > 65535) {
		show(v, shown, sizeof(shown));
		return seterr(d, "%s: %s is not a port", path, shown);
	}
	*out = (int)x;
	return 1;
}

/* A timeout in ms: 0 (or absent) means the default, else 1..MAX_TIMEOUT_MS. */
static int
get_timeout(struct dctx *d, const json_t *v, const char *path, int *out, int dflt)
{
	char shown[96];
	long long x;
	int rc;

	if ((rc = get_int(d, v, path, &x)) != 1) {
		if (rc == -1) {
			show(v, shown, sizeof(shown));
			return seterr(d, "%s: %s is not a timeout in milliseconds", path, shown);
		}
		*out = dflt;
		return 0;
	}
	if (x < 0 || x > MAX_TIMEOUT_MS) {
		show(v, shown, sizeof(shown));
		return seterr(d, "%s: %s is out of range (0..%lld ms)", path, shown, MAX_TIMEOUT_MS);
	}
	*out = x == 0 ? dflt : (int)x;
	return 1;
}

/* A string (null or absent -> 0). -1 for another type. */
static int
get_str(struct dctx *d, const json_t *v, const char *path, const char **out)
{
	char shown[96];

	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_string(v)) {
		show(v, shown, sizeof(shown));
		return seterr(d, "%s: %s is not a string", path, shown);
	}
	*out = json_string_value(v);
	return 1;
}

/* How many of the n first characters of s are ASCII letters, digits or one of punct, counted from the start. */
static size_t
span_alnum(const char *s, size_t n, const char *punct)
{
	size_t i;

	for (i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    (c != '\0' && strchr(punct, c) != NULL)))
			break;
	}
	return i;
}

/* Consul names (service, namespace, datacenter): [A-Za-z0-9._-], 1..MAX_NAME. */
static int
check_name(struct dctx *d, const char *s, const char *path)
{
	size_t n = strlen(s);
	char shown[96];

	if (n >= 1 && n <= MAX_NAME && span_alnum(s, n, "._-") == n)
		return 0;
	show_cstr(s, shown, sizeof(shown));
	return seterr(d, "%s: %s is not a valid name (letters, digits, '.', '_', '-')", path, shown);
}

/* An IP literal or a host name: what HAProxy can bind or connect to, nothing that could add keywords. */
static int
check_host(struct dctx *d, const char *s, const char *path)
{
	unsigned char addr[16];
	size_t n = strlen(s);

	if (n >= 1 && n < 64 && inet_pton(AF_INET6, s, addr) == 1)
		return 0;
	if (n >= 1 && n <= 253 && span_alnum(s, n, ".-") == n)
		return 0;
	return seterr(d, "%s: \"%.64s\" is not an IP address or host name", path, s);
}

static int
dupstr(struct dctx *d, char **dst, const char *s)
{
	if ((*dst = strdup(s)) == NULL)
		return seterr(d, "out of memory");
	return 0;
}

/*
 * "host:port", "[v6]:port" or ":port" (empty host: 127.0.0.1, as Go dials it locally).
 */
static int
parse_hostport(struct dctx *d, const char *s, const char *path, char **host, int *port)
{
	const char *colon, *h, *p;
	size_t hlen;
	char hbuf[256], shown[96];
	json_t *pv;
	int rc;

	if (s[0] == '[') {
		const char *rb = strchr(s, ']');

		if (rb == NULL || rb[1] != ':')
			goto bad;
		h = s + 1;
		hlen = (size_t)(rb - h);
		p = rb + 2;
		if (hlen == 0 || memchr(h, ':', hlen) == NULL)
			goto bad;
	} else {
		if ((colon = strrchr(s, ':')) == NULL)
			goto bad;
		h = s;
		hlen = (size_t)(colon - s);
		p = colon + 1;
		if (memchr(h, ':', hlen) != NULL)
			goto bad;	/* an IPv6 address needs brackets */
	}
	if (hlen >= sizeof(hbuf))
		goto bad;
	memcpy(hbuf, h, hlen);
	hbuf[hlen] = '\0';
	if (hlen == 0)
		snprintf(hbuf, sizeof(hbuf), "%s", DEFAULT_LOCAL_HOST);
	if (check_host(d, hbuf, path) == -1)
		return -1;
	if ((pv = json_string(p)) == NULL)
		return seterr(d, "out of memory");
	rc = get_port(d, pv, path, port);
	json_decref(pv);
	if (rc != 1)
		goto bad;
	return dupstr(d, host, hbuf);
bad:
	show_cstr(s, shown, sizeof(shown));
	return seterr(d, "%s: %s is not host:port", path, shown);
}

/* Values that are just zero or empty: later Consul versions send such fields unset; no warning for those. */
static int
is_empty_value(const json_t *v)
{
	return json_is_null(v) || json_is_false(v) ||
	    (json_is_string(v) && json_string_length(v) == 0) ||
	    (json_is_integer(v) && json_integer_value(v) == 0) ||
	    (json_is_object(v) && json_object_size(v) == 0) ||
	    (json_is_array(v) && json_array_size(v) == 0);
}

static int
in_list(const char *key, const char *const *list)
{
	for (; *list != NULL; list++)
		if (strcmp(key, *list) == 0)
			return 1;
	return 0;
}

/* One warning per key of obj that is not in known (and not an empty value in quiet). */
static void
warn_unknown(struct dctx *d, const json_t *obj, const char *path, const char *const *known,
    const char *const *quiet)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)(uintptr_t)obj, key, v) {
		if (in_list(key, known))
			continue;
		if (quiet != NULL && in_list(key, quiet) && is_empty_value(v))
			continue;
		warnf(d, "%s.%.64s: unknown key, ignored", path, key);
	}
}

/* ---- upstreams ---- */

enum ushape {
	U_SNAKE,	/* 1.2 Config.upstreams */
	U_PASCAL,	/* 1.3+ Upstreams */
};

static void
upstream_free(struct upstream_cfg *u)
{
	free(u->dest_name);
	free(u->dest_namespace);
	free(u->datacenter);
	free(u->local_bind_address);
	memset(u, 0, sizeof(*u));
}

static int
decode_upstream(struct dctx *d, const json_t *o, enum ushape shape, const char *path, struct upstream_cfg *u)
{
	static const char *const snake[] = { "destination_type", "destination_name", "destination_namespace",
	    "destination_datacenter", "local_bind_address", "local_bind_port", "connect_timeout_ms", NULL };
	static const char *const pascal[] = { "DestinationType", "DestinationName", "DestinationNamespace",
	    "Datacenter", "LocalBindAddress", "LocalBindPort", "Config", NULL };
	static const char *const pascal_quiet[] = { "MeshGateway", "LocalBindSocketPath", "LocalBindSocketMode",
	    "CentrallyConfigured", "DestinationPartition", "DestinationPeer", NULL };
	static const char *const ucfg_known[] = { "connect_timeout_ms", NULL };
	const char *const *keys = shape == U_SNAKE ? snake : pascal;
	const char *type = NULL, *name = NULL, *ns = NULL, *dc = NULL, *addr = NULL;
	char p[160];
	json_t *cfg;
	int rc;

	memset(u, 0, sizeof(*u));
	if (!json_is_object(o))
		return seterr(d, "%s: not an object", path);
	warn_unknown(d, o, path, keys, shape == U_PASCAL ? pascal_quiet : NULL);

	snprintf(p, sizeof(p), "%s.%s", path, keys[0]);
	if (get_str(d, json_object_get(o, keys[0]), p, &type) == -1)
		return -1;
	if (type == NULL || type[0] == '\0' || strcmp(type, "service") == 0)
		u->dest_type = DEST_SERVICE;
	else if (strcmp(type, "prepared_query") == 0)
		u->dest_type = DEST_PREPARED_QUERY;
	else
		return seterr(d, "%s: \"%.64s\" is not a destination type (service, prepared_query)", p, type);

	snprintf(p, sizeof(p), "%s.%s", path, keys[1]);
	if ((rc = get_str(d, json_object_get(o, keys[1]), p, &name)) == -1)
		return -1;
	if (rc == 0 || name[0] == '\0')
		return seterr(d, "%s: missing", p);
	if (check_name(d, name, p) == -1)
		return -1;

	snprintf(p, sizeof(p), "%s.%s", path, keys[2]);
	if (get_str(d, json_object_get(o, keys[2]), p, &ns) == -1)
		return -1;
	if (ns == NULL || ns[0] == '\0')
		ns = "default";
	if (check_name(d, ns, p) == -1)
		return -1;

	snprintf(p, sizeof(p), "%s.%s", path, keys[3]);
	if (get_str(d, json_object_get(o, keys[3]), p, &dc) == -1)
		return -1;
	if (dc == NULL)
		dc = "";
	if (dc[0] != '\0' && check_name(d, dc, p) == -1)
		return -1;

	snprintf(p, sizeof(p), "%s.%s", path, keys[4]);
	if (get_str(d, json_object_get(o, keys[4]), p, &addr) == -1)
		return -1;
	if (addr == NULL || addr[0] == '\0')
		addr = DEFAULT_LOCAL_HOST;
	if (check_host(d, addr, p) == -1)
		return -1;

	snprintf(p, sizeof(p), "%s.%s", path, keys[5]);
	if ((rc = get_port(d, json_object_get(o, keys[5]), p, &u->local_bind_port)) == -1)
		return -1;
	if (rc == 0)
		return seterr(d, "%s: missing", p);

	u->connect_timeout_ms = DEFAULT_UPSTREAM_CONNECT_MS;
	if (shape == U_SNAKE) {
		snprintf(p, sizeof(p), "%s.connect_timeout_ms", path);
		if (get_timeout(d, json_object_get(o, "connect_timeout_ms"), p, &u->connect_timeout_ms,
		    DEFAULT_UPSTREAM_CONNECT_MS) == -1)
			return -1;
	} else if ((cfg = json_object_get(o, "Config")) != NULL && !json_is_null(cfg)) {
		snprintf(p, sizeof(p), "%s.Config", path);
		if (!json_is_object(cfg))
			return seterr(d, "%s: not an object", p);
		warn_unknown(d, cfg, p, ucfg_known, NULL);
		snprintf(p, sizeof(p), "%s.Config.connect_timeout_ms", path);
		if (get_timeout(d, json_object_get(cfg, "connect_timeout_ms"), p, &u->connect_timeout_ms,
		    DEFAULT_UPSTREAM_CONNECT_MS) == -1)
			return -1;
	}
	if (dupstr(d, &u->dest_name, name) == -1 || dupstr(d, &u->dest_namespace, ns) == -1 ||
	    dupstr(d, &u->datacenter, dc) == -1 || dupstr(d, &u->local_bind_address, addr) == -1) {
		upstream_free(u);
		return -1;
	}
	return 0;
}

static int
upstream_same(const struct upstream_cfg *a, const struct upstream_cfg *b)
{
	return a->dest_type == b->dest_type && strcmp(a->dest_name, b->dest_name) == 0 &&
	    strcmp(a->dest_namespace, b->dest_namespace) == 0 && strcmp(a->datacenter, b->datacenter) == 0 &&
	    strcmp(a->local_bind_address, b->local_bind_address) == 0 &&
	    a->local_bind_port == b->local_bind_port && a->connect_timeout_ms == b->connect_timeout_ms;
}

static int
is_wildcard(const char *a)
{
	return strcmp(a, "0.0.0.0") == 0 || strcmp(a, "::") == 0 || strcmp(a, "") == 0;
}

/* Two listeners on one port collide when their addresses are equal or either is a wildcard. */
static int
listeners_overlap(const char *a, int aport, const char *b, int bport)
{
	return aport == bport && (strcmp(a, b) == 0 || is_wildcard(a) || is_wildcard(b));
}

/*
 * Appends the upstreams of array arr to c. An exact duplicate of one already there (an agent that
 * reports legacy Config.upstreams beside Upstreams) is dropped; two upstreams on one listen address:port
 * are an error.
 */
static int
decode_upstreams(struct dctx *d, const json_t *arr, enum ushape shape, const char *path, struct proxy_cfg *c)
{
	struct upstream_cfg u, *nu;
	char p[128];
	size_t i, j;

	if (arr == NULL || json_is_null(arr))
		return 0;
	if (!json_is_array(arr))
		return seterr(d, "%s: not an array", path);
	if (c->nupstreams + json_array_size(arr) > MAX_UPSTREAMS)
		return seterr(d, "%s: more than %d upstreams", path, MAX_UPSTREAMS);
	for (i = 0; i < json_array_size(arr); i++) {
		int dup = 0;

		snprintf(p, sizeof(p), "%s[%zu]", path, i);
		if (decode_upstream(d, json_array_get(arr, i), shape, p, &u) == -1)
			return -1;
		for (j = 0; j < c->nupstreams; j++) {
			if (upstream_same(&c->upstreams[j], &u)) {
				dup = 1;
				break;
			}
			if (listeners_overlap(c->upstreams[j].local_bind_address, c->upstreams[j].local_bind_port,
			    u.local_bind_address, u.local_bind_port)) {
				seterr(d, "%s: listen address %s:%d is already used by the upstream %s", p,
				    u.local_bind_address, u.local_bind_port, c->upstreams[j].dest_name);
				upstream_free(&u);
				return -1;
			}
		}
		if (dup) {
			upstream_free(&u);
			continue;
		}
		if ((nu = realloc(c->upstreams, (c->nupstreams + 1) * sizeof(*nu))) == NULL) {
			upstream_free(&u);
			return seterr(d, "out of memory");
		}
		c->upstreams = nu;
		c->upstreams[c->nupstreams++] = u;
	}
	return 0;
}

/* ---- the inbound side ---- */

enum cmode {
	C_MANAGED,
	C_UNMANAGED,
};

/* Config keys of the public listener. For an unmanaged proxy the bind and local service keys are ignored. */
static int
decode_config(struct dctx *d, const json_t *cfg, const char *path, enum cmode mode, struct proxy_cfg *c)
{
	static const char *const known[] = { "bind_address", "bind_port", "local_service_address",
	    "local_connect_timeout_ms", "handshake_timeout_ms", "protocol", "upstreams", NULL };
	const char *s = NULL, *proto = NULL;
	char p[128];
	int rc;

	if (cfg == NULL || json_is_null(cfg))
		return 0;
	if (!json_is_object(cfg))
		return seterr(d, "%s: not an object", path);
	warn_unknown(d, cfg, path, known, NULL);

	if (mode == C_MANAGED) {
		snprintf(p, sizeof(p), "%s.bind_address", path);
		if ((rc = get_str(d, json_object_get(cfg, "bind_address"), p, &s)) == -1)
			return -1;
		if (rc == 1 && s[0] != '\0') {
			if (check_host(d, s, p) == -1)
				return -1;
			free(c->bind_address);
			if (dupstr(d, &c->bind_address, s) == -1)
				return -1;
		}
		snprintf(p, sizeof(p), "%s.bind_port", path);
		if ((rc = get_port(d, json_object_get(cfg, "bind_port"), p, &c->bind_port)) == -1)
			return -1;
		if (rc == 0)
			return seterr(d, "%s: missing", p);
		snprintf(p, sizeof(p), "%s.local_service_address", path);
		if ((rc = get_str(d, json_object_get(cfg, "local_service_address"), p, &s)) == -1)
			return -1;
		if (rc == 0 || s[0] == '\0')
			return seterr(d, "%s: missing", p);
		free(c->local_service_host);
		c->local_service_host = NULL;
		if (parse_hostport(d, s, p, &c->local_service_host, &c->local_service_port) == -1)
			return -1;
	} else {
		static const char *const ignored[] = { "bind_address", "bind_port", "local_service_address" };
		size_t i;

		for (i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
			if (json_object_get(cfg, ignored[i]) != NULL)
				warnf(d, "%s.%s: ignored for an unmanaged proxy (its registration's Address, Port "
				    "and Proxy.LocalService* are used)", path, ignored[i]);
	}

	snprintf(p, sizeof(p), "%s.local_connect_timeout_ms", path);
	if (get_timeout(d, json_object_get(cfg, "local_connect_timeout_ms"), p, &c->local_connect_timeout_ms,
	    DEFAULT_LOCAL_CONNECT_MS) == -1)
		return -1;
	snprintf(p, sizeof(p), "%s.handshake_timeout_ms", path);
	if (get_timeout(d, json_object_get(cfg, "handshake_timeout_ms"), p, &c->handshake_timeout_ms,
	    DEFAULT_HANDSHAKE_MS) == -1)
		return -1;
	snprintf(p, sizeof(p), "%s.protocol", path);
	if ((rc = get_str(d, json_object_get(cfg, "protocol"), p, &proto)) == -1)
		return -1;
	if (rc == 1 && proto[0] != '\0') {
		if (strcasecmp(proto, "tcp") == 0)
			c->protocol_http = false;
		else if (strcasecmp(proto, "http") == 0)
			c->protocol_http = true;
		else
			return seterr(d, "%s: \"%.64s\" is not a protocol (tcp, http)", p, proto);
	}
	if (mode == C_MANAGED) {
		snprintf(p, sizeof(p), "%s.upstreams", path);
		if (decode_upstreams(d, json_object_get(cfg, "upstreams"), U_SNAKE, p, c) == -1)
			return -1;
	} else if (json_object_get(cfg, "upstreams") != NULL &&
	    !is_empty_value(json_object_get(cfg, "upstreams"))) {
		warnf(d, "%s.upstreams: ignored for an unmanaged proxy (Proxy.Upstreams is used)", path);
	}
	return 0;
}

static void
cfg_init(struct proxy_cfg *c)
{
	memset(c, 0, sizeof(*c));
	c->local_connect_timeout_ms = DEFAULT_LOCAL_CONNECT_MS;
	c->handshake_timeout_ms = DEFAULT_HANDSHAKE_MS;
}

/* Fills the string defaults that are still NULL; refuses an upstream listening where the public listener does. */
static int
cfg_finish(struct dctx *d, struct proxy_cfg *c)
{
	size_t i;

	if (c->content_hash == NULL && dupstr(d, &c->content_hash, "") == -1)
		return -1;
	if (c->bind_address == NULL && dupstr(d, &c->bind_address, DEFAULT_BIND_ADDRESS) == -1)
		return -1;
	if (c->local_service_host == NULL && dupstr(d, &c->local_service_host, DEFAULT_LOCAL_HOST) == -1)
		return -1;
	if (c->target_service_id == NULL && dupstr(d, &c->target_service_id, "") == -1)
		return -1;
	for (i = 0; i < c->nupstreams; i++)
		if (listeners_overlap(c->upstreams[i].local_bind_address, c->upstreams[i].local_bind_port,
		    c->bind_address, c->bind_port))
			return seterr(d, "upstream %s: listen address %s:%d collides with the public listener %s:%d",
			    c->upstreams[i].dest_name, c->upstreams[i].local_bind_address,
			    c->upstreams[i].local_bind_port, c->bind_address, c->bind_port);
	return 0;
}

static json_t *
load(struct dctx *d, const char *json, size_t len, const char *what)
{
	json_error_t jerr;
	json_t *root;

	if (json == NULL) {
		seterr(d, "%s: no JSON", what);
		return NULL;
	}
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		seterr(d, "%s: invalid JSON at %d:%d: %s", what, jerr.line, jerr.column, jerr.text);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		seterr(d, "%s: not a JSON object", what);
		return NULL;
	}
	return root;
}

/* A required non-empty string field copied into *dst (a name when check is set). */
static int
req_str(struct dctx *d, const json_t *o, const char *key, const char *path, char **dst, int check)
{
	const char *s = NULL;
	int rc;

	if ((rc = get_str(d, json_object_get(o, key), path, &s)) == -1)
		return -1;
	if (rc == 0 || s[0] == '\0')
		return seterr(d, "%s: missing", path);
	if (check && check_name(d, s, path) == -1)
		return -1;
	return dupstr(d, dst, s);
}

/* An optional string field copied into *dst ("" when absent). */
static int
opt_str(struct dctx *d, const json_t *o, const char *key, const char *path, char **dst)
{
	const char *s = "";

	if (get_str(d, json_object_get(o, key), path, &s) == -1)
		return -1;
	return dupstr(d, dst, s);
}

int
proxycfg_from_managed(const char *json, size_t len, struct proxy_cfg *out, struct proxycfg_warnings *warn,
    char *err, size_t errlen)
{
	struct dctx d = { warn, err, errlen };
	json_t *root;

	cfg_init(out);
	if ((root = load(&d, json, len, "proxy config")) == NULL)
		return -1;
	if (req_str(&d, root, "ProxyServiceID", "ProxyServiceID", &out->proxy_id, 0) == -1 ||
	    opt_str(&d, root, "TargetServiceID", "TargetServiceID", &out->target_service_id) == -1 ||
	    req_str(&d, root, "TargetServiceName", "TargetServiceName", &out->target_service_name, 1) == -1 ||
	    opt_str(&d, root, "ContentHash", "ContentHash", &out->content_hash) == -1)
		goto fail;
	if (json_object_get(root, "Config") == NULL || json_is_null(json_object_get(root, "Config"))) {
		seterr(&d, "Config: missing");
		goto fail;
	}
	/* 1.3+ Upstreams first: they are the current form; a legacy exact duplicate is then dropped. */
	if (decode_upstreams(&d, json_object_get(root, "Upstreams"), U_PASCAL, "Upstreams", out) == -1)
		goto fail;
	if (decode_config(&d, json_object_get(root, "Config"), "Config", C_MANAGED, out) == -1)
		goto fail;
	if (cfg_finish(&d, out) == -1)
		goto fail;
	json_decref(root);
	return 0;
fail:
	json_decref(root);
	proxycfg_free(out);
	return -1;
}

/* The string field key of a service object (NULL when absent or not a string). */
static const char *
svc_str(const json_t *svc, const char *key)
{
	const json_t *v = json_object_get(svc, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* An AgentService's name: "Service" in agent answers, "Name" in registration payloads. */
static const char *
svc_name(const json_t *svc)
{
	const char *s = svc_str(svc, "Service");

	return s != NULL ? s : svc_str(svc, "Name");
}

static int
is_proxy(const json_t *svc)
{
	const char *k = svc_str(svc, "Kind");

	return k != NULL && strcmp(k, "connect-proxy") == 0;
}

/*
 * In /v1/agent/services, the non-proxy service that a proxy fronts: by ID when id is set, else the one
 * service named name. NULL with err when none or (by name) several.
 */
static const json_t *
find_destination(struct dctx *d, const json_t *services, const char *id, const char *name)
{
	const json_t *found = NULL, *svc;
	const char *key, *sid;
	int n = 0;

	json_object_foreach((json_t *)(uintptr_t)services, key, svc) {
		if (!json_is_object(svc) || is_proxy(svc))
			continue;
		sid = svc_str(svc, "ID");
		if (sid == NULL)
			sid = key;
		if (id != NULL && id[0] != '\0') {
			if (strcmp(sid, id) == 0) {
				found = svc;
				n = 1;
				break;
			}
		} else if (svc_name(svc) != NULL && strcmp(svc_name(svc), name) == 0) {
			found = svc;
			n++;
		}
	}
	if (n == 0) {
		seterr(d, "services: no service %s \"%.64s\" registered on this agent",
		    id != NULL && id[0] != '\0' ? "with ID" : "named", id != NULL && id[0] != '\0' ? id : name);
		return NULL;
	}
	if (n > 1) {
		seterr(d, "services: %d services named \"%.64s\" on this agent: the destination is ambiguous",
		    n, name);
		return NULL;
	}
	return found;
}

int
proxycfg_from_service(const char *json, size_t len, const char *services_json, size_t services_len,
    struct proxy_cfg *out, struct proxycfg_warnings *warn, char *err, size_t errlen)
{
	struct dctx d = { warn, err, errlen };
	json_t *root, *services = NULL, *proxy;
	const json_t *dest, *lpv;
	const char *s = NULL, *kind = NULL;
	int rc, lport = 0;

	cfg_init(out);
	if ((root = load(&d, json, len, "service")) == NULL)
		return -1;
	if (get_str(&d, json_object_get(root, "Kind"), "Kind", &kind) == -1)
		goto fail;
	if (kind == NULL || strcmp(kind, "connect-proxy") != 0) {
		seterr(&d, "Kind: the service is not a connect-proxy");
		goto fail;
	}
	if (req_str(&d, root, "ID", "ID", &out->proxy_id, 0) == -1 ||
	    opt_str(&d, root, "ContentHash", "ContentHash", &out->content_hash) == -1)
		goto fail;
	if ((rc = get_port(&d, json_object_get(root, "Port"), "Port", &out->bind_port)) == -1)
		goto fail;
	if (rc == 0) {
		seterr(&d, "Port: missing");
		goto fail;
	}
	if (get_str(&d, json_object_get(root, "Address"), "Address", &s) == -1)
		goto fail;
	if (s != NULL && s[0] != '\0') {
		if (check_host(&d, s, "Address") == -1 || dupstr(&d, &out->bind_address, s) == -1)
			goto fail;
	}
	if (services_json != NULL && (services = load(&d, services_json, services_len, "services")) == NULL)
		goto fail;

	proxy = json_object_get(root, "Proxy");
	if (proxy != NULL && !json_is_null(proxy)) {
		/* 1.3+ */
		static const char *const known[] = { "DestinationServiceName", "DestinationServiceID",
		    "LocalServiceAddress", "LocalServicePort", "Config", "Upstreams", NULL };
		static const char *const quiet[] = { "MeshGateway", "Expose", "Mode", "TransparentProxy",
		    "LocalServiceSocketPath", NULL };

		if (!json_is_object(proxy)) {
			seterr(&d, "Proxy: not an object");
			goto fail;
		}
		warn_unknown(&d, proxy, "Proxy", known, quiet);
		if (req_str(&d, proxy, "DestinationServiceName", "Proxy.DestinationServiceName",
		    &out->target_service_name, 1) == -1 ||
		    opt_str(&d, proxy, "DestinationServiceID", "Proxy.DestinationServiceID",
		    &out->target_service_id) == -1)
			goto fail;
		s = NULL;
		if (get_str(&d, json_object_get(proxy, "LocalServiceAddress"), "Proxy.LocalServiceAddress",
		    &s) == -1)
			goto fail;
		if (s != NULL && s[0] != '\0') {
			if (check_host(&d, s, "Proxy.LocalServiceAddress") == -1 ||
			    dupstr(&d, &out->local_service_host, s) == -1)
				goto fail;
		}
		/* Go encodes an unset LocalServicePort as 0: that is "absent", not a bad port. */
		lpv = json_object_get(proxy, "LocalServicePort");
		if (json_is_integer(lpv) && json_integer_value(lpv) == 0)
			lpv = NULL;
		if ((rc = get_port(&d, lpv, "Proxy.LocalServicePort", &lport)) == -1)
			goto fail;
		if (decode_config(&d, json_object_get(proxy, "Config"), "Proxy.Config", C_UNMANAGED, out) == -1 ||
		    decode_upstreams(&d, json_object_get(proxy, "Upstreams"), U_PASCAL, "Proxy.Upstreams",
		    out) == -1)
			goto fail;
		if (rc == 0) {
			/* No LocalServicePort: the destination service's own port, as registered. */
			if (services == NULL) {
				seterr(&d, "Proxy.LocalServicePort: missing");
				goto fail;
			}
			if ((dest = find_destination(&d, services, out->target_service_id,
			    out->target_service_name)) == NULL)
				goto fail;
			if ((rc = get_port(&d, json_object_get(dest, "Port"), "services: destination Port",
			    &lport)) == -1)
				goto fail;
			if (rc == 0) {
				seterr(&d, "Proxy.LocalServicePort: missing, and the destination service has no Port");
				goto fail;
			}
		}
	} else {
		/* 1.2: ProxyDestination names the service; its port comes from the agent's services. */
		if (req_str(&d, root, "ProxyDestination", "ProxyDestination", &out->target_service_name, 1) == -1)
			goto fail;
		if (services == NULL) {
			seterr(&d, "ProxyDestination: the agent's services are needed to find the port of \"%.64s\"",
			    out->target_service_name);
			goto fail;
		}
		if ((dest = find_destination(&d, services, NULL, out->target_service_name)) == NULL)
			goto fail;
		s = svc_str(dest, "ID");
		if (dupstr(&d, &out->target_service_id, s != NULL ? s : out->target_service_name) == -1)
			goto fail;
		if ((rc = get_port(&d, json_object_get(dest, "Port"), "services: destination Port", &lport)) == -1)
			goto fail;
		if (rc == 0) {
			seterr(&d, "services: the service \"%.64s\" has no Port", out->target_service_name);
			goto fail;
		}
	}
	out->local_service_port = lport;
	if (cfg_finish(&d, out) == -1)
		goto fail;
	json_decref(services);
	json_decref(root);
	return 0;
fail:
	json_decref(services);
	json_decref(root);
	proxycfg_free(out);
	return -1;
}

int
proxycfg_find_sidecar(const char *services_json, size_t len, const char *service_id, char **proxy_id,
    char *err, size_t errlen)
{
	struct dctx d = { NULL, err, errlen };
	const json_t *svc, *target, *proxy;
	const char *key, *target_name = NULL, *match = NULL, *pid;
	char others[256] = "";
	json_t *root;
	size_t olen = 0;
	int n = 0;

	*proxy_id = NULL;
	if (service_id == NULL || service_id[0] == '\0')
		return seterr(&d, "no service ID given");
	if ((root = load(&d, services_json, len, "services")) == NULL)
		return -1;
	target = json_object_get(root, service_id);
	if (json_is_object(target) && !is_proxy(target))
		target_name = svc_name(target);
	json_object_foreach(root, key, svc) {
		const char *did = NULL, *dname = NULL;
		int hit = 0;

		if (!json_is_object(svc) || !is_proxy(svc))
			continue;
		proxy = json_object_get(svc, "Proxy");
		if (json_is_object(proxy)) {
			did = svc_str(proxy, "DestinationServiceID");
			dname = svc_str(proxy, "DestinationServiceName");
		}
		if (did != NULL && did[0] != '\0')
			hit = strcmp(did, service_id) == 0;
		else {
			if (dname == NULL || dname[0] == '\0')
				dname = svc_str(svc, "ProxyDestination");
			/* 1.2: ProxyDestination is a service name: that of service_id, or service_id itself. */
			hit = dname != NULL && strcmp(dname, target_name != NULL ? target_name : service_id) == 0;
		}
		if (!hit)
			continue;
		pid = svc_str(svc, "ID");
		if (pid == NULL)
			pid = key;
		n++;
		if (n == 1)
			match = pid;
		if (olen < sizeof(others) - 1) {
			int w = snprintf(others + olen, sizeof(others) - olen, "%s%s", olen ? ", " : "", pid);

			if (w > 0)
				olen += (size_t)w;
			if (olen >= sizeof(others))
				olen = sizeof(others) - 1;
		}
	}
	if (n == 0) {
		seterr(&d, "no connect-proxy registered on this agent for the service \"%.64s\"", service_id);
		json_decref(root);
		return -1;
	}
	if (n > 1) {
		seterr(&d, "%d connect-proxies registered for the service \"%.64s\" (%s): name one with -proxy-id",
		    n, service_id, others);
		json_decref(root);
		return -1;
	}
	if ((*proxy_id = strdup(match)) == NULL) {
		json_decref(root);
		return seterr(&d, "out of memory");
	}
	json_decref(root);
	return 0;
}

/* ---- comparison, copy, free ---- */

static int
streq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

bool
proxycfg_equal(const struct proxy_cfg *a, const struct proxy_cfg *b)
{
	size_t i;

	if (!streq(a->proxy_id, b->proxy_id) || !streq(a->target_service_id, b->target_service_id) ||
	    !streq(a->target_service_name, b->target_service_name) || !streq(a->content_hash, b->content_hash) ||
	    !streq(a->bind_address, b->bind_address) || a->bind_port != b->bind_port ||
	    !streq(a->local_service_host, b->local_service_host) ||
	    a->local_service_port != b->local_service_port ||
	    a->local_connect_timeout_ms != b->local_connect_timeout_ms ||
	    a->handshake_timeout_ms != b->handshake_timeout_ms || a->protocol_http != b->protocol_http ||
	    a->nupstreams != b->nupstreams)
		return false;
	for (i = 0; i < a->nupstreams; i++)
		if (!upstream_same(&a->upstreams[i], &b->upstreams[i]))
			return false;
	return true;
}

bool
proxycfg_listeners_differ(const struct proxy_cfg *a, const struct proxy_cfg *b)
{
	size_t i;

	if (!streq(a->bind_address, b->bind_address) || a->bind_port != b->bind_port ||
	    a->protocol_http != b->protocol_http || a->nupstreams != b->nupstreams)
		return true;
	for (i = 0; i < a->nupstreams; i++) {
		const struct upstream_cfg *x = &a->upstreams[i], *y = &b->upstreams[i];

		if (!streq(x->local_bind_address, y->local_bind_address) || x->local_bind_port != y->local_bind_port ||
		    x->dest_type != y->dest_type || !streq(x->dest_name, y->dest_name) ||
		    !streq(x->dest_namespace, y->dest_namespace) || !streq(x->datacenter, y->datacenter))
			return true;
	}
	return false;
}

static int
copystr(char **dst, const char *src)
{
	if (src == NULL) {
		*dst = NULL;
		return 0;
	}
	return (*dst = strdup(src)) == NULL ? -1 : 0;
}

int
proxycfg_copy(struct proxy_cfg *dst, const struct proxy_cfg *src)
{
	size_t i;

	memset(dst, 0, sizeof(*dst));
	dst->bind_port = src->bind_port;
	dst->local_service_port = src->local_service_port;
	dst->local_connect_timeout_ms = src->local_connect_timeout_ms;
	dst->handshake_timeout_ms = src->handshake_timeout_ms;
	dst->protocol_http = src->protocol_http;
	if (copystr(&dst->proxy_id, src->proxy_id) == -1 ||
	    copystr(&dst->target_service_id, src->target_service_id) == -1 ||
	    copystr(&dst->target_service_name, src->target_service_name) == -1 ||
	    copystr(&dst->content_hash, src->content_hash) == -1 ||
	    copystr(&dst->bind_address, src->bind_address) == -1 ||
	    copystr(&dst->local_service_host, src->local_service_host) == -1)
		goto fail;
	if (src->nupstreams > 0) {
		if ((dst->upstreams = calloc(src->nupstreams, sizeof(*dst->upstreams))) == NULL)
			goto fail;
		for (i = 0; i < src->nupstreams; i++) {
			const struct upstream_cfg *s = &src->upstreams[i];
			struct upstream_cfg *u = &dst->upstreams[i];

			dst->nupstreams = i + 1;
			u->dest_type = s->dest_type;
			u->local_bind_port = s->local_bind_port;
			u->connect_timeout_ms = s->connect_timeout_ms;
			if (copystr(&u->dest_name, s->dest_name) == -1 ||
			    copystr(&u->dest_namespace, s->dest_namespace) == -1 ||
			    copystr(&u->datacenter, s->datacenter) == -1 ||
			    copystr(&u->local_bind_address, s->local_bind_address) == -1)
				goto fail;
		}
	}
	return 0;
fail:
	proxycfg_free(dst);
	return -1;
}

void
proxycfg_free(struct proxy_cfg *c)
{
	size_t i;

	if (c == NULL)
		return;
	free(c->proxy_id);
	free(c->target_service_id);
	free(c->target_service_name);
	free(c->content_hash);
	free(c->bind_address);
	free(c->local_service_host);
	for (i = 0; i < c->nupstreams; i++)
		upstream_free(&c->upstreams[i]);
	free(c->upstreams);
	memset(c, 0, sizeof(*c));
}
