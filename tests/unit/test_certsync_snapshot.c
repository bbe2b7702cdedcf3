/*
 * test_certsync_snapshot.c - certsync's last-known-good snapshot: round trip, every kind of damage
 * (truncation at every offset, flipped bytes, wrong magic/version/proxy id, oversized counts, invalid
 * fields), the atomic file wrappers and the certificate file checks.
 *
 * Damaged-but-well-formed files are made by unpacking a good snapshot, changing one object of the tree
 * and sealing it again with a correct checksum, so that the field checks themselves are exercised.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <msgpack.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "reseal.h"
#include "snapshot.h"

static char *
xstrdup(const char *s)
{
	char *d = s != NULL ? strdup(s) : NULL;

	if (s != NULL)
		assert_non_null(d);
	return d;
}

/* A complete state: two upstreams (one a prepared query, with no answer yet), NULL optional fields. */
static void
make_state(struct certsync_snapshot *s)
{
	struct upstream_cfg *u;
	struct snapshot_instance *in;
	size_t i;

	memset(s, 0, sizeof(*s));
	s->proxy_id = xstrdup("web-sidecar-proxy");
	s->written_at = 1795000000;
	s->cfg.proxy_id = xstrdup("web-sidecar-proxy");
	s->cfg.target_service_id = xstrdup("web");
	s->cfg.target_service_name = xstrdup("web");
	s->cfg.content_hash = xstrdup("cffa5f4635b134b9");
	s->cfg.bind_address = xstrdup("0.0.0.0");
	s->cfg.bind_port = 21000;
	s->cfg.local_service_host = NULL;
	s->cfg.local_service_port = 8080;
	s->cfg.local_connect_timeout_ms = 1000;
	s->cfg.handshake_timeout_ms = 10000;
	s->cfg.protocol_http = true;
	s->cfg.nupstreams = 2;
	s->cfg.upstreams = calloc(2, sizeof(*s->cfg.upstreams));
	assert_non_null(s->cfg.upstreams);
	u = &s->cfg.upstreams[0];
	u->dest_type = DEST_SERVICE;
	u->dest_name = xstrdup("db");
	u->dest_namespace = xstrdup("default");
	u->datacenter = xstrdup("dc2");
	u->local_bind_address = xstrdup("127.0.0.1");
	u->local_bind_port = 9191;
	u->connect_timeout_ms = 10000;
	u = &s->cfg.upstreams[1];
	u->dest_type = DEST_PREPARED_QUERY;
	u->dest_name = xstrdup("cache-query");
	u->local_bind_port = 9192;
	s->cfg_at = 1794999000;
	s->leaf.path = xstrdup("/var/lib/hc/web/leaf-3f2a.pem");
	for (i = 0; i < 32; i++) {
		s->leaf.sha256[i] = (uint8_t)i;
		s->ca.sha256[i] = (uint8_t)(255 - i);
	}
	s->leaf.at = 1794999100;
	s->leaf_not_after = 1795259100;
	s->ca.path = xstrdup("/var/lib/hc/web/ca-77aa.pem");
	s->ca.at = 1794999000;
	s->nupstreams = 2;
	s->upstreams = calloc(2, sizeof(*s->upstreams));
	assert_non_null(s->upstreams);
	s->upstreams[0].dest_name = xstrdup("db");
	s->upstreams[0].datacenter = xstrdup("dc2");
	s->upstreams[0].service = xstrdup("db");
	s->upstreams[0].at = 1794999500;
	s->upstreams[0].ninstances = 3;
	s->upstreams[0].instances = calloc(3, sizeof(*in));
	assert_non_null(s->upstreams[0].instances);
	for (i = 0; i < 3; i++) {
		char addr[32], id[32];

		in = &s->upstreams[0].instances[i];
		snprintf(addr, sizeof(addr), "10.0.0.%zu", i + 1);
		snprintf(id, sizeof(id), "db-%zu-sidecar-proxy", i);
		in->addr = xstrdup(i == 2 ? "fd00::2" : addr);
		in->port = 21000 + (int)i;
		in->node = xstrdup(i == 1 ? "" : "node-a");
		in->datacenter = xstrdup("dc2");
		in->service_id = xstrdup(id);
	}
	s->upstreams[1].dest_name = xstrdup("cache-query");
	s->upstreams[1].service = xstrdup("cache");
	s->upstreams[1].at = 0;
}

static void
encode_good(uint8_t **buf, size_t *len)
{
	struct certsync_snapshot s;
	char err[256];

	make_state(&s);
	if (snapshot_encode(&s, buf, len, err, sizeof(err)) != 0)
		fail_msg("encode: %s", err);
	snapshot_free(&s);
}

