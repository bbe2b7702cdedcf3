/*
 * snapshot.c - see snapshot.h.
 *
 * Decoding runs in three steps, each refusing what the next could not handle safely:
 *   1. and 2. the envelope (structure walk, unpacking, magic, version, checksum): lib/snapfile.c;
 *   3. typed extraction into a temporary state, every field checked, moved to the caller only when all
 *      of it is valid.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "atomicfile.h"
#include "snapfile.h"
#include "snapshot.h"

#define TOP_ITEMS	6
#define PORT_MAX	65535
#define MS_MAX		INT32_MAX		/* timeouts are ints in struct proxy_cfg */
#define TIME_MAX	((int64_t)1 << 40)	/* far beyond any real Unix time, far from overflow */
/* Field paths for error texts ("config.upstreams[2].local_bind_port") into the local w: cut if long. */
#define WPATH(...)	wpath(w, sizeof(w), __VA_ARGS__)

static void wpath(char *w, size_t wl, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
wpath(char *w, size_t wl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(w, wl, fmt, ap);
	va_end(ap);
}

/* ---- step 3: typed extraction ---------------------------------------------------------------- */

static bool
mp_str_is(const msgpack_object *o, const char *s)
{
	size_t n = strlen(s);

	return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && memcmp(o->via.str.ptr, s, n) == 0;
}

static const char *
mp_type_name(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: return "nil";
	case MSGPACK_OBJECT_BOOLEAN: return "bool";
	case MSGPACK_OBJECT_POSITIVE_INTEGER: case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "integer";
	case MSGPACK_OBJECT_FLOAT32: case MSGPACK_OBJECT_FLOAT64: return "float";
	case MSGPACK_OBJECT_STR: return "string";
	case MSGPACK_OBJECT_ARRAY: return "array";
	case MSGPACK_OBJECT_MAP: return "map";
	case MSGPACK_OBJECT_BIN: return "bin";
	default: return "ext";
	}
}

/* A string of at most SNAPSHOT_STR_MAX bytes without control characters, copied; nil -> NULL if allowed. */
static int
get_str(const msgpack_object *o, const char *what, bool nullable, char **out, char *err, size_t errlen)
{
	uint32_t i;

	*out = NULL;
	if (o->type == MSGPACK_OBJECT_NIL && nullable)
		return 0;
	if (o->type != MSGPACK_OBJECT_STR) {
		snprintf(err, errlen, "%s: expected a string, got %s", what, mp_type_name(o));
		return -1;
	}
	if (o->via.str.size > SNAPSHOT_STR_MAX) {
		snprintf(err, errlen, "%s: string of %u bytes exceeds %u", what, o->via.str.size,
		    SNAPSHOT_STR_MAX);
		return -1;
	}
	for (i = 0; i < o->via.str.size; i++) {
		unsigned char ch = (unsigned char)o->via.str.ptr[i];

		if (ch < 0x20 || ch == 0x7f) {
			snprintf(err, errlen, "%s: control character 0x%02x at byte %u", what, ch, i);
			return -1;
		}
	}
	if ((*out = malloc((size_t)o->via.str.size + 1)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", what);
		return -1;
	}
	memcpy(*out, o->via.str.ptr, o->via.str.size);
	(*out)[o->via.str.size] = '\0';
	return 0;
}

static int
get_int(const msgpack_object *o, const char *what, int64_t lo, int64_t hi, int64_t *out, char *err,
    size_t errlen)
{
	int64_t v;

	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		if (o->via.u64 > (uint64_t)INT64_MAX)
			goto range;
		v = (int64_t)o->via.u64;
	} else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		v = o->via.i64;
	} else {
		snprintf(err, errlen, "%s: expected an integer, got %s", what, mp_type_name(o));
		return -1;
	}
	if (v < lo || v > hi)
		goto range;
	*out = v;
	return 0;
range:
	snprintf(err, errlen, "%s: out of range %lld..%lld", what, (long long)lo, (long long)hi);
	return -1;
}

static int
get_int32(const msgpack_object *o, const char *what, int lo, int hi, int *out, char *err, size_t errlen)
{
	int64_t v;

	if (get_int(o, what, lo, hi, &v, err, errlen) == -1)
		return -1;
	*out = (int)v;
	return 0;
}

static int
get_bool(const msgpack_object *o, const char *what, bool *out, char *err, size_t errlen)
{
	if (o->type != MSGPACK_OBJECT_BOOLEAN) {
		snprintf(err, errlen, "%s: expected a bool, got %s", what, mp_type_name(o));
		return -1;
	}
	*out = o->via.boolean;
	return 0;
}

static int
get_sha256(const msgpack_object *o, const char *what, uint8_t out[32], char *err, size_t errlen)
{
	if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != 32) {
		snprintf(err, errlen, "%s: expected 32 bytes of SHA-256", what);
		return -1;
	}
	memcpy(out, o->via.bin.ptr, 32);
	return 0;
}

struct mfield {
	const char		*key;
	const msgpack_object	*v;	/* filled by get_map */
};

