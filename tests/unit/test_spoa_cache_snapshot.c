/*
 * test_spoa_cache_snapshot.c - connect-spoa's persisted decision cache: round trip through the
 * foreach/insert callbacks, every kind of damage (truncation at every offset, flipped bytes, wrong
 * magic/version/owner, oversized counts, invalid entries), age filtering at load, never a partial load;
 * the keeper writing in a forked writer while the loop keeps answering (held, killed, retried, at exit).
 *
 * The "cache" here is a plain array behind the two callbacks, as the real cache is behind them in
 * connect-spoa.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <math.h>

#include <ev.h>
#include <msgpack.h>

#include "atomicfile.h"
#include "cache.h"
#include "cache_snapshot.h"
#include "reseal.h"

#define NOW_MS	1795000000000LL

struct toy_entry {
	char	 target[64];
	char	 uri[128];
	char	 reason[128];
	char	 app[64];
	bool	 allow;
	int64_t	 obtained_ms;
};

struct toy_cache {
	struct toy_entry *v;
	size_t	 n;
	size_t	 cap;
	size_t	 refuse_after;	/* insert fails once n reaches this (0: never) */
	int	 walks;
	int	 grow_on_second_walk;
};

static void
toy_add(struct toy_cache *c, const char *target, const char *uri, bool allow, const char *reason,
    const char *app, int64_t at)
{
	struct toy_entry *e;

	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 16;
		c->v = realloc(c->v, c->cap * sizeof(*c->v));
		assert_non_null(c->v);
	}
	e = &c->v[c->n++];
	snprintf(e->target, sizeof(e->target), "%s", target);
	snprintf(e->uri, sizeof(e->uri), "%s", uri);
	snprintf(e->reason, sizeof(e->reason), "%s", reason);
	snprintf(e->app, sizeof(e->app), "%s", app);
	e->allow = allow;
	e->obtained_ms = at;
}

static int
toy_foreach(void *cache, dcsnap_visit_fn *visit, void *arg)
{
	struct toy_cache *c = cache;
	struct dcsnap_entry e;
	size_t i, n = c->n;

	/* A cache that lost an entry between the count pass and the write pass. */
	if (++c->walks == 2 && c->grow_on_second_walk && n > 0)
		n--;
	for (i = 0; i < n; i++) {
		e.target = c->v[i].target;
		e.caller_uri = c->v[i].uri;
		e.reason = c->v[i].reason;
		e.source_app = c->v[i].app;
		e.allow = c->v[i].allow;
		e.obtained_ms = c->v[i].obtained_ms;
		if (visit(arg, &e) == -1)
			return -1;
	}
	return 0;
}

static int
toy_insert(void *cache, const struct dcsnap_entry *e)
{
	struct toy_cache *c = cache;

	if (c->refuse_after != 0 && c->n >= c->refuse_after)
		return -1;
	toy_add(c, e->target, e->caller_uri, e->allow, e->reason, e->source_app, e->obtained_ms);
	return 0;
}

/* A cache of *(size_t *)cache generated entries "u<i>" (no storage: for the size cap). */
static int
gen_foreach(void *cache, dcsnap_visit_fn *visit, void *arg)
{
	size_t i, n = *(size_t *)cache;
	struct dcsnap_entry e;
	char uri[32];

	for (i = 0; i < n; i++) {
		snprintf(uri, sizeof(uri), "u%zu", i);
		e.target = "t";
		e.caller_uri = uri;
		e.reason = "";
		e.source_app = "";
		e.allow = i % 2 == 0;
		e.obtained_ms = NOW_MS - (int64_t)(n - i);
		if (visit(arg, &e) == -1)
			return -1;
	}
	return 0;
}

static void
toy_free(struct toy_cache *c)
{
	free(c->v);
	memset(c, 0, sizeof(*c));
}

#define URI(svc) "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/" svc

static void
toy_fill(struct toy_cache *c)
{
	memset(c, 0, sizeof(*c));
	toy_add(c, "db", URI("web"), true, "Matched intention: ALLOW default/web => default/db", "web",
	    NOW_MS - 200000);
	toy_add(c, "db", URI("evil"), false, "Matched intention: DENY default/evil => default/db", "evil",
	    NOW_MS - 100000);
	toy_add(c, "cache", URI("web"), true, "", "", NOW_MS - 1000);
	toy_add(c, "db", URI("api"), true, "ACLs disabled, access is allowed by default", "api", NOW_MS);
}