static void
assert_str_eq_null(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		assert_ptr_equal(a, b);
	else
		assert_string_equal(a, b);
}

static void
test_round_trip(void **state)
{
	struct certsync_snapshot s, d;
	uint8_t *buf, *buf2;
	size_t len, len2, i, j;
	char err[256];

	make_state(&s);
	assert_int_equal(snapshot_encode(&s, &buf, &len, err, sizeof(err)), 0);
	assert_int_equal(snapshot_decode(buf, len, "web-sidecar-proxy", NULL, &d, err, sizeof(err)),
	    SNAPSHOT_OK);
	assert_string_equal(d.proxy_id, s.proxy_id);
	assert_int_equal(d.written_at, s.written_at);
	assert_string_equal(d.cfg.proxy_id, s.cfg.proxy_id);
	assert_str_eq_null(d.cfg.target_service_id, s.cfg.target_service_id);
	assert_string_equal(d.cfg.target_service_name, s.cfg.target_service_name);
	assert_str_eq_null(d.cfg.content_hash, s.cfg.content_hash);
	assert_str_eq_null(d.cfg.bind_address, s.cfg.bind_address);
	assert_null(d.cfg.local_service_host);
	assert_int_equal(d.cfg.bind_port, 21000);
	assert_int_equal(d.cfg.local_service_port, 8080);
	assert_int_equal(d.cfg.local_connect_timeout_ms, 1000);
	assert_int_equal(d.cfg.handshake_timeout_ms, 10000);
	assert_true(d.cfg.protocol_http);
	assert_int_equal(d.cfg.nupstreams, 2);
	for (i = 0; i < 2; i++) {
		const struct upstream_cfg *a = &d.cfg.upstreams[i], *b = &s.cfg.upstreams[i];

		assert_int_equal(a->dest_type, b->dest_type);
		assert_string_equal(a->dest_name, b->dest_name);
		assert_str_eq_null(a->dest_namespace, b->dest_namespace);
		assert_str_eq_null(a->datacenter, b->datacenter);
		assert_str_eq_null(a->local_bind_address, b->local_bind_address);
		assert_int_equal(a->local_bind_port, b->local_bind_port);
		assert_int_equal(a->connect_timeout_ms, b->connect_timeout_ms);
	}
	assert_int_equal(d.cfg_at, s.cfg_at);
	assert_string_equal(d.leaf.path, s.leaf.path);
	assert_memory_equal(d.leaf.sha256, s.leaf.sha256, 32);
	assert_int_equal(d.leaf.at, s.leaf.at);
	assert_int_equal(d.leaf_not_after, s.leaf_not_after);
	assert_string_equal(d.ca.path, s.ca.path);
	assert_memory_equal(d.ca.sha256, s.ca.sha256, 32);
	assert_int_equal(d.ca.at, s.ca.at);
	assert_int_equal(d.nupstreams, 2);
	for (i = 0; i < 2; i++) {
		const struct snapshot_upstream *a = &d.upstreams[i], *b = &s.upstreams[i];

		assert_string_equal(a->dest_name, b->dest_name);
		assert_str_eq_null(a->datacenter, b->datacenter);
		assert_string_equal(a->service, b->service);
		assert_int_equal(a->at, b->at);
		assert_int_equal(a->ninstances, b->ninstances);
		for (j = 0; j < a->ninstances; j++) {
			assert_string_equal(a->instances[j].addr, b->instances[j].addr);
			assert_int_equal(a->instances[j].port, b->instances[j].port);
			assert_string_equal(a->instances[j].node, b->instances[j].node);
			assert_string_equal(a->instances[j].datacenter, b->instances[j].datacenter);
			assert_string_equal(a->instances[j].service_id, b->instances[j].service_id);
		}
	}
	/* Deterministic: the decoded state encodes to the same bytes. */
	assert_int_equal(snapshot_encode(&d, &buf2, &len2, err, sizeof(err)), 0);
	assert_int_equal(len2, len);
	assert_memory_equal(buf2, buf, len);
	/* A sidecar-for start (proxy id not yet known) finds it by the target service ID. */
	snapshot_free(&d);
	assert_int_equal(snapshot_decode(buf, len, NULL, "web", &d, err, sizeof(err)), SNAPSHOT_OK);
	snapshot_free(&d);
	free(buf);
	free(buf2);
	snapshot_free(&s);
}