/* A map whose keys are exactly the nf keys of f, each once. */
static int
get_map(const msgpack_object *o, const char *what, struct mfield *f, size_t nf, char *err, size_t errlen)
{
	uint32_t i;
	size_t k;

	if (o->type != MSGPACK_OBJECT_MAP) {
		snprintf(err, errlen, "%s: expected a map, got %s", what, mp_type_name(o));
		return -1;
	}
	for (k = 0; k < nf; k++)
		f[k].v = NULL;
	for (i = 0; i < o->via.map.size; i++) {
		const msgpack_object_kv *kv = &o->via.map.ptr[i];

		for (k = 0; k < nf; k++)
			if (mp_str_is(&kv->key, f[k].key))
				break;
		if (k == nf) {
			snprintf(err, errlen, "%s: unknown key", what);
			return -1;
		}
		if (f[k].v != NULL) {
			snprintf(err, errlen, "%s: key %s repeated", what, f[k].key);
			return -1;
		}
		f[k].v = &kv->val;
	}
	for (k = 0; k < nf; k++)
		if (f[k].v == NULL) {
			snprintf(err, errlen, "%s: key %s missing", what, f[k].key);
			return -1;
		}
	return 0;
}

static int
get_array(const msgpack_object *o, const char *what, size_t max, char *err, size_t errlen)
{
	if (o->type != MSGPACK_OBJECT_ARRAY) {
		snprintf(err, errlen, "%s: expected an array, got %s", what, mp_type_name(o));
		return -1;
	}
	if (o->via.array.size > max) {
		snprintf(err, errlen, "%s: %u entries exceed %zu", what, o->via.array.size, max);
		return -1;
	}
	return 0;
}