static void
encode_toy(struct toy_cache *c, uint8_t **buf, size_t *len)
{
	char err[256];
	size_t n;

	if (dcsnap_encode("db", NOW_MS, toy_foreach, c, buf, len, &n, err, sizeof(err)) != 0)
		fail_msg("encode: %s", err);
	assert_int_equal(n, c->n);
}

static void
assert_same_entries(const struct dcsnap *s, const struct toy_cache *c)
{
	size_t i;

	assert_int_equal(s->n, c->n);
	for (i = 0; i < s->n; i++) {
		assert_string_equal(s->v[i].target, c->v[i].target);
		assert_string_equal(s->v[i].caller_uri, c->v[i].uri);
		assert_string_equal(s->v[i].reason, c->v[i].reason);
		assert_string_equal(s->v[i].source_app, c->v[i].app);
		assert_int_equal(s->v[i].allow, c->v[i].allow);
		assert_int_equal(s->v[i].obtained_ms, c->v[i].obtained_ms);
	}
}

static void
test_round_trip(void **state)
{
	struct toy_cache c, empty;
	struct dcsnap s;
	uint8_t *buf;
	size_t len;
	char err[256];

	toy_fill(&c);
	encode_toy(&c, &buf, &len);
	assert_int_equal(dcsnap_decode(buf, len, "db", &s, err, sizeof(err)), DCSNAP_OK);
	assert_string_equal(s.owner, "db");
	assert_int_equal(s.written_at_ms, NOW_MS);
	assert_same_entries(&s, &c);
	dcsnap_free(&s);
	assert_int_equal(dcsnap_decode(buf, len, "api", &s, err, sizeof(err)), DCSNAP_FOREIGN);
	assert_non_null(strstr(err, "\"db\""));
	assert_int_equal(dcsnap_decode(buf, len, NULL, &s, err, sizeof(err)), DCSNAP_FOREIGN);
	free(buf);

	/* An empty cache and no owner (no -target) round-trip too. */
	memset(&empty, 0, sizeof(empty));
	assert_int_equal(dcsnap_encode(NULL, NOW_MS, toy_foreach, &empty, &buf, &len, NULL, err, sizeof(err)), 0);
	assert_int_equal(dcsnap_decode(buf, len, "", &s, err, sizeof(err)), DCSNAP_OK);
	assert_int_equal(s.n, 0);
	dcsnap_free(&s);
	free(buf);
	toy_free(&c);
}