static void
assert_zeroed(const struct certsync_snapshot *d)
{
	struct certsync_snapshot z;

	memset(&z, 0, sizeof(z));
	assert_memory_equal(d, &z, sizeof(z));
}

static void
test_truncated_everywhere(void **state)
{
	struct certsync_snapshot d;
	uint8_t *buf, *copy;
	size_t len, i;
	char err[256];

	encode_good(&buf, &len);
	for (i = 0; i < len; i++) {
		/* An exact-size heap copy, so that ASan sees any read past the end. */
		copy = malloc(i > 0 ? i : 1);
		assert_non_null(copy);
		memcpy(copy, buf, i);
		err[0] = '\0';
		assert_int_equal(snapshot_decode(copy, i, "web-sidecar-proxy", NULL, &d, err, sizeof(err)),
		    SNAPSHOT_CORRUPT);
		assert_true(err[0] != '\0');
		assert_zeroed(&d);
		free(copy);
	}
	free(buf);
}

static void
test_flipped_bytes(void **state)
{
	static const uint8_t masks[] = { 0x01, 0x10, 0x80, 0xff };
	struct certsync_snapshot d;
	uint8_t *buf;
	size_t len, i, m;
	char err[256];
	enum snapshot_status st;

	encode_good(&buf, &len);
	for (i = 0; i < len; i++) {
		for (m = 0; m < sizeof(masks); m++) {
			buf[i] ^= masks[m];
			st = snapshot_decode(buf, len, "web-sidecar-proxy", NULL, &d, err, sizeof(err));
			if (st == SNAPSHOT_OK)
				fail_msg("byte %zu ^ 0x%02x accepted", i, masks[m]);
			assert_zeroed(&d);
			buf[i] ^= masks[m];
		}
	}
	/* Trailing garbage. */
	buf = realloc(buf, len + 1);
	assert_non_null(buf);
	buf[len] = 0xc0;
	assert_int_equal(snapshot_decode(buf, len + 1, "web-sidecar-proxy", NULL, &d, err, sizeof(err)),
	    SNAPSHOT_CORRUPT);
	assert_int_equal(snapshot_decode(buf, len, "web-sidecar-proxy", NULL, &d, err, sizeof(err)),
	    SNAPSHOT_OK);
	snapshot_free(&d);
	free(buf);
}

/* ---- well-formed but wrong files: change one object of the tree, seal again ---- */

static msgpack_object *
mget(msgpack_object *map, const char *key)
{
	uint32_t i;

	assert_int_equal(map->type, MSGPACK_OBJECT_MAP);
	for (i = 0; i < map->via.map.size; i++) {
		msgpack_object *k = &map->via.map.ptr[i].key;

		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
		    memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
			return &map->via.map.ptr[i].val;
	}
	fail_msg("no key %s", key);
	return NULL;
}

static void
set_str(msgpack_object *o, const char *s, size_t n)
{
	o->type = MSGPACK_OBJECT_STR;
	o->via.str.ptr = s;
	o->via.str.size = (uint32_t)n;
}

static void
set_int(msgpack_object *o, int64_t v)
{
	if (v >= 0) {
		o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
		o->via.u64 = (uint64_t)v;
	} else {
		o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
		o->via.i64 = v;
	}
}

typedef void mutate_fn(msgpack_object *top, msgpack_zone *z);

static enum snapshot_status
decode_mutated(mutate_fn *fn, const char *expect_id, const char *expect_sidecar, char *err, size_t errlen)
{
	struct certsync_snapshot d;
	msgpack_unpacked u;
	uint8_t *good, *bad;
	size_t len, blen, off = 0;
	enum snapshot_status st;

	encode_good(&good, &len);
	msgpack_unpacked_init(&u);
	assert_int_equal(msgpack_unpack_next(&u, (const char *)good, len, &off), MSGPACK_UNPACK_SUCCESS);
	fn(&u.data, u.zone);
	reseal(&u.data, &bad, &blen);
	st = snapshot_decode(bad, blen, expect_id, expect_sidecar, &d, err, errlen);
	if (st == SNAPSHOT_OK)
		snapshot_free(&d);
	else
		assert_zeroed(&d);
	msgpack_unpacked_destroy(&u);
	free(good);
	free(bad);
	return st;
}

static msgpack_object *
state_of(msgpack_object *top)
{
	return &top->via.array.ptr[4];
}

static msgpack_object *
instance0(msgpack_object *top)
{
	msgpack_object *ups = mget(state_of(top), "upstreams");

	return &mget(&ups->via.array.ptr[0], "instances")->via.array.ptr[0];
}