static bool
str_eq_null(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* ---- freeing (also of half-decoded temporaries) ---------------------------------------------- */

static void
cfg_clear(struct proxy_cfg *c)
{
	size_t i;

	free(c->proxy_id);
	free(c->target_service_id);
	free(c->target_service_name);
	free(c->content_hash);
	free(c->bind_address);
	free(c->local_service_host);
	for (i = 0; i < c->nupstreams && c->upstreams != NULL; i++) {
		struct upstream_cfg *u = &c->upstreams[i];

		free(u->dest_name);
		free(u->dest_namespace);
		free(u->datacenter);
		free(u->local_bind_address);
	}
	free(c->upstreams);
	memset(c, 0, sizeof(*c));
}

void
snapshot_free(struct certsync_snapshot *s)
{
	size_t i, j;

	if (s == NULL)
		return;
	free(s->proxy_id);
	cfg_clear(&s->cfg);
	free(s->leaf.path);
	free(s->ca.path);
	for (i = 0; i < s->nupstreams && s->upstreams != NULL; i++) {
		struct snapshot_upstream *u = &s->upstreams[i];

		free(u->dest_name);
		free(u->datacenter);
		free(u->service);
		for (j = 0; j < u->ninstances && u->instances != NULL; j++) {
			free(u->instances[j].addr);
			free(u->instances[j].node);
			free(u->instances[j].datacenter);
			free(u->instances[j].service_id);
		}
		free(u->instances);
	}
	free(s->upstreams);
	memset(s, 0, sizeof(*s));
}

/* ---- decoding of the state map ----------------------------------------------------------------- */

static int
dec_upstream_cfg(const msgpack_object *o, const char *what, struct upstream_cfg *u, char *err,
    size_t errlen)
{
	struct mfield f[] = {
		{ "dest_type", NULL }, { "dest_name", NULL }, { "dest_namespace", NULL },
		{ "datacenter", NULL }, { "local_bind_address", NULL }, { "local_bind_port", NULL },
		{ "connect_timeout_ms", NULL },
	};
	char w[160];

	if (get_map(o, what, f, sizeof(f) / sizeof(f[0]), err, errlen) == -1)
		return -1;
	WPATH("%s.dest_type", what);
	if (mp_str_is(f[0].v, "service"))
		u->dest_type = DEST_SERVICE;
	else if (mp_str_is(f[0].v, "prepared_query"))
		u->dest_type = DEST_PREPARED_QUERY;
	else {
		snprintf(err, errlen, "%s: expected \"service\" or \"prepared_query\"", w);
		return -1;
	}
#define STR(i, name, nullable, dst) \
	(WPATH("%s." name, what), get_str(f[i].v, w, nullable, dst, err, errlen))
#define INT(i, name, lo, hi, dst) \
	(WPATH("%s." name, what), get_int32(f[i].v, w, lo, hi, dst, err, errlen))
	if (STR(1, "dest_name", false, &u->dest_name) == -1 ||
	    STR(2, "dest_namespace", true, &u->dest_namespace) == -1 ||
	    STR(3, "datacenter", true, &u->datacenter) == -1 ||
	    STR(4, "local_bind_address", true, &u->local_bind_address) == -1 ||
	    INT(5, "local_bind_port", 1, PORT_MAX, &u->local_bind_port) == -1 ||
	    INT(6, "connect_timeout_ms", 0, MS_MAX, &u->connect_timeout_ms) == -1)
		return -1;
	return 0;
}

static int
dec_cfg(const msgpack_object *o, struct proxy_cfg *c, char *err, size_t errlen)
{
	struct mfield f[] = {
		{ "proxy_id", NULL }, { "target_service_id", NULL }, { "target_service_name", NULL },
		{ "content_hash", NULL }, { "bind_address", NULL }, { "bind_port", NULL },
		{ "local_service_host", NULL }, { "local_service_port", NULL },
		{ "local_connect_timeout_ms", NULL }, { "handshake_timeout_ms", NULL },
		{ "protocol_http", NULL }, { "upstreams", NULL },
	};
	const char *what = "config";
	const msgpack_object *ups;
	char w[160];
	uint32_t i;

	if (get_map(o, what, f, sizeof(f) / sizeof(f[0]), err, errlen) == -1)
		return -1;
	if (STR(0, "proxy_id", false, &c->proxy_id) == -1 ||
	    STR(1, "target_service_id", true, &c->target_service_id) == -1 ||
	    STR(2, "target_service_name", false, &c->target_service_name) == -1 ||
	    STR(3, "content_hash", true, &c->content_hash) == -1 ||
	    STR(4, "bind_address", true, &c->bind_address) == -1 ||
	    INT(5, "bind_port", 1, PORT_MAX, &c->bind_port) == -1 ||
	    STR(6, "local_service_host", true, &c->local_service_host) == -1 ||
	    INT(7, "local_service_port", 1, PORT_MAX, &c->local_service_port) == -1 ||
	    INT(8, "local_connect_timeout_ms", 0, MS_MAX, &c->local_connect_timeout_ms) == -1 ||
	    INT(9, "handshake_timeout_ms", 0, MS_MAX, &c->handshake_timeout_ms) == -1 ||
	    get_bool(f[10].v, "config.protocol_http", &c->protocol_http, err, errlen) == -1)
		return -1;
#undef STR
#undef INT
	ups = f[11].v;
	if (get_array(ups, "config.upstreams", SNAPSHOT_UPSTREAMS_MAX, err, errlen) == -1)
		return -1;
	if (ups->via.array.size > 0 &&
	    (c->upstreams = calloc(ups->via.array.size, sizeof(*c->upstreams))) == NULL) {
		snprintf(err, errlen, "config.upstreams: out of memory");
		return -1;
	}
	for (i = 0; i < ups->via.array.size; i++) {
		c->nupstreams = i + 1;	/* so that cfg_clear frees what was decoded so far */
		WPATH("config.upstreams[%u]", i);
		if (dec_upstream_cfg(&ups->via.array.ptr[i], w, &c->upstreams[i], err, errlen) == -1)
			return -1;
	}
	return 0;
}

static int
dec_file(const msgpack_object *o, const char *what, struct snapshot_file *sf, int64_t *not_after,
    int64_t written_at, char *err, size_t errlen)
{
	struct mfield f[] = { { "path", NULL }, { "sha256", NULL }, { "at", NULL }, { "not_after", NULL } };
	size_t nf = not_after != NULL ? 4 : 3;
	char w[64];

	if (get_map(o, what, f, nf, err, errlen) == -1)
		return -1;
	WPATH("%s.path", what);
	if (get_str(f[0].v, w, false, &sf->path, err, errlen) == -1)
		return -1;
	if (sf->path[0] == '\0') {
		snprintf(err, errlen, "%s: empty", w);
		return -1;
	}
	WPATH("%s.sha256", what);
	if (get_sha256(f[1].v, w, sf->sha256, err, errlen) == -1)
		return -1;
	WPATH("%s.at", what);
	if (get_int(f[2].v, w, 0, written_at, &sf->at, err, errlen) == -1)
		return -1;
	if (not_after != NULL) {
		WPATH("%s.not_after", what);
		if (get_int(f[3].v, w, 1, TIME_MAX, not_after, err, errlen) == -1)
			return -1;
	}
	return 0;
}

static int
dec_instance(const msgpack_object *o, const char *what, struct snapshot_instance *in, char *err,
    size_t errlen)
{
	struct mfield f[] = {
		{ "addr", NULL }, { "port", NULL }, { "node", NULL }, { "datacenter", NULL },
		{ "service_id", NULL },
	};
	char w[192];

	if (get_map(o, what, f, sizeof(f) / sizeof(f[0]), err, errlen) == -1)
		return -1;
#define STR(i, name, dst) \
	(WPATH("%s." name, what), get_str(f[i].v, w, false, dst, err, errlen))
	if (STR(0, "addr", &in->addr) == -1 ||
	    (WPATH("%s.port", what),
	     get_int32(f[1].v, w, 1, PORT_MAX, &in->port, err, errlen)) == -1 ||
	    STR(2, "node", &in->node) == -1 ||
	    STR(3, "datacenter", &in->datacenter) == -1 ||
	    STR(4, "service_id", &in->service_id) == -1)
		return -1;
#undef STR
	if (in->addr[0] == '\0') {
		snprintf(err, errlen, "%s.addr: empty", what);
		return -1;
	}
	return 0;
}

static int
dec_upstream(const msgpack_object *o, const char *what, struct snapshot_upstream *u, int64_t written_at,
    char *err, size_t errlen)
{
	struct mfield f[] = {
		{ "dest_name", NULL }, { "datacenter", NULL }, { "service", NULL }, { "at", NULL },
		{ "instances", NULL },
	};
	const msgpack_object *ins;
	char w[160];
	uint32_t i;

	if (get_map(o, what, f, sizeof(f) / sizeof(f[0]), err, errlen) == -1)
		return -1;
	WPATH("%s.dest_name", what);
	if (get_str(f[0].v, w, false, &u->dest_name, err, errlen) == -1)
		return -1;
	WPATH("%s.datacenter", what);
	if (get_str(f[1].v, w, true, &u->datacenter, err, errlen) == -1)
		return -1;
	WPATH("%s.service", what);
	if (get_str(f[2].v, w, false, &u->service, err, errlen) == -1)
		return -1;
	WPATH("%s.at", what);
	if (get_int(f[3].v, w, 0, written_at, &u->at, err, errlen) == -1)
		return -1;
	ins = f[4].v;
	WPATH("%s.instances", what);
	if (get_array(ins, w, SNAPSHOT_INSTANCES_MAX, err, errlen) == -1)
		return -1;
	if (u->at == 0 && ins->via.array.size > 0) {
		snprintf(err, errlen, "%s: instances without a time", w);
		return -1;
	}
	if (ins->via.array.size > 0 &&
	    (u->instances = calloc(ins->via.array.size, sizeof(*u->instances))) == NULL) {
		snprintf(err, errlen, "%s: out of memory", w);
		return -1;
	}
	for (i = 0; i < ins->via.array.size; i++) {
		u->ninstances = i + 1;
		WPATH("%s.instances[%u]", what, i);
		if (dec_instance(&ins->via.array.ptr[i], w, &u->instances[i], err, errlen) == -1)
			return -1;
	}
	return 0;
}

static int
dec_state(const msgpack_object *o, struct certsync_snapshot *s, char *err, size_t errlen)
{
	struct mfield f[] = {
		{ "config", NULL }, { "config_at", NULL }, { "leaf", NULL }, { "ca", NULL },
		{ "upstreams", NULL },
	};
	const msgpack_object *ups;
	char w[64];
	uint32_t i;

	if (get_map(o, "state", f, sizeof(f) / sizeof(f[0]), err, errlen) == -1 ||
	    dec_cfg(f[0].v, &s->cfg, err, errlen) == -1 ||
	    get_int(f[1].v, "config_at", 0, s->written_at, &s->cfg_at, err, errlen) == -1 ||
	    dec_file(f[2].v, "leaf", &s->leaf, &s->leaf_not_after, s->written_at, err, errlen) == -1 ||
	    dec_file(f[3].v, "ca", &s->ca, NULL, s->written_at, err, errlen) == -1)
		return -1;
	ups = f[4].v;
	if (get_array(ups, "upstreams", SNAPSHOT_UPSTREAMS_MAX, err, errlen) == -1)
		return -1;
	if (ups->via.array.size != s->cfg.nupstreams) {
		snprintf(err, errlen, "upstreams: %u entries for %zu upstreams in config",
		    ups->via.array.size, s->cfg.nupstreams);
		return -1;
	}
	if (ups->via.array.size > 0 &&
	    (s->upstreams = calloc(ups->via.array.size, sizeof(*s->upstreams))) == NULL) {
		snprintf(err, errlen, "upstreams: out of memory");
		return -1;
	}
	for (i = 0; i < ups->via.array.size; i++) {
		s->nupstreams = i + 1;
		WPATH("upstreams[%u]", i);
		if (dec_upstream(&ups->via.array.ptr[i], w, &s->upstreams[i], s->written_at, err,
		    errlen) == -1)
			return -1;
		if (strcmp(s->upstreams[i].dest_name, s->cfg.upstreams[i].dest_name) != 0 ||
		    !str_eq_null(s->upstreams[i].datacenter, s->cfg.upstreams[i].datacenter)) {
			snprintf(err, errlen, "%s: does not match config.upstreams[%u]", w, i);
			return -1;
		}
	}
	if (s->proxy_id == NULL || strcmp(s->proxy_id, s->cfg.proxy_id) != 0) {
		snprintf(err, errlen, "config.proxy_id differs from the header's proxy id");
		return -1;
	}
	return 0;
}

static const struct snapfile_format snapshot_format = {
	.magic = SNAPSHOT_MAGIC,
	.what = "certsync snapshot",
	.version = SNAPSHOT_VERSION,
	.nitems = TOP_ITEMS,
	.max_len = SNAPSHOT_FILE_MAX,
	.max_depth = 8,
};

enum snapshot_status
snapshot_decode(const uint8_t *buf, size_t len, const char *expect_proxy_id, const char *expect_sidecar_for,
    struct certsync_snapshot *out, char *err, size_t errlen)
{
	struct certsync_snapshot tmp;
	msgpack_unpacked u;
	const msgpack_object *item;	/* the envelope's TOP_ITEMS items */
	enum snapshot_status st = SNAPSHOT_CORRUPT;

	memset(out, 0, sizeof(*out));
	memset(&tmp, 0, sizeof(tmp));
	if (expect_proxy_id == NULL && expect_sidecar_for == NULL) {
		snprintf(err, errlen, "no proxy id to check the snapshot against");
		return SNAPSHOT_FOREIGN;
	}
	switch (snapfile_open(&snapshot_format, buf, len, &u, &item, err, errlen)) {
	case SNAPFILE_OK:
		break;
	case SNAPFILE_VERSION_UNKNOWN:
		st = SNAPSHOT_VERSION_UNKNOWN;
		goto done;
	default:
		goto done;
	}
	if (get_str(&item[2], "proxy id", false, &tmp.proxy_id, err, errlen) == -1 ||
	    get_int(&item[3], "written_at", 1, TIME_MAX, &tmp.written_at, err, errlen) == -1)
		goto done;
	if (expect_proxy_id != NULL && strcmp(tmp.proxy_id, expect_proxy_id) != 0) {
		snprintf(err, errlen, "snapshot of proxy \"%s\", not \"%s\"", tmp.proxy_id, expect_proxy_id);
		st = SNAPSHOT_FOREIGN;
		goto done;
	}
	if (dec_state(&item[4], &tmp, err, errlen) == -1)
		goto done;
	if (expect_proxy_id == NULL &&
	    (tmp.cfg.target_service_id == NULL || strcmp(tmp.cfg.target_service_id, expect_sidecar_for) != 0)) {
		snprintf(err, errlen, "snapshot of proxy \"%s\" for service \"%s\", not a sidecar for \"%s\"",
		    tmp.proxy_id, tmp.cfg.target_service_id != NULL ? tmp.cfg.target_service_id : "",
		    expect_sidecar_for);
		st = SNAPSHOT_FOREIGN;
		goto done;
	}
	*out = tmp;
	memset(&tmp, 0, sizeof(tmp));
	st = SNAPSHOT_OK;
done:
	msgpack_unpacked_destroy(&u);
	snapshot_free(&tmp);
	return st;
}

/* ---- encoding ---------------------------------------------------------------------------------- */

static int
pk_str(msgpack_packer *pk, const char *s)
{
	size_t n;

	if (s == NULL)
		return msgpack_pack_nil(pk);
	n = strlen(s);
	if (msgpack_pack_str(pk, n) != 0)
		return -1;
	return msgpack_pack_str_body(pk, s, n);
}

/* Accumulates failures of the msgpack_pack_* calls (they fail only when out of memory). */
#define PK(x)	do { if ((x) != 0) rc = -1; } while (0)

static int
enc_cfg(msgpack_packer *pk, const struct proxy_cfg *c)
{
	size_t i;
	int rc = 0;

	PK(msgpack_pack_map(pk, 12));
	PK(pk_str(pk, "proxy_id")); PK(pk_str(pk, c->proxy_id));
	PK(pk_str(pk, "target_service_id")); PK(pk_str(pk, c->target_service_id));
	PK(pk_str(pk, "target_service_name")); PK(pk_str(pk, c->target_service_name));
	PK(pk_str(pk, "content_hash")); PK(pk_str(pk, c->content_hash));
	PK(pk_str(pk, "bind_address")); PK(pk_str(pk, c->bind_address));
	PK(pk_str(pk, "bind_port")); PK(msgpack_pack_int64(pk, c->bind_port));
	PK(pk_str(pk, "local_service_host")); PK(pk_str(pk, c->local_service_host));
	PK(pk_str(pk, "local_service_port")); PK(msgpack_pack_int64(pk, c->local_service_port));
	PK(pk_str(pk, "local_connect_timeout_ms")); PK(msgpack_pack_int64(pk, c->local_connect_timeout_ms));
	PK(pk_str(pk, "handshake_timeout_ms")); PK(msgpack_pack_int64(pk, c->handshake_timeout_ms));
	PK(pk_str(pk, "protocol_http"));
	PK(c->protocol_http ? msgpack_pack_true(pk) : msgpack_pack_false(pk));
	PK(pk_str(pk, "upstreams"));
	PK(msgpack_pack_array(pk, c->nupstreams));
	for (i = 0; i < c->nupstreams; i++) {
		const struct upstream_cfg *u = &c->upstreams[i];

		PK(msgpack_pack_map(pk, 7));
		PK(pk_str(pk, "dest_type"));
		PK(pk_str(pk, u->dest_type == DEST_PREPARED_QUERY ? "prepared_query" : "service"));
		PK(pk_str(pk, "dest_name")); PK(pk_str(pk, u->dest_name));
		PK(pk_str(pk, "dest_namespace")); PK(pk_str(pk, u->dest_namespace));
		PK(pk_str(pk, "datacenter")); PK(pk_str(pk, u->datacenter));
		PK(pk_str(pk, "local_bind_address")); PK(pk_str(pk, u->local_bind_address));
		PK(pk_str(pk, "local_bind_port")); PK(msgpack_pack_int64(pk, u->local_bind_port));
		PK(pk_str(pk, "connect_timeout_ms")); PK(msgpack_pack_int64(pk, u->connect_timeout_ms));
	}
	return rc;
}

static int
enc_file(msgpack_packer *pk, const struct snapshot_file *sf, const int64_t *not_after)
{
	int rc = 0;

	PK(msgpack_pack_map(pk, not_after != NULL ? 4 : 3));
	PK(pk_str(pk, "path")); PK(pk_str(pk, sf->path));
	PK(pk_str(pk, "sha256")); PK(msgpack_pack_bin(pk, 32)); PK(msgpack_pack_bin_body(pk, sf->sha256, 32));
	PK(pk_str(pk, "at")); PK(msgpack_pack_int64(pk, sf->at));
	if (not_after != NULL) {
		PK(pk_str(pk, "not_after"));
		PK(msgpack_pack_int64(pk, *not_after));
	}
	return rc;
}

static int
enc_state(msgpack_packer *pk, const struct certsync_snapshot *s)
{
	size_t i, j;
	int rc = 0;

	PK(msgpack_pack_map(pk, 5));
	PK(pk_str(pk, "config")); PK(enc_cfg(pk, &s->cfg));
	PK(pk_str(pk, "config_at")); PK(msgpack_pack_int64(pk, s->cfg_at));
	PK(pk_str(pk, "leaf")); PK(enc_file(pk, &s->leaf, &s->leaf_not_after));
	PK(pk_str(pk, "ca")); PK(enc_file(pk, &s->ca, NULL));
	PK(pk_str(pk, "upstreams"));
	PK(msgpack_pack_array(pk, s->nupstreams));
	for (i = 0; i < s->nupstreams; i++) {
		const struct snapshot_upstream *u = &s->upstreams[i];

		PK(msgpack_pack_map(pk, 5));
		PK(pk_str(pk, "dest_name")); PK(pk_str(pk, u->dest_name));
		PK(pk_str(pk, "datacenter")); PK(pk_str(pk, u->datacenter));
		PK(pk_str(pk, "service")); PK(pk_str(pk, u->service));
		PK(pk_str(pk, "at")); PK(msgpack_pack_int64(pk, u->at));
		PK(pk_str(pk, "instances"));
		PK(msgpack_pack_array(pk, u->ninstances));
		for (j = 0; j < u->ninstances; j++) {
			const struct snapshot_instance *in = &u->instances[j];

			PK(msgpack_pack_map(pk, 5));
			PK(pk_str(pk, "addr")); PK(pk_str(pk, in->addr));
			PK(pk_str(pk, "port")); PK(msgpack_pack_int64(pk, in->port));
			PK(pk_str(pk, "node")); PK(pk_str(pk, in->node));
			PK(pk_str(pk, "datacenter")); PK(pk_str(pk, in->datacenter));
			PK(pk_str(pk, "service_id")); PK(pk_str(pk, in->service_id));
		}
	}
	return rc;
}

int
snapshot_encode(const struct certsync_snapshot *s, uint8_t **out, size_t *outlen, char *err, size_t errlen)
{
	struct certsync_snapshot check;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	char derr[256];
	int rc = 0;

	*out = NULL;
	*outlen = 0;
	if (s->proxy_id == NULL || (s->nupstreams > 0 && s->upstreams == NULL) ||
	    (s->cfg.nupstreams > 0 && s->cfg.upstreams == NULL)) {
		snprintf(err, errlen, "incomplete state: no proxy id or missing upstreams");
		return -1;
	}
	PK(snapfile_begin(&snapshot_format, &sb, &pk));
	PK(pk_str(&pk, s->proxy_id));
	PK(msgpack_pack_int64(&pk, s->written_at));
	PK(enc_state(&pk, s));
	PK(snapfile_seal(&sb, &pk));
	if (rc != 0) {
		msgpack_sbuffer_destroy(&sb);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	/* What decode would refuse is never written: a reader must get back exactly this state. */
	if (snapshot_decode((const uint8_t *)sb.data, sb.size, s->proxy_id, NULL, &check, derr,
	    sizeof(derr)) != SNAPSHOT_OK) {
		msgpack_sbuffer_destroy(&sb);
		snprintf(err, errlen, "state not valid for a snapshot: %s", derr);
		return -1;
	}
	snapshot_free(&check);
	*outlen = sb.size;
	*out = (uint8_t *)msgpack_sbuffer_release(&sb);
	return 0;
}

#undef PK

/* ---- files ------------------------------------------------------------------------------------- */

const char *
snapshot_status_str(enum snapshot_status st)
{
	switch (st) {
	case SNAPSHOT_OK: return "ok";
	case SNAPSHOT_MISSING: return "missing";
	case SNAPSHOT_IO: return "unreadable";
	case SNAPSHOT_CORRUPT: return "corrupt";
	case SNAPSHOT_VERSION_UNKNOWN: return "unknown format version";
	case SNAPSHOT_FOREIGN: return "of another proxy";
	case SNAPSHOT_UNUSABLE: return "unusable";
	}
	return "?";
}

int
snapshot_save(const char *path, const struct certsync_snapshot *s, char *err, size_t errlen)
{
	uint8_t *data;
	size_t len;
	int rc;

	if (snapshot_encode(s, &data, &len, err, errlen) == -1)
		return -1;
	rc = atomic_write_file(path, data, len, 0600, err, errlen);
	free(data);
	return rc;
}

enum snapshot_status
snapshot_load(const char *path, const char *expect_proxy_id, const char *expect_sidecar_for,
    struct certsync_snapshot *out, char *err, size_t errlen)
{
	struct stat st;
	char *data;
	size_t len;
	enum snapshot_status rc;

	memset(out, 0, sizeof(*out));
	if (stat(path, &st) == -1 && errno == ENOENT) {
		snprintf(err, errlen, "%s: no snapshot", path);
		return SNAPSHOT_MISSING;
	}
	if (read_file_capped(path, SNAPSHOT_FILE_MAX, &data, &len, err, errlen) == -1)
		return SNAPSHOT_IO;
	rc = snapshot_decode((const uint8_t *)data, len, expect_proxy_id, expect_sidecar_for, out, err,
	    errlen);
	free(data);
	return rc;
}

int
snapshot_hash_file(const char *path, uint8_t out[32], char *err, size_t errlen)
{
	char *data;
	size_t len;
	int rc;

	if (read_file_capped(path, SNAPSHOT_CERT_MAX, &data, &len, err, errlen) == -1)
		return -1;
	rc = snapfile_sha256(data, len, out);
	free(data);
	if (rc == -1)
		snprintf(err, errlen, "%s: SHA-256 failed", path);
	return rc;
}

int
snapshot_pem_not_after(const char *pem, size_t len, int64_t *not_after, char *err, size_t errlen)
{
	BIO *bio;
	X509 *x;
	struct tm tm;
	int rc = -1;

	if (len > SNAPSHOT_CERT_MAX || (bio = BIO_new_mem_buf(pem, (int)len)) == NULL) {
		snprintf(err, errlen, "certificate too large or out of memory");
		return -1;
	}
	if ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL) {
		snprintf(err, errlen, "no PEM certificate");
		goto done;
	}
	memset(&tm, 0, sizeof(tm));
	if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1) {
		snprintf(err, errlen, "unreadable NotAfter");
		goto done;
	}
	*not_after = (int64_t)timegm(&tm);
	rc = 0;
done:
	X509_free(x);
	BIO_free(bio);
	return rc;
}