static void
test_encode_skips_and_caps(void **state)
{
	struct toy_cache c;
	struct dcsnap s;
	uint8_t *buf;
	size_t len, n, i;
	char err[256];

	memset(&c, 0, sizeof(c));
	toy_add(&c, "", URI("web"), true, "", "", NOW_MS);			/* no target */
	toy_add(&c, "db", "", true, "", "", NOW_MS);				/* no URI */
	toy_add(&c, "db", URI("web"), true, "two\nlines", "", NOW_MS);	/* control char */
	toy_add(&c, "db", URI("web"), true, "", "", -1);			/* bad time */
	toy_add(&c, "db", URI("ok"), true, "", "ok", NOW_MS + 5000);		/* after write: clamped */
	assert_int_equal(dcsnap_encode("db", NOW_MS, toy_foreach, &c, &buf, &len, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
	assert_int_equal(dcsnap_decode(buf, len, "db", &s, err, sizeof(err)), DCSNAP_OK);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.v[0].source_app, "ok");
	assert_int_equal(s.v[0].obtained_ms, NOW_MS);
	dcsnap_free(&s);
	free(buf);
	toy_free(&c);

	/* More than the cap: the most recently used (last visited) are kept, in order. */
	n = DCSNAP_ENTRIES_MAX + 3;
	assert_int_equal(dcsnap_encode("t", NOW_MS, gen_foreach, &n, &buf, &len, &n, err, sizeof(err)), 0);
	assert_int_equal(n, DCSNAP_ENTRIES_MAX);
	assert_int_equal(dcsnap_decode(buf, len, "t", &s, err, sizeof(err)), DCSNAP_OK);
	assert_int_equal(s.n, DCSNAP_ENTRIES_MAX);
	assert_string_equal(s.v[0].caller_uri, "u3");
	assert_string_equal(s.v[s.n - 1].caller_uri, "u262146");
	for (i = 0; i < s.n; i++)
		assert_int_equal(s.v[i].allow, (i + 3) % 2 == 0);
	dcsnap_free(&s);
	free(buf);

	/* A cache that changes between the count and the write is not snapshotted half-way. */
	toy_fill(&c);
	c.grow_on_second_walk = 1;
	buf = NULL;
	assert_int_equal(dcsnap_encode("db", NOW_MS, toy_foreach, &c, &buf, &len, &n, err, sizeof(err)), -1);
	assert_null(buf);
	toy_free(&c);
}

static void
assert_empty(const struct dcsnap *s)
{
	assert_null(s->v);
	assert_null(s->strings);
	assert_null(s->owner);
	assert_int_equal(s->n, 0);
}

static void
test_truncated_and_flipped(void **state)
{
	static const uint8_t masks[] = { 0x01, 0x10, 0x80, 0xff };
	struct toy_cache c;
	struct dcsnap s;
	uint8_t *buf, *copy;
	size_t len, i, m;
	char err[256];

	toy_fill(&c);
	encode_toy(&c, &buf, &len);
	for (i = 0; i < len; i++) {
		copy = malloc(i > 0 ? i : 1);
		assert_non_null(copy);
		memcpy(copy, buf, i);
		assert_int_equal(dcsnap_decode(copy, i, "db", &s, err, sizeof(err)), DCSNAP_CORRUPT);
		assert_empty(&s);
		free(copy);
	}
	for (i = 0; i < len; i++)
		for (m = 0; m < sizeof(masks); m++) {
			buf[i] ^= masks[m];
			if (dcsnap_decode(buf, len, "db", &s, err, sizeof(err)) == DCSNAP_OK)
				fail_msg("byte %zu ^ 0x%02x accepted", i, masks[m]);
			assert_empty(&s);
			buf[i] ^= masks[m];
		}
	assert_int_equal(dcsnap_decode(buf, len, "db", &s, err, sizeof(err)), DCSNAP_OK);
	dcsnap_free(&s);
	free(buf);
	toy_free(&c);
}

/* ---- well-formed but wrong: change the unpacked tree, seal again with a correct checksum ---- */

typedef void mutate_fn(msgpack_object *top, msgpack_zone *z);

static enum dcsnap_status
decode_mutated(mutate_fn *fn, char *err, size_t errlen)
{
	struct toy_cache c;
	struct dcsnap s;
	msgpack_unpacked u;
	uint8_t *good, *bad;
	size_t len, blen, off = 0;
	enum dcsnap_status st;

	toy_fill(&c);
	encode_toy(&c, &good, &len);
	msgpack_unpacked_init(&u);
	assert_int_equal(msgpack_unpack_next(&u, (const char *)good, len, &off), MSGPACK_UNPACK_SUCCESS);
	fn(&u.data, u.zone);
	reseal(&u.data, &bad, &blen);
	st = dcsnap_decode(bad, blen, "db", &s, err, errlen);
	if (st == DCSNAP_OK)
		dcsnap_free(&s);
	else
		assert_empty(&s);
	msgpack_unpacked_destroy(&u);
	free(good);
	free(bad);
	toy_free(&c);
	return st;
}

static msgpack_object *
field(msgpack_object *top, uint32_t entry, uint32_t item)
{
	return &top->via.array.ptr[4].via.array.ptr[entry].via.array.ptr[item];
}

static void
set_str(msgpack_object *o, const char *s, size_t n)
{
	o->type = MSGPACK_OBJECT_STR;
	o->via.str.ptr = s;
	o->via.str.size = (uint32_t)n;
}

static void mut_nothing(msgpack_object *t, msgpack_zone *z) { (void)t; }
static void mut_magic(msgpack_object *t, msgpack_zone *z) { set_str(&t->via.array.ptr[0], "haproxy-connect certsync snapshot", 33); }
static void mut_version(msgpack_object *t, msgpack_zone *z) { t->via.array.ptr[1].via.u64 = 7; }
static void mut_owner(msgpack_object *t, msgpack_zone *z) { set_str(&t->via.array.ptr[2], "web", 3); }
static void mut_written_zero(msgpack_object *t, msgpack_zone *z) { t->via.array.ptr[3].via.u64 = 0; }
static void mut_entries_map(msgpack_object *t, msgpack_zone *z) { t->via.array.ptr[4].type = MSGPACK_OBJECT_NIL; }
static void mut_target_empty(msgpack_object *t, msgpack_zone *z) { set_str(field(t, 1, 0), "", 0); }
static void mut_target_long(msgpack_object *t, msgpack_zone *z)
{
	char *s = msgpack_zone_malloc(z, DCSNAP_TARGET_MAX + 1);

	memset(s, 'd', DCSNAP_TARGET_MAX + 1);
	set_str(field(t, 1, 0), s, DCSNAP_TARGET_MAX + 1);
}
static void mut_uri_nul(msgpack_object *t, msgpack_zone *z) { set_str(field(t, 0, 1), "spiffe://x\0/svc/web", 19); }
static void mut_reason_ctl(msgpack_object *t, msgpack_zone *z) { set_str(field(t, 2, 3), "a\rb", 3); }
static void mut_allow_int(msgpack_object *t, msgpack_zone *z)
{
	field(t, 1, 2)->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
	field(t, 1, 2)->via.u64 = 1;
}
static void mut_time_after_write(msgpack_object *t, msgpack_zone *z) { field(t, 3, 5)->via.u64 = NOW_MS + 1; }
static void mut_time_negative(msgpack_object *t, msgpack_zone *z)
{
	field(t, 3, 5)->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
	field(t, 3, 5)->via.i64 = -1;
}
static void mut_entry_short(msgpack_object *t, msgpack_zone *z) { t->via.array.ptr[4].via.array.ptr[2].via.array.size = 5; }
static void mut_too_many(msgpack_object *t, msgpack_zone *z)
{
	msgpack_object *arr = &t->via.array.ptr[4];
	msgpack_object *v = msgpack_zone_malloc(z, (DCSNAP_ENTRIES_MAX + 1) * sizeof(*v));
	uint32_t i;

	for (i = 0; i < DCSNAP_ENTRIES_MAX + 1; i++)
		v[i] = arr->via.array.ptr[i % 4];
	arr->via.array.ptr = v;
	arr->via.array.size = DCSNAP_ENTRIES_MAX + 1;
}

static void
test_wrong_fields(void **state)
{
	static const struct {
		const char		*name;
		mutate_fn		*fn;
		enum dcsnap_status	 want;
	} cases[] = {
		{ "unchanged", mut_nothing, DCSNAP_OK },
		{ "magic", mut_magic, DCSNAP_CORRUPT },
		{ "version 7", mut_version, DCSNAP_VERSION_UNKNOWN },
		{ "owner", mut_owner, DCSNAP_FOREIGN },
		{ "written_at 0", mut_written_zero, DCSNAP_CORRUPT },
		{ "entries not an array", mut_entries_map, DCSNAP_CORRUPT },
		{ "empty target", mut_target_empty, DCSNAP_CORRUPT },
		{ "target too long", mut_target_long, DCSNAP_CORRUPT },
		{ "NUL in URI", mut_uri_nul, DCSNAP_CORRUPT },
		{ "CR in reason", mut_reason_ctl, DCSNAP_CORRUPT },
		{ "decision not a bool", mut_allow_int, DCSNAP_CORRUPT },
		{ "obtained after the write", mut_time_after_write, DCSNAP_CORRUPT },
		{ "obtained < 0", mut_time_negative, DCSNAP_CORRUPT },
		{ "entry of 5 items", mut_entry_short, DCSNAP_CORRUPT },
		{ "too many entries", mut_too_many, DCSNAP_CORRUPT },
	};
	char err[256];
	size_t i;
	enum dcsnap_status st;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		st = decode_mutated(cases[i].fn, err, sizeof(err));
		if (st != cases[i].want)
			fail_msg("%s: %s (%s), want %s", cases[i].name, dcsnap_status_str(st), err,
			    dcsnap_status_str(cases[i].want));
		if (st != DCSNAP_OK && err[0] == '\0')
			fail_msg("%s: no error text", cases[i].name);
	}
}