static void mut_nothing(msgpack_object *t, msgpack_zone *z) { (void)t; (void)z; }
static void mut_magic(msgpack_object *t, msgpack_zone *z) { set_str(&t->via.array.ptr[0], "haproxy-connect spoa", 20); }
static void mut_version(msgpack_object *t, msgpack_zone *z) { set_int(&t->via.array.ptr[1], 2); }
static void mut_version_str(msgpack_object *t, msgpack_zone *z) { set_str(&t->via.array.ptr[1], "1", 1); }
static void mut_proxy_id(msgpack_object *t, msgpack_zone *z) { set_str(&t->via.array.ptr[2], "db-proxy", 8); }
static void mut_written_neg(msgpack_object *t, msgpack_zone *z) { set_int(&t->via.array.ptr[3], -5); }
static void mut_port_zero(msgpack_object *t, msgpack_zone *z) { set_int(mget(instance0(t), "port"), 0); }
static void mut_port_big(msgpack_object *t, msgpack_zone *z) { set_int(mget(instance0(t), "port"), 70000); }
static void mut_bind_port_big(msgpack_object *t, msgpack_zone *z)
{
	set_int(mget(mget(state_of(t), "config"), "bind_port"), 65536);
}
static void mut_addr_nul(msgpack_object *t, msgpack_zone *z) { set_str(mget(instance0(t), "addr"), "10.0.0.1\0x", 10); }
static void mut_addr_newline(msgpack_object *t, msgpack_zone *z)
{
	set_str(mget(instance0(t), "addr"), "10.0.0.1\n  server x 1.2.3.4:80", 30);
}
static void mut_addr_empty(msgpack_object *t, msgpack_zone *z) { set_str(mget(instance0(t), "addr"), "", 0); }
static void mut_addr_nil(msgpack_object *t, msgpack_zone *z) { mget(instance0(t), "addr")->type = MSGPACK_OBJECT_NIL; }
static void mut_port_str(msgpack_object *t, msgpack_zone *z) { set_str(mget(instance0(t), "port"), "80", 2); }
static void mut_unknown_key(msgpack_object *t, msgpack_zone *z)
{
	set_str(&instance0(t)->via.map.ptr[2].key, "weight", 6);
}
static void mut_dup_key(msgpack_object *t, msgpack_zone *z)
{
	msgpack_object *in = instance0(t);

	in->via.map.ptr[2].key = in->via.map.ptr[0].key;
}
static void mut_missing_key(msgpack_object *t, msgpack_zone *z) { instance0(t)->via.map.size--; }
static void mut_string_too_long(msgpack_object *t, msgpack_zone *z)
{
	char *s = msgpack_zone_malloc(z, SNAPSHOT_STR_MAX + 1);

	memset(s, 'a', SNAPSHOT_STR_MAX + 1);
	set_str(mget(instance0(t), "node"), s, SNAPSHOT_STR_MAX + 1);
}
static void mut_too_many_instances(msgpack_object *t, msgpack_zone *z)
{
	msgpack_object *arr = mget(&mget(state_of(t), "upstreams")->via.array.ptr[0], "instances");
	msgpack_object *v = msgpack_zone_malloc(z, (SNAPSHOT_INSTANCES_MAX + 1) * sizeof(*v));
	uint32_t i;

	for (i = 0; i < SNAPSHOT_INSTANCES_MAX + 1; i++)
		v[i] = arr->via.array.ptr[0];
	arr->via.array.ptr = v;
	arr->via.array.size = SNAPSHOT_INSTANCES_MAX + 1;
}
static void mut_fewer_upstreams(msgpack_object *t, msgpack_zone *z) { mget(state_of(t), "upstreams")->via.array.size = 1; }
static void mut_upstream_name(msgpack_object *t, msgpack_zone *z)
{
	set_str(mget(&mget(state_of(t), "upstreams")->via.array.ptr[0], "dest_name"), "dbx", 3);
}
static void mut_future_time(msgpack_object *t, msgpack_zone *z)
{
	set_int(mget(mget(state_of(t), "leaf"), "at"), 1795000001);
}
static void mut_sha_short(msgpack_object *t, msgpack_zone *z) { mget(mget(state_of(t), "ca"), "sha256")->via.bin.size = 31; }
static void mut_dest_type(msgpack_object *t, msgpack_zone *z)
{
	msgpack_object *ups = mget(mget(state_of(t), "config"), "upstreams");

	set_str(mget(&ups->via.array.ptr[0], "dest_type"), "mesh", 4);
}
static void mut_cfg_proxy_id(msgpack_object *t, msgpack_zone *z)
{
	set_str(mget(mget(state_of(t), "config"), "proxy_id"), "db-proxy", 8);
}
static void mut_no_instances_time(msgpack_object *t, msgpack_zone *z)
{
	set_int(mget(&mget(state_of(t), "upstreams")->via.array.ptr[0], "at"), 0);
}
static void mut_state_not_map(msgpack_object *t, msgpack_zone *z) { set_int(state_of(t), 7); }
static void mut_extra_top(msgpack_object *t, msgpack_zone *z)
{
	msgpack_object *v = msgpack_zone_malloc(z, 7 * sizeof(*v));

	memcpy(v, t->via.array.ptr, 6 * sizeof(*v));
	v[6] = v[5];
	v[5].type = MSGPACK_OBJECT_NIL;
	t->via.array.ptr = v;
	t->via.array.size = 7;
}