/* The file still hashes to what was recorded. For the leaf, also returns its content. */
static int
check_one(const struct snapshot_file *sf, const char *what, char **content, size_t *clen, char *err,
    size_t errlen)
{
	uint8_t got[32];
	char *data;
	size_t len;
	char rerr[256];

	if (read_file_capped(sf->path, SNAPSHOT_CERT_MAX, &data, &len, rerr, sizeof(rerr)) == -1) {
		snprintf(err, errlen, "%s file: %s", what, rerr);
		return -1;
	}
	if (snapfile_sha256(data, len, got) == -1 || memcmp(got, sf->sha256, 32) != 0) {
		snprintf(err, errlen, "%s file %s changed since the snapshot (SHA-256 differs)", what, sf->path);
		free(data);
		return -1;
	}
	if (content != NULL) {
		*content = data;
		*clen = len;
	} else
		free(data);
	return 0;
}

enum snapshot_status
snapshot_check_files(const struct certsync_snapshot *s, int64_t now, char *err, size_t errlen)
{
	char *leaf = NULL;
	size_t leaflen = 0;
	int64_t na;
	char perr[128];

	if (s->leaf_not_after <= now) {
		snprintf(err, errlen, "the leaf certificate expired %lld s ago",
		    (long long)(now - s->leaf_not_after));
		return SNAPSHOT_UNUSABLE;
	}
	if (check_one(&s->leaf, "leaf", &leaf, &leaflen, err, errlen) == -1 ||
	    check_one(&s->ca, "CA", NULL, NULL, err, errlen) == -1) {
		free(leaf);
		return SNAPSHOT_UNUSABLE;
	}
	if (snapshot_pem_not_after(leaf, leaflen, &na, perr, sizeof(perr)) == -1) {
		snprintf(err, errlen, "leaf file %s: %s", s->leaf.path, perr);
		free(leaf);
		return SNAPSHOT_UNUSABLE;
	}
	free(leaf);
	if (na <= now) {
		snprintf(err, errlen, "the leaf certificate in %s expired %lld s ago", s->leaf.path,
		    (long long)(now - na));
		return SNAPSHOT_UNUSABLE;
	}
	return SNAPSHOT_OK;
}