static void
test_lying_counts(void **state)
{
	static const uint8_t bombs[][8] = {
		{ 0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0 },
		{ 0x96, 0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0 },
		{ 0x96, 0xdb, 0xff, 0xff, 0xff, 0xf0, 0x41 },
		{ 0xc6, 0x7f, 0xff, 0xff, 0xff, 0x00 },
		{ 0xd4, 0x01, 0x00 },
	};
	uint8_t deep[64];
	struct dcsnap s;
	char err[256];
	size_t i;

	for (i = 0; i < sizeof(bombs) / sizeof(bombs[0]); i++)
		assert_int_equal(dcsnap_decode(bombs[i], sizeof(bombs[i]), "db", &s, err, sizeof(err)),
		    DCSNAP_CORRUPT);
	memset(deep, 0x91, sizeof(deep));
	deep[sizeof(deep) - 1] = 0xc0;
	assert_int_equal(dcsnap_decode(deep, sizeof(deep), "db", &s, err, sizeof(err)), DCSNAP_CORRUPT);
}

/* ---- files ---- */

static char tmpdir[64];

static int
setup_dir(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_dcsnap.XXXXXX");
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
test_save_load(void **state)
{
	struct toy_cache c, r;
	char path[128], err[256];
	struct stat st;
	size_t n, restored, dropped;
	int64_t age;
	FILE *f;

	snprintf(path, sizeof(path), "%s/decisions.snapshot", tmpdir);
	memset(&r, 0, sizeof(r));
	assert_int_equal(dcsnap_load(path, "db", NOW_MS, 300000, toy_insert, &r, &restored, &dropped, &age, err,
	    sizeof(err)), DCSNAP_MISSING);
	toy_fill(&c);
	assert_int_equal(dcsnap_save(path, "db", NOW_MS, toy_foreach, &c, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 4);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);

	/* Everything young enough comes back, in order. */
	assert_int_equal(dcsnap_load(path, "db", NOW_MS + 5000, 300000, toy_insert, &r, &restored, &dropped,
	    &age, err, sizeof(err)), DCSNAP_OK);
	assert_int_equal(restored, 4);
	assert_int_equal(dropped, 0);
	assert_int_equal(age, 5000);
	assert_int_equal(r.n, 4);
	assert_string_equal(r.v[0].uri, URI("web"));
	assert_int_equal(r.v[0].obtained_ms, NOW_MS - 200000);
	assert_false(r.v[1].allow);
	toy_free(&r);

	/* 150 s later with a 300 s stale-if-error window: the entry obtained 200 s before the save is gone. */
	assert_int_equal(dcsnap_load(path, "db", NOW_MS + 150000, 300000, toy_insert, &r, &restored, &dropped,
	    NULL, err, sizeof(err)), DCSNAP_OK);
	assert_int_equal(restored, 3);
	assert_int_equal(dropped, 1);
	assert_string_equal(r.v[0].uri, URI("evil"));
	toy_free(&r);

	/* The clock went back 30 s: entries from "the future" are not trusted; within 1 s they count as now. */
	assert_int_equal(dcsnap_load(path, "db", NOW_MS - 500, 300000, toy_insert, &r, &restored, &dropped,
	    NULL, err, sizeof(err)), DCSNAP_OK);
	assert_int_equal(restored, 4);
	assert_int_equal(r.v[3].obtained_ms, NOW_MS - 500);
	toy_free(&r);
	assert_int_equal(dcsnap_load(path, "db", NOW_MS - 30000, 300000, toy_insert, &r, &restored, &dropped,
	    NULL, err, sizeof(err)), DCSNAP_OK);
	assert_int_equal(restored, 2);
	assert_int_equal(dropped, 2);
	toy_free(&r);

	/* A full cache refuses inserts: counted as dropped. */
	r.refuse_after = 2;
	assert_int_equal(dcsnap_load(path, "db", NOW_MS, 300000, toy_insert, &r, &restored, &dropped, NULL, err,
	    sizeof(err)), DCSNAP_OK);
	assert_int_equal(restored, 2);
	assert_int_equal(dropped, 2);
	toy_free(&r);

	/* Another target's file: nothing inserted. */
	assert_int_equal(dcsnap_load(path, "web", NOW_MS, 300000, toy_insert, &r, &restored, &dropped, NULL, err,
	    sizeof(err)), DCSNAP_FOREIGN);
	assert_int_equal(r.n, 0);

	/* Truncated on disk: nothing inserted, not even the entries before the damage. */
	assert_int_equal(truncate(path, (off_t)(st.st_size - 40)), 0);
	assert_int_equal(dcsnap_load(path, "db", NOW_MS, 300000, toy_insert, &r, &restored, &dropped, NULL, err,
	    sizeof(err)), DCSNAP_CORRUPT);
	assert_int_equal(r.n, 0);
	assert_int_equal(restored, 0);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("{\"not\": \"msgpack\"}\n", f);
	fclose(f);
	assert_int_equal(dcsnap_load(path, "db", NOW_MS, 300000, toy_insert, &r, &restored, &dropped, NULL, err,
	    sizeof(err)), DCSNAP_CORRUPT);
	assert_int_equal(r.n, 0);
	/* A directory in the way: unreadable, and a save there fails without harm. */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(dcsnap_load(path, "db", NOW_MS, 300000, toy_insert, &r, &restored, &dropped, NULL, err,
	    sizeof(err)), DCSNAP_IO);
	assert_int_equal(dcsnap_save(path, "db", NOW_MS, toy_foreach, &c, &n, err, sizeof(err)), -1);
	assert_int_equal(rmdir(path), 0);
	toy_free(&c);
}

static double
mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The glue over the real spoa/cache.h: ages and LRU order survive a save and a load into a new cache. */
static void
test_real_cache(void **state)
{
	struct cache *a, *b;
	struct cache_entry *e;
	char path[128], err[256];
	size_t n, restored, dropped;
	double now = mono();
	const char *uris[] = { URI("old"), URI("web"), URI("evil"), URI("api") };
	size_t i;

	snprintf(path, sizeof(path), "%s/decisions.snapshot", tmpdir);
	a = cache_new(16, err, sizeof(err));
	b = cache_new(3, err, sizeof(err));
	assert_non_null(a);
	assert_non_null(b);
	/* Stored oldest first: "old" is the least recently used, obtained 400 s ago. */
	assert_int_equal(cache_store(a, "db", 2, uris[0], strlen(uris[0]), true, "r0", "old", now - 400), 0);
	assert_int_equal(cache_store(a, "db", 2, uris[1], strlen(uris[1]), true, "r1", "web", now - 100), 0);
	assert_int_equal(cache_store(a, "db", 2, uris[2], strlen(uris[2]), false, "r2", "evil", now - 50), 0);
	assert_int_equal(cache_store(a, "db", 2, uris[3], strlen(uris[3]), true, "", "", now - 10), 0);
	assert_int_equal(cache_changes(a), 4);
	{
		struct timespec ts;
		int64_t wall;

		clock_gettime(CLOCK_REALTIME, &ts);
		wall = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + 1;
		assert_int_equal(dcsnap_save(path, "db", wall, dcsnap_cache_foreach, a, &n, err, sizeof(err)), 0);
		assert_int_equal(n, 4);
		/* Into a cache of 3 with a 300 s window: "old" is dropped, the rest keep order and age. */
		assert_int_equal(dcsnap_load(path, "db", wall, 300000, dcsnap_cache_insert, b, &restored,
		    &dropped, NULL, err, sizeof(err)), DCSNAP_OK);
	}
	assert_int_equal(restored, 3);
	assert_int_equal(dropped, 1);
	assert_int_equal(cache_count(b), 3);
	assert_null(cache_lookup(b, "db", 2, uris[0], strlen(uris[0])));
	for (i = 1; i < 4; i++) {
		e = cache_lookup(b, "db", 2, uris[i], strlen(uris[i]));
		assert_non_null(e);
	}
	e = cache_lookup(b, "db", 2, uris[2], strlen(uris[2]));
	assert_false(e->allow);
	assert_string_equal(e->reason, "r2");
	assert_string_equal(e->source_app, "evil");
	assert_true(fabs((mono() - e->obtained) - 50.0) < 2.0);
	/* Within stale-if-error 300 s, outside a 60 s TTL: usable only while the agent fails. */
	assert_int_equal(cache_classify(e, mono(), 60, 300), CACHE_FRESH);
	e = cache_lookup(b, "db", 2, uris[1], strlen(uris[1]));
	assert_int_equal(cache_classify(e, mono(), 60, 300), CACHE_STALE);
	assert_int_equal(cache_classify(e, mono(), 60, 90), CACHE_EXPIRED);
	cache_free(a);
	cache_free(b);
}

/* ---- the keeper: writes in a forked writer, the loop keeps answering ---------------------------- */

/* The state letter of /proc/<pid>/stat ('T' stopped, 'Z' zombie...), or 0 when no such process. */
static char
proc_state(pid_t pid)
{
	char path[64], buf[512], *p;
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	if ((p = strrchr(buf, ')')) == NULL || p[1] != ' ')
		return 0;
	return p[2];
}

struct kt {
	struct ev_loop		*loop;
	struct dcsnap_keeper	*k;
	struct dcsnap_keeper_stats st;
	ev_io			 echo;		/* a peer the loop answers, like an SPOE connection */
	int			 sv[2];
	uint64_t		 answered;
};

static void
kt_echo_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct kt *t = w->data;
	char b[64];
	ssize_t n = read(w->fd, b, sizeof(b));

	if (n > 0 && write(w->fd, b, (size_t)n) == n)
		t->answered++;
}