static void
test_wrong_fields(void **state)
{
	static const struct {
		const char	*name;
		mutate_fn	*fn;
		enum snapshot_status want;
		const char	*in_err;
	} cases[] = {
		{ "unchanged", mut_nothing, SNAPSHOT_OK, NULL },
		{ "magic", mut_magic, SNAPSHOT_CORRUPT, "magic" },
		{ "version 2", mut_version, SNAPSHOT_VERSION_UNKNOWN, "version 2" },
		{ "version not an integer", mut_version_str, SNAPSHOT_VERSION_UNKNOWN, "version" },
		{ "proxy id", mut_proxy_id, SNAPSHOT_FOREIGN, "db-proxy" },
		{ "written_at < 0", mut_written_neg, SNAPSHOT_CORRUPT, "written_at" },
		{ "port 0", mut_port_zero, SNAPSHOT_CORRUPT, "upstreams[0].instances[0].port" },
		{ "port 70000", mut_port_big, SNAPSHOT_CORRUPT, "port" },
		{ "bind_port 65536", mut_bind_port_big, SNAPSHOT_CORRUPT, "config.bind_port" },
		{ "NUL in addr", mut_addr_nul, SNAPSHOT_CORRUPT, "control character" },
		{ "newline in addr", mut_addr_newline, SNAPSHOT_CORRUPT, "control character" },
		{ "empty addr", mut_addr_empty, SNAPSHOT_CORRUPT, "addr" },
		{ "nil addr", mut_addr_nil, SNAPSHOT_CORRUPT, "expected a string" },
		{ "port as string", mut_port_str, SNAPSHOT_CORRUPT, "expected an integer" },
		{ "unknown key", mut_unknown_key, SNAPSHOT_CORRUPT, "unknown key" },
		{ "repeated key", mut_dup_key, SNAPSHOT_CORRUPT, "repeated" },
		{ "missing key", mut_missing_key, SNAPSHOT_CORRUPT, "missing" },
		{ "string too long", mut_string_too_long, SNAPSHOT_CORRUPT, "exceeds" },
		{ "too many instances", mut_too_many_instances, SNAPSHOT_CORRUPT, "exceed" },
		{ "upstream count", mut_fewer_upstreams, SNAPSHOT_CORRUPT, "upstreams" },
		{ "upstream name", mut_upstream_name, SNAPSHOT_CORRUPT, "does not match" },
		{ "time after written_at", mut_future_time, SNAPSHOT_CORRUPT, "leaf.at" },
		{ "short sha256", mut_sha_short, SNAPSHOT_CORRUPT, "ca.sha256" },
		{ "dest_type", mut_dest_type, SNAPSHOT_CORRUPT, "dest_type" },
		{ "config proxy id", mut_cfg_proxy_id, SNAPSHOT_CORRUPT, "proxy id" },
		{ "instances without a time", mut_no_instances_time, SNAPSHOT_CORRUPT, "without a time" },
		{ "state not a map", mut_state_not_map, SNAPSHOT_CORRUPT, "expected a map" },
		{ "7 header items", mut_extra_top, SNAPSHOT_CORRUPT, "header items" },
	};
	size_t i;
	char err[256];
	enum snapshot_status st;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		st = decode_mutated(cases[i].fn, "web-sidecar-proxy", NULL, err, sizeof(err));
		if (st != cases[i].want)
			fail_msg("%s: status %s (%s), want %s", cases[i].name, snapshot_status_str(st), err,
			    snapshot_status_str(cases[i].want));
		if (cases[i].in_err != NULL && strstr(err, cases[i].in_err) == NULL)
			fail_msg("%s: error \"%s\" does not mention \"%s\"", cases[i].name, err, cases[i].in_err);
	}
	/* -sidecar-for: a snapshot of a proxy for another service is foreign. */
	assert_int_equal(decode_mutated(mut_nothing, NULL, "api", err, sizeof(err)), SNAPSHOT_FOREIGN);
	assert_int_equal(decode_mutated(mut_nothing, NULL, NULL, err, sizeof(err)), SNAPSHOT_FOREIGN);
}