/* ---- the daemon's writer ----------------------------------------------------------------------- */

struct snapshot_keeper {
	char			*path;
	bool			 have_last;
	struct certsync_snapshot last;	/* as last written (or loaded) */
};

struct snapshot_keeper *
snapshot_keeper_new(const char *path)
{
	struct snapshot_keeper *k = calloc(1, sizeof(*k));

	if (k == NULL || (k->path = strdup(path)) == NULL) {
		free(k);
		return NULL;
	}
	return k;
}

void
snapshot_keeper_free(struct snapshot_keeper *k)
{
	if (k == NULL)
		return;
	snapshot_free(&k->last);
	free(k->path);
	free(k);
}

const char *
snapshot_keeper_path(const struct snapshot_keeper *k)
{
	return k->path;
}

/* A deep copy through the codec itself. */
static int
keeper_remember(struct snapshot_keeper *k, const uint8_t *buf, size_t len, const char *proxy_id, char *err,
    size_t errlen)
{
	struct certsync_snapshot copy;

	if (snapshot_decode(buf, len, proxy_id, NULL, &copy, err, errlen) != SNAPSHOT_OK)
		return -1;
	snapshot_free(&k->last);
	k->last = copy;
	k->have_last = true;
	return 0;
}

int
snapshot_keeper_prime(struct snapshot_keeper *k, const struct certsync_snapshot *s, char *err, size_t errlen)
{
	uint8_t *buf;
	size_t len;
	int rc;

	if (snapshot_encode(s, &buf, &len, err, errlen) == -1)
		return -1;
	rc = keeper_remember(k, buf, len, s->proxy_id, err, errlen);
	free(buf);
	return rc;
}