static void
kt_wake_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
}

/* Runs the loop until pred holds; a bound on iterations (each at most 5 ms long), not a time assert. */
static bool
kt_run_until(struct kt *t, bool (*pred)(struct kt *t, void *arg), void *arg)
{
	ev_timer wake;
	int i;
	bool ok = false;

	ev_timer_init(&wake, kt_wake_cb, 0.005, 0.005);
	ev_timer_start(t->loop, &wake);
	for (i = 0; i < 6000; i++) {
		dcsnap_keeper_stats(t->k, &t->st);
		if ((ok = pred(t, arg)))
			break;
		ev_run(t->loop, EVRUN_ONCE);
	}
	ev_timer_stop(t->loop, &wake);
	return ok;
}

static bool
writer_stopped(struct kt *t, void *arg)
{
	const uint64_t *started = arg;

	return t->st.started == *started && t->st.writer != 0 && proc_state(t->st.writer) == 'T';
}

static bool
writes_reach(struct kt *t, void *arg)
{
	return t->st.writes == *(const uint64_t *)arg;
}

static bool
failures_reach(struct kt *t, void *arg)
{
	return t->st.failures == *(const uint64_t *)arg;
}

static bool
deferred_3(struct kt *t, void *arg)
{
	return t->st.deferred >= 3;
}