static void
test_lying_counts(void **state)
{
	/* Counts far beyond the bytes present must be refused before anything is allocated for them. */
	static const uint8_t bombs[][8] = {
		{ 0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0 },		/* array32 of 4G */
		{ 0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0 },	/* map32 of 4G */
		{ 0x96, 0xdb, 0xff, 0xff, 0xff, 0xf0, 0x41 },	/* str32 of 4G */
		{ 0x96, 0xc6, 0x7f, 0xff, 0xff, 0xff, 0x00 },	/* bin32 of 2G */
		{ 0x96, 0xdc, 0xff, 0xff, 0xc0 },		/* array16 of 64K */
		{ 0xc1 },					/* never-used byte */
		{ 0xc7, 0x01, 0x05, 0x00 },			/* ext */
	};
	uint8_t deep[200];
	struct certsync_snapshot d;
	char err[256];
	size_t i;

	for (i = 0; i < sizeof(bombs) / sizeof(bombs[0]); i++)
		assert_int_equal(snapshot_decode(bombs[i], sizeof(bombs[i]), "x", NULL, &d, err, sizeof(err)),
		    SNAPSHOT_CORRUPT);
	memset(deep, 0x91, sizeof(deep));
	deep[sizeof(deep) - 1] = 0xc0;
	assert_int_equal(snapshot_decode(deep, sizeof(deep), "x", NULL, &d, err, sizeof(err)), SNAPSHOT_CORRUPT);
	assert_int_equal(snapshot_decode(NULL, 0, "x", NULL, &d, err, sizeof(err)), SNAPSHOT_CORRUPT);
}

static void
test_encode_refuses_invalid(void **state)
{
	struct certsync_snapshot s;
	uint8_t *buf = NULL;
	size_t len;
	char err[256];

	make_state(&s);
	s.upstreams[0].instances[1].port = 0;
	assert_int_equal(snapshot_encode(&s, &buf, &len, err, sizeof(err)), -1);
	assert_null(buf);
	assert_non_null(strstr(err, "port"));
	s.upstreams[0].instances[1].port = 80;
	s.leaf.at = s.written_at + 1;
	assert_int_equal(snapshot_encode(&s, &buf, &len, err, sizeof(err)), -1);
	s.leaf.at = s.written_at;
	free(s.cfg.target_service_name);
	s.cfg.target_service_name = xstrdup("web\nbackend x");
	assert_int_equal(snapshot_encode(&s, &buf, &len, err, sizeof(err)), -1);
	snapshot_free(&s);
}

/* ---- files ---- */

static char tmpdir[64];

static int
setup_dir(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_snapshot.XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int
teardown_dir(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void
write_bytes(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void
test_save_load(void **state)
{
	struct certsync_snapshot s, d;
	char path[128], err[256];
	struct stat st;
	uint8_t *buf;
	size_t len;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, SNAPSHOT_FILENAME);
	assert_int_equal(snapshot_load(path, "web-sidecar-proxy", NULL, &d, err, sizeof(err)), SNAPSHOT_MISSING);
	make_state(&s);
	assert_int_equal(snapshot_save(path, &s, err, sizeof(err)), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(snapshot_load(path, "web-sidecar-proxy", NULL, &d, err, sizeof(err)), SNAPSHOT_OK);
	assert_int_equal(d.upstreams[0].instances[2].port, 21002);
	snapshot_free(&d);
	assert_int_equal(snapshot_load(path, "api-proxy", NULL, &d, err, sizeof(err)), SNAPSHOT_FOREIGN);

	/* A save that cannot happen leaves the old snapshot intact. */
	s.upstreams[0].instances[0].port = 0;
	assert_int_equal(snapshot_save(path, &s, err, sizeof(err)), -1);
	assert_int_equal(snapshot_load(path, "web-sidecar-proxy", NULL, &d, err, sizeof(err)), SNAPSHOT_OK);
	snapshot_free(&d);
	snapshot_free(&s);

	/* Truncated and garbage files. */
	encode_good(&buf, &len);
	write_bytes(path, buf, len / 2);
	assert_int_equal(snapshot_load(path, "web-sidecar-proxy", NULL, &d, err, sizeof(err)), SNAPSHOT_CORRUPT);
	write_bytes(path, "hello, world\n", 13);
	assert_int_equal(snapshot_load(path, "web-sidecar-proxy", NULL, &d, err, sizeof(err)), SNAPSHOT_CORRUPT);
	write_bytes(path, "", 0);
	assert_int_equal(snapshot_load(path, "web-sidecar-proxy", NULL, &d, err, sizeof(err)), SNAPSHOT_CORRUPT);
	free(buf);
	/* A directory where the file should be. */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(snapshot_load(path, "web-sidecar-proxy", NULL, &d, err, sizeof(err)), SNAPSHOT_IO);
	assert_int_equal(rmdir(path), 0);
}

/* A self-signed P-256 certificate valid from now-60 s for `valid` seconds (negative: already expired). */
static char *
make_pem(long valid, size_t *len)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	BIO *bio = BIO_new(BIO_s_mem());
	char *p, *out;
	long n;

	assert_non_null(k);
	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_gmtime_adj(X509_getm_notBefore(x), -7200);
	X509_gmtime_adj(X509_getm_notAfter(x), valid);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)"web",
	    -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_set_pubkey(x, k);
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	assert_int_equal(PEM_write_bio_X509(bio, x), 1);
	assert_int_equal(PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL), 1);
	n = BIO_get_mem_data(bio, &p);
	out = malloc((size_t)n + 1);
	assert_non_null(out);
	memcpy(out, p, (size_t)n);
	out[n] = '\0';
	*len = (size_t)n;
	BIO_free(bio);
	X509_free(x);
	EVP_PKEY_free(k);
	return out;
}