static bool
instances_equal(const struct snapshot_upstream *a, const struct snapshot_upstream *b)
{
	size_t i;

	if (a->ninstances != b->ninstances)
		return false;
	for (i = 0; i < a->ninstances; i++) {
		const struct snapshot_instance *x = &a->instances[i], *y = &b->instances[i];

		if (!str_eq_null(x->addr, y->addr) || x->port != y->port || !str_eq_null(x->node, y->node) ||
		    !str_eq_null(x->datacenter, y->datacenter) || !str_eq_null(x->service_id, y->service_id))
			return false;
	}
	return true;
}

/* Every field the snapshot keeps, NULL-safe (proxycfg_equal expects decoded, never-NULL strings). */
static bool
cfg_equal(const struct proxy_cfg *a, const struct proxy_cfg *b)
{
	size_t i;

	if (!str_eq_null(a->proxy_id, b->proxy_id) || !str_eq_null(a->target_service_id, b->target_service_id) ||
	    !str_eq_null(a->target_service_name, b->target_service_name) ||
	    !str_eq_null(a->content_hash, b->content_hash) || !str_eq_null(a->bind_address, b->bind_address) ||
	    a->bind_port != b->bind_port || !str_eq_null(a->local_service_host, b->local_service_host) ||
	    a->local_service_port != b->local_service_port ||
	    a->local_connect_timeout_ms != b->local_connect_timeout_ms ||
	    a->handshake_timeout_ms != b->handshake_timeout_ms || a->protocol_http != b->protocol_http ||
	    a->nupstreams != b->nupstreams)
		return false;
	for (i = 0; i < a->nupstreams; i++) {
		const struct upstream_cfg *x = &a->upstreams[i], *y = &b->upstreams[i];

		if (x->dest_type != y->dest_type || !str_eq_null(x->dest_name, y->dest_name) ||
		    !str_eq_null(x->dest_namespace, y->dest_namespace) ||
		    !str_eq_null(x->datacenter, y->datacenter) ||
		    !str_eq_null(x->local_bind_address, y->local_bind_address) ||
		    x->local_bind_port != y->local_bind_port || x->connect_timeout_ms != y->connect_timeout_ms)
			return false;
	}
	return true;
}