static bool
echo_answered(struct kt *t, void *arg)
{
	char b[8];

	return read(t->sv[0], b, sizeof(b)) == 4 && memcmp(b, "ping", 4) == 0;
}

static void
add_apps(struct cache *c, int from, int to)
{
	char uri[128];
	int i;

	for (i = from; i < to; i++) {
		snprintf(uri, sizeof(uri), "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/"
		    "dc1/svc/app-%d", i);
		assert_int_equal(cache_store(c, "db", 2, uri, strlen(uri), i % 7 != 0, "Matched L4 intention",
		    "app", mono() - 10), 0);
	}
}

/* Entries a fresh cache gets from the file at path. */
static size_t
load_count(const char *path)
{
	struct cache *b;
	size_t restored = 0, dropped = 0;
	char err[256];
	struct timespec ts;

	b = cache_new(100000, err, sizeof(err));
	assert_non_null(b);
	clock_gettime(CLOCK_REALTIME, &ts);
	assert_int_equal(dcsnap_load(path, "db", (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, 300000,
	    dcsnap_cache_insert, b, &restored, &dropped, NULL, err, sizeof(err)), DCSNAP_OK);
	assert_int_equal(dropped, 0);
	assert_int_equal(cache_count(b), restored);
	cache_free(b);
	return restored;
}

static char *
slurp(const char *path, size_t *len)
{
	char *data, err[256];

	assert_int_equal(read_file_capped(path, DCSNAP_FILE_MAX, &data, len, err, sizeof(err)), 0);
	return data;
}

static void
test_keeper_background(void **state)
{
	struct kt t;
	struct cache *c;
	char path[128], stale[160], err[256], *before, *after;
	size_t blen, alen;
	uint64_t want;
	pid_t pid1, pid2, pid4;
	int i, status;
	FILE *f;

	memset(&t, 0, sizeof(t));
	snprintf(path, sizeof(path), "%s/decisions.snapshot", tmpdir);
	t.loop = EV_DEFAULT;
	c = cache_new(4096, err, sizeof(err));
	assert_non_null(c);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, t.sv), 0);
	ev_io_init(&t.echo, kt_echo_cb, t.sv[1], EV_READ);
	t.echo.data = &t;
	ev_io_start(t.loop, &t.echo);

	/* Every writer stops itself before writing: a write as slow as the test wants. */
	assert_int_equal(setenv(DCSNAP_TEST_STOP_ENV, "1", 1), 0);
	t.k = dcsnap_keeper_new(t.loop, c, path, "db", 300, 0.02);
	assert_int_equal(unsetenv(DCSNAP_TEST_STOP_ENV), 0);
	assert_non_null(t.k);
	add_apps(c, 0, 2000);	/* what the keeper loaded counts as written: these are changes */
	want = 1;
	assert_true(kt_run_until(&t, writer_stopped, &want));
	pid1 = t.st.writer;

	/* While it is held, the loop answers its peer, again and again, and the cache keeps changing. */
	for (i = 0; i < 20; i++) {
		assert_int_equal(write(t.sv[0], "ping", 4), 4);
		assert_true(kt_run_until(&t, echo_answered, NULL));
	}
	assert_int_equal(t.answered, 20);
	add_apps(c, 2000, 2010);
	assert_true(kt_run_until(&t, deferred_3, NULL));
	/* ... and never starts a second writer: the same one is still held, nothing written yet. */
	assert_int_equal(t.st.started, 1);
	assert_int_equal(t.st.writer, pid1);
	assert_int_equal(proc_state(pid1), 'T');
	assert_int_equal(access(path, F_OK), -1);

	/* Let it go: the file holds the cache as it was at the fork, whole, and the writer is reaped. */
	assert_int_equal(kill(pid1, SIGCONT), 0);
	want = 1;
	assert_true(kt_run_until(&t, writes_reach, &want));
	assert_int_equal(t.st.failures, 0);
	assert_int_equal(proc_state(pid1), 0);
	assert_int_equal(load_count(path), 2000);

	/* The change made during that write is written next: kill that writer mid-way. The old file stays
	 * as it was, a temp file left by the killed writer is removed, and the writer is reaped. */
	want = 2;
	assert_true(kt_run_until(&t, writer_stopped, &want));
	pid2 = t.st.writer;
	assert_true(pid2 != pid1);
	before = slurp(path, &blen);
	snprintf(stale, sizeof(stale), "%s.tmp.Ab12Cd", path);
	f = fopen(stale, "w");
	assert_non_null(f);
	fputs("half a snapshot", f);
	fclose(f);
	assert_int_equal(kill(pid2, SIGKILL), 0);
	want = 1;
	assert_true(kt_run_until(&t, failures_reach, &want));
	assert_int_equal(proc_state(pid2), 0);
	assert_int_equal(access(stale, F_OK), -1);
	after = slurp(path, &alen);
	assert_int_equal(alen, blen);
	assert_memory_equal(after, before, blen);
	free(before);
	free(after);

	/* The next tick retries, and this time the write completes. */
	want = 3;
	assert_true(kt_run_until(&t, writer_stopped, &want));
	assert_int_equal(kill(t.st.writer, SIGCONT), 0);
	want = 2;
	assert_true(kt_run_until(&t, writes_reach, &want));
	assert_int_equal(load_count(path), 2010);

	/* At exit a held writer is killed and reaped, and the last save is done on the spot. */
	add_apps(c, 2010, 2015);
	want = 4;
	assert_true(kt_run_until(&t, writer_stopped, &want));
	pid4 = t.st.writer;
	dcsnap_keeper_free(t.k);
	assert_int_equal(proc_state(pid4), 0);
	assert_int_equal(load_count(path), 2015);
	/* No child of ours left, running or zombie. */
	assert_int_equal(waitpid(-1, &status, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);

	ev_io_stop(t.loop, &t.echo);
	close(t.sv[0]);
	close(t.sv[1]);
	cache_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_encode_skips_and_caps),
		cmocka_unit_test(test_truncated_and_flipped),
		cmocka_unit_test(test_wrong_fields),
		cmocka_unit_test(test_lying_counts),
		cmocka_unit_test_setup_teardown(test_save_load, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_real_cache, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_keeper_background, setup_dir, teardown_dir),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