static void
test_check_files(void **state)
{
	struct certsync_snapshot s;
	char leaf[128], ca[128], err[256];
	char *pem, *capem;
	size_t len, calen;
	int64_t now = (int64_t)time(NULL), na;

	snprintf(leaf, sizeof(leaf), "%s/leaf.pem", tmpdir);
	snprintf(ca, sizeof(ca), "%s/ca.pem", tmpdir);
	pem = make_pem(3600, &len);
	capem = make_pem(86400, &calen);
	write_bytes(leaf, pem, len);
	write_bytes(ca, capem, calen);
	make_state(&s);
	free(s.leaf.path);
	free(s.ca.path);
	s.leaf.path = xstrdup(leaf);
	s.ca.path = xstrdup(ca);
	assert_int_equal(snapshot_hash_file(leaf, s.leaf.sha256, err, sizeof(err)), 0);
	assert_int_equal(snapshot_hash_file(ca, s.ca.sha256, err, sizeof(err)), 0);
	assert_int_equal(snapshot_pem_not_after(pem, len, &na, err, sizeof(err)), 0);
	assert_true(na > now + 3500 && na <= now + 3601);
	s.leaf_not_after = na;
	assert_int_equal(snapshot_check_files(&s, now, err, sizeof(err)), SNAPSHOT_OK);

	/* Past the recorded expiry. */
	assert_int_equal(snapshot_check_files(&s, na + 1, err, sizeof(err)), SNAPSHOT_UNUSABLE);
	assert_non_null(strstr(err, "expired"));
	/* The CA file changed. */
	capem[30] ^= 1;
	write_bytes(ca, capem, calen);
	assert_int_equal(snapshot_check_files(&s, now, err, sizeof(err)), SNAPSHOT_UNUSABLE);
	assert_non_null(strstr(err, "CA file"));
	capem[30] ^= 1;
	write_bytes(ca, capem, calen);
	assert_int_equal(snapshot_check_files(&s, now, err, sizeof(err)), SNAPSHOT_OK);
	/* The leaf file is gone. */
	assert_int_equal(unlink(leaf), 0);
	assert_int_equal(snapshot_check_files(&s, now, err, sizeof(err)), SNAPSHOT_UNUSABLE);
	/* A leaf file that matches its fingerprint but holds an expired certificate, whatever was recorded. */
	free(pem);
	pem = make_pem(-60, &len);
	write_bytes(leaf, pem, len);
	assert_int_equal(snapshot_hash_file(leaf, s.leaf.sha256, err, sizeof(err)), 0);
	assert_int_equal(snapshot_check_files(&s, now, err, sizeof(err)), SNAPSHOT_UNUSABLE);
	assert_non_null(strstr(err, "expired"));
	assert_int_equal(snapshot_pem_not_after("junk", 4, &na, err, sizeof(err)), -1);
	free(pem);
	free(capem);
	snapshot_free(&s);
}