/* Keeps the time of the last write when a part did not change; now otherwise. Returns whether it changed. */
static bool
keep_time(bool same, int64_t last_at, int64_t now, int64_t *at)
{
	*at = same && last_at <= now ? last_at : now;
	return !same;
}

int
snapshot_keeper_update(struct snapshot_keeper *k, struct certsync_snapshot *cur, int64_t now, char *err,
    size_t errlen)
{
	const struct certsync_snapshot *l = k->have_last ? &k->last : NULL;
	char ferr[256];
	uint8_t *buf;
	size_t len, i;
	bool changed = false;
	int rc;

	if (snapshot_hash_file(cur->leaf.path, cur->leaf.sha256, ferr, sizeof(ferr)) == -1 ||
	    snapshot_hash_file(cur->ca.path, cur->ca.sha256, ferr, sizeof(ferr)) == -1) {
		snprintf(err, errlen, "%s", ferr);
		return -1;
	}
	{
		char *pem;
		size_t plen;

		if (read_file_capped(cur->leaf.path, SNAPSHOT_CERT_MAX, &pem, &plen, err, errlen) == -1)
			return -1;
		rc = snapshot_pem_not_after(pem, plen, &cur->leaf_not_after, ferr, sizeof(ferr));
		free(pem);
		if (rc == -1) {
			snprintf(err, errlen, "%s: %s", cur->leaf.path, ferr);
			return -1;
		}
	}
	if (l == NULL || !str_eq_null(l->proxy_id, cur->proxy_id) || l->nupstreams != cur->nupstreams)
		changed = true;
	changed |= keep_time(l != NULL && cfg_equal(&l->cfg, &cur->cfg), l != NULL ? l->cfg_at : 0, now,
	    &cur->cfg_at);
	changed |= keep_time(l != NULL && str_eq_null(l->leaf.path, cur->leaf.path) &&
	    memcmp(l->leaf.sha256, cur->leaf.sha256, 32) == 0, l != NULL ? l->leaf.at : 0, now, &cur->leaf.at);
	changed |= keep_time(l != NULL && str_eq_null(l->ca.path, cur->ca.path) &&
	    memcmp(l->ca.sha256, cur->ca.sha256, 32) == 0, l != NULL ? l->ca.at : 0, now, &cur->ca.at);
	for (i = 0; i < cur->nupstreams; i++) {
		struct snapshot_upstream *u = &cur->upstreams[i];
		const struct snapshot_upstream *o = l != NULL && i < l->nupstreams ? &l->upstreams[i] : NULL;
		bool same = o != NULL && str_eq_null(o->dest_name, u->dest_name) &&
		    str_eq_null(o->datacenter, u->datacenter) && str_eq_null(o->service, u->service) &&
		    (o->at > 0) == (u->at > 0) && instances_equal(o, u);

		if (u->at == 0)
			changed |= !same;
		else
			changed |= keep_time(same, o != NULL ? o->at : 0, now, &u->at);
	}
	if (!changed)
		return 0;
	cur->written_at = now;
	if (snapshot_encode(cur, &buf, &len, err, errlen) == -1)
		return -1;
	rc = atomic_write_file(k->path, buf, len, 0600, err, errlen);
	if (rc == 0)
		rc = keeper_remember(k, buf, len, cur->proxy_id, err, errlen);
	free(buf);
	return rc == 0 ? 1 : -1;
}