/* The daemon's writer: written only on change, unchanged parts keep their time. */
static void
test_keeper(void **state)
{
	struct certsync_snapshot s, d;
	struct snapshot_keeper *k, *k2;
	char leaf[128], ca[128], path[128], err[256];
	char *pem, *capem;
	size_t len, calen;
	int64_t t0 = 1795001000;

	snprintf(leaf, sizeof(leaf), "%s/leaf.pem", tmpdir);
	snprintf(ca, sizeof(ca), "%s/ca.pem", tmpdir);
	snprintf(path, sizeof(path), "%s/%s", tmpdir, SNAPSHOT_FILENAME);
	pem = make_pem(3600, &len);
	capem = make_pem(86400, &calen);
	write_bytes(leaf, pem, len);
	write_bytes(ca, capem, calen);
	make_state(&s);
	free(s.leaf.path);
	free(s.ca.path);
	s.leaf.path = xstrdup(leaf);
	s.ca.path = xstrdup(ca);
	s.upstreams[0].at = 1;	/* "from an answer": the keeper sets the real time */
	k = snapshot_keeper_new(path);
	assert_non_null(k);
	assert_string_equal(snapshot_keeper_path(k), path);

	assert_int_equal(snapshot_keeper_update(k, &s, t0, err, sizeof(err)), 1);
	assert_int_equal(snapshot_load(path, "web-sidecar-proxy", NULL, &d, err, sizeof(err)), SNAPSHOT_OK);
	assert_int_equal(d.written_at, t0);
	assert_int_equal(d.cfg_at, t0);
	assert_int_equal(d.leaf.at, t0);
	assert_int_equal(d.upstreams[0].at, t0);
	assert_int_equal(d.upstreams[1].at, 0);
	assert_int_equal(snapshot_check_files(&d, t0, err, sizeof(err)), SNAPSHOT_OK);
	snapshot_free(&d);

	/* Nothing changed: nothing written. */
	assert_int_equal(snapshot_keeper_update(k, &s, t0 + 10, err, sizeof(err)), 0);
	/* An instance moved: only the upstream's time moves. */
	s.upstreams[0].instances[1].port = 29999;
	assert_int_equal(snapshot_keeper_update(k, &s, t0 + 20, err, sizeof(err)), 1);
	assert_int_equal(snapshot_load(path, "web-sidecar-proxy", NULL, &d, err, sizeof(err)), SNAPSHOT_OK);
	assert_int_equal(d.written_at, t0 + 20);
	assert_int_equal(d.upstreams[0].at, t0 + 20);
	assert_int_equal(d.upstreams[0].instances[1].port, 29999);
	assert_int_equal(d.cfg_at, t0);
	assert_int_equal(d.leaf.at, t0);
	snapshot_free(&d);
	/* The CA bundle was rewritten with other content. */
	capem[40] ^= 1;
	write_bytes(ca, capem, calen);
	assert_int_equal(snapshot_keeper_update(k, &s, t0 + 30, err, sizeof(err)), 1);
	assert_int_equal(snapshot_load(path, "web-sidecar-proxy", NULL, &d, err, sizeof(err)), SNAPSHOT_OK);
	assert_int_equal(d.ca.at, t0 + 30);
	assert_int_equal(d.leaf.at, t0);

	/* A keeper primed with what was loaded (a restart) writes nothing for the same state. */
	k2 = snapshot_keeper_new(path);
	assert_non_null(k2);
	assert_int_equal(snapshot_keeper_prime(k2, &d, err, sizeof(err)), 0);
	assert_int_equal(snapshot_keeper_update(k2, &s, t0 + 40, err, sizeof(err)), 0);
	snapshot_free(&d);
	/* A missing leaf file: an error, the last snapshot stays. */
	assert_int_equal(unlink(leaf), 0);
	s.cfg.bind_port = 21001;
	assert_int_equal(snapshot_keeper_update(k2, &s, t0 + 50, err, sizeof(err)), -1);
	assert_int_equal(snapshot_load(path, "web-sidecar-proxy", NULL, &d, err, sizeof(err)), SNAPSHOT_OK);
	assert_int_equal(d.written_at, t0 + 30);
	snapshot_free(&d);
	snapshot_keeper_free(k);
	snapshot_keeper_free(k2);
	snapshot_free(&s);
	free(pem);
	free(capem);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_truncated_everywhere),
		cmocka_unit_test(test_flipped_bytes),
		cmocka_unit_test(test_wrong_fields),
		cmocka_unit_test(test_lying_counts),
		cmocka_unit_test(test_encode_refuses_invalid),
		cmocka_unit_test_setup_teardown(test_save_load, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_check_files, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_keeper, setup_dir, teardown_dir),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
