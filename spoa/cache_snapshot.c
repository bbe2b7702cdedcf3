/*
 * cache_snapshot.c - see cache_snapshot.h.
 *
 * Decoding runs in three steps, each refusing what the next could not handle safely:
 *   1. a cursor walk over the raw bytes (every length checked against what is left, array and map
 *      counts no larger than the bytes left, nesting capped, exactly one object filling the buffer), so
 *      that msgpack-c never allocates for counts a damaged file claims;
 *   2. msgpack_unpack_next into a zone;
 *   3. every entry checked, then copied into one allocation; nothing reaches the cache unless all of
 *      the file is valid.
 * (certsync/snapshot.c has the same envelope; the two daemons share no object files but lib/.)
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <ev.h>
#include <msgpack.h>
#include <openssl/evp.h>

#include "atomicfile.h"
#include "cache.h"
#include "cache_snapshot.h"
#include "log.h"
#include "metrics.h"

#define MP_DEPTH_MAX	4
#define TOP_ITEMS	6
#define ENTRY_ITEMS	6
#define TIME_MAX_MS	((int64_t)1 << 50)	/* far beyond any real time, far from overflow */

/* ---- step 1: structural check of the raw bytes ---------------------------------------------- */

struct mpcur {
	const uint8_t	*b;
	size_t		 len;
	size_t		 off;
};

/* Reads an n-byte big-endian unsigned; -1 when fewer than n bytes are left. */
static int
cur_be(struct mpcur *c, size_t n, uint64_t *v)
{
	size_t i;

	if (c->len - c->off < n)
		return -1;
	*v = 0;
	for (i = 0; i < n; i++)
		*v = (*v << 8) | c->b[c->off + i];
	c->off += n;
	return 0;
}

/* Skips one msgpack object (no ext types) at the cursor. 0, or -1 when malformed or truncated. */
static int
mp_skip(struct mpcur *c, int depth)
{
	uint64_t n = 0, i;
	uint8_t t;

	if (depth > MP_DEPTH_MAX || c->len - c->off < 1)
		return -1;
	t = c->b[c->off++];
	if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3)
		return 0;
	if ((t & 0xf0) == 0x80) {
		n = 2u * (t & 0x0fu);
		goto items;
	}
	if ((t & 0xf0) == 0x90) {
		n = t & 0x0fu;
		goto items;
	}
	if ((t & 0xe0) == 0xa0) {
		n = t & 0x1fu;
		goto bytes;
	}
	switch (t) {
	case 0xc4: case 0xd9: if (cur_be(c, 1, &n) == -1) return -1; goto bytes;
	case 0xc5: case 0xda: if (cur_be(c, 2, &n) == -1) return -1; goto bytes;
	case 0xc6: case 0xdb: if (cur_be(c, 4, &n) == -1) return -1; goto bytes;
	case 0xcc: case 0xd0: n = 1; goto bytes;
	case 0xcd: case 0xd1: n = 2; goto bytes;
	case 0xca: case 0xce: case 0xd2: n = 4; goto bytes;
	case 0xcb: case 0xcf: case 0xd3: n = 8; goto bytes;
	case 0xdc: if (cur_be(c, 2, &n) == -1) return -1; goto items;
	case 0xdd: if (cur_be(c, 4, &n) == -1) return -1; goto items;
	case 0xde: if (cur_be(c, 2, &n) == -1) return -1; n *= 2; goto items;
	case 0xdf: if (cur_be(c, 4, &n) == -1) return -1; n *= 2; goto items;
	default:
		return -1;	/* 0xc1 (never used) and the ext types */
	}
bytes:
	if (c->len - c->off < n)
		return -1;
	c->off += (size_t)n;
	return 0;
items:
	/* Every item takes at least one byte: a count beyond the bytes left is a lie. */
	if (n > c->len - c->off)
		return -1;
	for (i = 0; i < n; i++)
		if (mp_skip(c, depth + 1) == -1)
			return -1;
	return 0;
}

/* Offset of item idx of the (already checked) top-level array. */
static size_t
top_item_offset(const uint8_t *b, size_t len, size_t idx)
{
	struct mpcur c = { b, len, 1 };
	uint64_t n;
	size_t i;

	if (b[0] == 0xdc)
		(void)cur_be(&c, 2, &n);
	else if (b[0] == 0xdd)
		(void)cur_be(&c, 4, &n);
	for (i = 0; i < idx; i++)
		(void)mp_skip(&c, 1);
	return c.off;
}

static int
sha256(const void *data, size_t len, uint8_t out[32])
{
	unsigned int n = 0;

	if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != 32)
		return -1;
	return 0;
}

/* ---- entry rules, shared by encoder and decoder ---------------------------------------------- */

static bool
text_ok(const char *s, size_t n, size_t min, size_t max)
{
	size_t i;

	if (n < min || n > max)
		return false;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch < 0x20 || ch == 0x7f)
			return false;
	}
	return true;
}

static bool
cstr_ok(const char *s, size_t min, size_t max)
{
	return s != NULL && text_ok(s, strnlen(s, max + 1), min, max);
}

bool
dcsnap_entry_valid(const struct dcsnap_entry *e)
{
	return cstr_ok(e->target, 1, DCSNAP_TARGET_MAX) && cstr_ok(e->caller_uri, 1, DCSNAP_URI_MAX) &&
	    cstr_ok(e->reason, 0, DCSNAP_REASON_MAX) && cstr_ok(e->source_app, 0, DCSNAP_APP_MAX) &&
	    e->obtained_ms >= 0 && e->obtained_ms <= TIME_MAX_MS;
}

static bool
mp_text_ok(const msgpack_object *o, size_t min, size_t max)
{
	return o->type == MSGPACK_OBJECT_STR && text_ok(o->via.str.ptr, o->via.str.size, min, max);
}

static bool
mp_time(const msgpack_object *o, int64_t lo, int64_t hi, int64_t *out)
{
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > (uint64_t)hi ||
	    (int64_t)o->via.u64 < lo)
		return false;
	*out = (int64_t)o->via.u64;
	return true;
}

/* ---- encoding ---------------------------------------------------------------------------------- */

struct enc {
	msgpack_packer	*pk;
	int64_t		 written_at_ms;
	size_t		 seen;		/* valid entries visited */
	size_t		 skip;		/* valid entries to leave out (the least recently used) */
	size_t		 written;
	int		 rc;
};

static int
count_visit(void *arg, const struct dcsnap_entry *e)
{
	struct enc *x = arg;

	if (dcsnap_entry_valid(e))
		x->seen++;
	return 0;
}

static int
pk_cstr(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	if (msgpack_pack_str(pk, n) != 0)
		return -1;
	return msgpack_pack_str_body(pk, s, n);
}

static int
pack_visit(void *arg, const struct dcsnap_entry *e)
{
	struct enc *x = arg;
	msgpack_packer *pk = x->pk;
	int64_t at;
	int rc = 0;

	if (!dcsnap_entry_valid(e))
		return 0;
	if (x->seen++ < x->skip)
		return 0;
	at = e->obtained_ms <= x->written_at_ms ? e->obtained_ms : x->written_at_ms;
	rc |= msgpack_pack_array(pk, ENTRY_ITEMS);
	rc |= pk_cstr(pk, e->target);
	rc |= pk_cstr(pk, e->caller_uri);
	rc |= e->allow ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
	rc |= pk_cstr(pk, e->reason);
	rc |= pk_cstr(pk, e->source_app);
	rc |= msgpack_pack_int64(pk, at);
	if (rc != 0) {
		x->rc = -1;
		return -1;
	}
	x->written++;
	return 0;
}

int
dcsnap_encode(const char *owner, int64_t written_at_ms, dcsnap_foreach_fn *foreach, void *cache,
    uint8_t **out, size_t *outlen, size_t *nwritten, char *err, size_t errlen)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	struct enc x;
	uint8_t digest[32];
	size_t count;
	int rc = 0;

	*out = NULL;
	*outlen = 0;
	if (owner == NULL)
		owner = "";
	if (!cstr_ok(owner, 0, DCSNAP_TARGET_MAX) || written_at_ms < 1 || written_at_ms > TIME_MAX_MS) {
		snprintf(err, errlen, "bad owner or time for a decision snapshot");
		return -1;
	}
	memset(&x, 0, sizeof(x));
	if (foreach(cache, count_visit, &x) == -1) {
		snprintf(err, errlen, "cache walk failed");
		return -1;
	}
	count = x.seen < DCSNAP_ENTRIES_MAX ? x.seen : DCSNAP_ENTRIES_MAX;
	x.skip = x.seen - count;
	x.seen = 0;
	x.written_at_ms = written_at_ms;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	x.pk = &pk;
	rc |= msgpack_pack_array(&pk, TOP_ITEMS);
	rc |= pk_cstr(&pk, DCSNAP_MAGIC);
	rc |= msgpack_pack_uint32(&pk, DCSNAP_VERSION);
	rc |= pk_cstr(&pk, owner);
	rc |= msgpack_pack_int64(&pk, written_at_ms);
	rc |= msgpack_pack_array(&pk, count);
	if (rc != 0 || foreach(cache, pack_visit, &x) == -1 || x.rc != 0) {
		snprintf(err, errlen, "out of memory or cache walk failed");
		goto fail;
	}
	if (x.written != count) {
		snprintf(err, errlen, "the cache changed during the walk (%zu entries, then %zu)", count,
		    x.written);
		goto fail;
	}
	if (sha256(sb.data, sb.size, digest) == -1 || msgpack_pack_bin(&pk, 32) != 0 ||
	    msgpack_pack_bin_body(&pk, digest, 32) != 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (sb.size > DCSNAP_FILE_MAX) {
		snprintf(err, errlen, "snapshot of %zu bytes exceeds %u", sb.size, DCSNAP_FILE_MAX);
		goto fail;
	}
	if (nwritten != NULL)
		*nwritten = count;
	*outlen = sb.size;
	*out = (uint8_t *)msgpack_sbuffer_release(&sb);
	return 0;
fail:
	msgpack_sbuffer_destroy(&sb);
	return -1;
}

/* ---- decoding ---------------------------------------------------------------------------------- */

void
dcsnap_free(struct dcsnap *s)
{
	if (s == NULL)
		return;
	free(s->owner);
	free(s->v);
	free(s->strings);
	memset(s, 0, sizeof(*s));
}

/* Checks entry i; adds the bytes its strings need (with their NULs) to *need. */
static int
check_entry(const msgpack_object *o, uint32_t i, int64_t written_at, size_t *need, char *err, size_t errlen)
{
	const msgpack_object *f;
	int64_t at;

	if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != ENTRY_ITEMS) {
		snprintf(err, errlen, "entry %u: expected an array of %d items", i, ENTRY_ITEMS);
		return -1;
	}
	f = o->via.array.ptr;
	if (!mp_text_ok(&f[0], 1, DCSNAP_TARGET_MAX)) {
		snprintf(err, errlen, "entry %u: bad target", i);
		return -1;
	}
	if (!mp_text_ok(&f[1], 1, DCSNAP_URI_MAX)) {
		snprintf(err, errlen, "entry %u: bad caller URI", i);
		return -1;
	}
	if (f[2].type != MSGPACK_OBJECT_BOOLEAN) {
		snprintf(err, errlen, "entry %u: decision is not a bool", i);
		return -1;
	}
	if (!mp_text_ok(&f[3], 0, DCSNAP_REASON_MAX)) {
		snprintf(err, errlen, "entry %u: bad reason", i);
		return -1;
	}
	if (!mp_text_ok(&f[4], 0, DCSNAP_APP_MAX)) {
		snprintf(err, errlen, "entry %u: bad source_app", i);
		return -1;
	}
	if (!mp_time(&f[5], 0, written_at, &at)) {
		snprintf(err, errlen, "entry %u: obtained time not in 0..written_at", i);
		return -1;
	}
	*need += (size_t)f[0].via.str.size + f[1].via.str.size + f[3].via.str.size + f[4].via.str.size + 4;
	return 0;
}

static const char *
copy_str(char **p, const msgpack_object *o)
{
	char *s = *p;

	memcpy(s, o->via.str.ptr, o->via.str.size);
	s[o->via.str.size] = '\0';
	*p += o->via.str.size + 1;
	return s;
}

enum dcsnap_status
dcsnap_decode(const uint8_t *buf, size_t len, const char *expect_owner, struct dcsnap *out, char *err,
    size_t errlen)
{
	struct mpcur cur = { buf, len, 0 };
	struct dcsnap tmp;
	msgpack_unpacked u;
	const msgpack_object *top, *ents, *own;
	enum dcsnap_status st = DCSNAP_CORRUPT;
	uint8_t want[32];
	size_t off = 0, need = 0, doff;
	uint32_t i;
	char *p;

	memset(out, 0, sizeof(*out));
	memset(&tmp, 0, sizeof(tmp));
	if (expect_owner == NULL)
		expect_owner = "";
	if (buf == NULL || len == 0) {
		snprintf(err, errlen, "empty");
		return DCSNAP_CORRUPT;
	}
	if (len > DCSNAP_FILE_MAX) {
		snprintf(err, errlen, "%zu bytes exceed %u", len, DCSNAP_FILE_MAX);
		return DCSNAP_CORRUPT;
	}
	if ((buf[0] & 0xf0) != 0x90 && buf[0] != 0xdc && buf[0] != 0xdd) {
		snprintf(err, errlen, "not a connect-spoa decision snapshot (no msgpack array)");
		return DCSNAP_CORRUPT;
	}
	if (mp_skip(&cur, 0) == -1) {
		snprintf(err, errlen, "truncated or malformed msgpack (%zu bytes)", len);
		return DCSNAP_CORRUPT;
	}
	if (cur.off != len) {
		snprintf(err, errlen, "%zu bytes of trailing data", len - cur.off);
		return DCSNAP_CORRUPT;
	}
	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, (const char *)buf, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len) {
		snprintf(err, errlen, "msgpack decoding failed");
		goto done;
	}
	top = &u.data;
	if (top->type != MSGPACK_OBJECT_ARRAY || top->via.array.size < 2 ||
	    top->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
	    top->via.array.ptr[0].via.str.size != strlen(DCSNAP_MAGIC) ||
	    memcmp(top->via.array.ptr[0].via.str.ptr, DCSNAP_MAGIC, strlen(DCSNAP_MAGIC)) != 0) {
		snprintf(err, errlen, "not a connect-spoa decision snapshot (bad magic)");
		goto done;
	}
	if (top->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
	    top->via.array.ptr[1].via.u64 != DCSNAP_VERSION) {
		if (top->via.array.ptr[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
			snprintf(err, errlen, "format version %llu, this build reads version %d",
			    (unsigned long long)top->via.array.ptr[1].via.u64, DCSNAP_VERSION);
		else
			snprintf(err, errlen, "format version is not an integer");
		st = DCSNAP_VERSION_UNKNOWN;
		goto done;
	}
	if (top->via.array.size != TOP_ITEMS) {
		snprintf(err, errlen, "%u header items, expected %d", top->via.array.size, TOP_ITEMS);
		goto done;
	}
	doff = top_item_offset(buf, len, TOP_ITEMS - 1);
	if (top->via.array.ptr[5].type != MSGPACK_OBJECT_BIN || top->via.array.ptr[5].via.bin.size != 32 ||
	    sha256(buf, doff, want) == -1 || memcmp(want, top->via.array.ptr[5].via.bin.ptr, 32) != 0) {
		snprintf(err, errlen, "checksum mismatch");
		goto done;
	}
	own = &top->via.array.ptr[2];
	if (!mp_text_ok(own, 0, DCSNAP_TARGET_MAX)) {
		snprintf(err, errlen, "bad owner");
		goto done;
	}
	if (own->via.str.size != strlen(expect_owner) ||
	    memcmp(own->via.str.ptr, expect_owner, own->via.str.size) != 0) {
		snprintf(err, errlen, "decisions of the connect-spoa for target \"%.*s\", not \"%s\"",
		    (int)own->via.str.size, own->via.str.ptr, expect_owner);
		st = DCSNAP_FOREIGN;
		goto done;
	}
	if (!mp_time(&top->via.array.ptr[3], 1, TIME_MAX_MS, &tmp.written_at_ms)) {
		snprintf(err, errlen, "bad written-at time");
		goto done;
	}
	ents = &top->via.array.ptr[4];
	if (ents->type != MSGPACK_OBJECT_ARRAY || ents->via.array.size > DCSNAP_ENTRIES_MAX) {
		snprintf(err, errlen, "entries: not an array of at most %u", DCSNAP_ENTRIES_MAX);
		goto done;
	}
	for (i = 0; i < ents->via.array.size; i++)
		if (check_entry(&ents->via.array.ptr[i], i, tmp.written_at_ms, &need, err, errlen) == -1)
			goto done;
	tmp.owner = strdup(expect_owner);
	tmp.strings = malloc(need > 0 ? need : 1);
	tmp.v = calloc(ents->via.array.size > 0 ? ents->via.array.size : 1, sizeof(*tmp.v));
	if (tmp.owner == NULL || tmp.strings == NULL || tmp.v == NULL) {
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	p = tmp.strings;
	for (i = 0; i < ents->via.array.size; i++) {
		const msgpack_object *f = ents->via.array.ptr[i].via.array.ptr;
		struct dcsnap_entry *e = &tmp.v[i];

		e->target = copy_str(&p, &f[0]);
		e->caller_uri = copy_str(&p, &f[1]);
		e->allow = f[2].via.boolean;
		e->reason = copy_str(&p, &f[3]);
		e->source_app = copy_str(&p, &f[4]);
		e->obtained_ms = (int64_t)f[5].via.u64;
	}
	tmp.n = ents->via.array.size;
	*out = tmp;
	memset(&tmp, 0, sizeof(tmp));
	st = DCSNAP_OK;
done:
	msgpack_unpacked_destroy(&u);
	dcsnap_free(&tmp);
	return st;
}

const char *
dcsnap_status_str(enum dcsnap_status st)
{
	switch (st) {
	case DCSNAP_OK: return "ok";
	case DCSNAP_MISSING: return "missing";
	case DCSNAP_IO: return "unreadable";
	case DCSNAP_CORRUPT: return "corrupt";
	case DCSNAP_VERSION_UNKNOWN: return "unknown format version";
	case DCSNAP_FOREIGN: return "of another target";
	}
	return "?";
}

/* ---- files ------------------------------------------------------------------------------------- */

int
dcsnap_save(const char *path, const char *owner, int64_t now_ms, dcsnap_foreach_fn *foreach, void *cache,
    size_t *nwritten, char *err, size_t errlen)
{
	uint8_t *data;
	size_t len;
	int rc;

	if (dcsnap_encode(owner, now_ms, foreach, cache, &data, &len, nwritten, err, errlen) == -1)
		return -1;
	rc = atomic_write_file(path, data, len, 0600, err, errlen);
	free(data);
	return rc;
}

enum dcsnap_status
dcsnap_load(const char *path, const char *expect_owner, int64_t now_ms, int64_t max_age_ms,
    dcsnap_insert_fn *insert, void *cache, size_t *restored, size_t *dropped, int64_t *age_ms, char *err,
    size_t errlen)
{
	struct dcsnap s;
	struct dcsnap_entry e;
	struct stat st;
	enum dcsnap_status rc;
	size_t i, nr = 0, nd = 0;
	char *data;
	size_t len;

	if (restored != NULL)
		*restored = 0;
	if (dropped != NULL)
		*dropped = 0;
	if (age_ms != NULL)
		*age_ms = 0;
	if (stat(path, &st) == -1 && errno == ENOENT) {
		snprintf(err, errlen, "%s: no snapshot", path);
		return DCSNAP_MISSING;
	}
	if (read_file_capped(path, DCSNAP_FILE_MAX, &data, &len, err, errlen) == -1)
		return DCSNAP_IO;
	rc = dcsnap_decode((const uint8_t *)data, len, expect_owner, &s, err, errlen);
	free(data);
	if (rc != DCSNAP_OK)
		return rc;
	for (i = 0; i < s.n; i++) {
		e = s.v[i];
		if (e.obtained_ms > now_ms + DCSNAP_FUTURE_SLACK_MS || now_ms - e.obtained_ms > max_age_ms) {
			nd++;
			continue;
		}
		if (e.obtained_ms > now_ms)
			e.obtained_ms = now_ms;
		if (insert(cache, &e) == 0)
			nr++;
		else
			nd++;
	}
	if (restored != NULL)
		*restored = nr;
	if (dropped != NULL)
		*dropped = nd;
	if (age_ms != NULL)
		*age_ms = now_ms - s.written_at_ms;
	dcsnap_free(&s);
	return DCSNAP_OK;
}

/* ---- connect-spoa's glue ----------------------------------------------------------------------- */

static double
clock_s(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t
wall_ms(void)
{
	return (int64_t)llround(clock_s(CLOCK_REALTIME) * 1000.0);
}

struct walk {
	dcsnap_visit_fn	*visit;
	void		*arg;
	double		 wall_minus_mono;
};

static int
walk_one(void *arg, const struct cache_entry *ce)
{
	struct walk *w = arg;
	struct dcsnap_entry e;
	double at = (ce->obtained + w->wall_minus_mono) * 1000.0;

	e.target = ce->target;
	e.caller_uri = ce->uri;
	e.reason = ce->reason;
	e.source_app = ce->source_app;
	e.allow = ce->allow;
	e.obtained_ms = isfinite(at) && at >= 0 && at < (double)TIME_MAX_MS ? (int64_t)llround(at) : -1;
	return w->visit(w->arg, &e);
}

int
dcsnap_cache_foreach(void *cache, dcsnap_visit_fn *visit, void *arg)
{
	struct walk w;

	w.visit = visit;
	w.arg = arg;
	w.wall_minus_mono = clock_s(CLOCK_REALTIME) - clock_s(CLOCK_MONOTONIC);
	return cache_foreach_lru(cache, walk_one, &w);
}

int
dcsnap_cache_insert(void *cache, const struct dcsnap_entry *e)
{
	double age = (double)(wall_ms() - e->obtained_ms) / 1000.0;

	if (age < 0)
		age = 0;
	return cache_store(cache, e->target, strlen(e->target), e->caller_uri, strlen(e->caller_uri), e->allow,
	    e->reason, e->source_app, clock_s(CLOCK_MONOTONIC) - age);
}

struct dcsnap_keeper {
	struct ev_loop	*loop;
	struct cache	*cache;
	char		*path;
	char		*owner;
	ev_timer	 timer;
	uint64_t	 saved_changes;
	int		 failing;
};

static void
keeper_save(struct dcsnap_keeper *k, const char *why)
{
	uint64_t changes = cache_changes(k->cache);
	size_t n = 0;
	char err[512];

	if (changes == k->saved_changes)
		return;
	if (dcsnap_save(k->path, k->owner, wall_ms(), dcsnap_cache_foreach, k->cache, &n, err,
	    sizeof(err)) == -1) {
		if (!k->failing)
			log_warnx("cannot write the decision snapshot: %s", err);
		k->failing = 1;
		return;
	}
	if (k->failing)
		log_info("decision snapshot written again to %s", k->path);
	k->failing = 0;
	k->saved_changes = changes;
	log_debug("decision snapshot: %zu decisions written to %s (%s)", n, k->path, why);
}

static void
keeper_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	keeper_save(w->data, "changed");
}

struct dcsnap_keeper *
dcsnap_keeper_new(struct ev_loop *loop, struct cache *c, const char *path, const char *owner,
    double stale_if_error, double interval)
{
	struct dcsnap_keeper *k;
	enum dcsnap_status st;
	size_t restored = 0, dropped = 0;
	int64_t age = 0;
	char err[512];

	if ((k = calloc(1, sizeof(*k))) == NULL || (k->path = strdup(path)) == NULL ||
	    (k->owner = strdup(owner != NULL ? owner : "")) == NULL) {
		if (k != NULL)
			free(k->path);
		free(k);
		return NULL;
	}
	k->loop = loop;
	k->cache = c;
	st = dcsnap_load(path, k->owner, wall_ms(), (int64_t)llround(stale_if_error * 1000.0),
	    dcsnap_cache_insert, c, &restored, &dropped, &age, err, sizeof(err));
	switch (st) {
	case DCSNAP_OK:
		log_info("restored %zu cached decisions from the snapshot %s written %.1f s ago (%zu dropped: "
		    "older than stale-if-error %g s); the intentions watch replaces them once the agent answers",
		    restored, path, (double)age / 1000.0, dropped, stale_if_error);
		break;
	case DCSNAP_MISSING:
		log_info("no decision snapshot at %s yet: starting with an empty cache", path);
		break;
	default:
		log_warnx("ignoring the decision snapshot %s (%s: %s): starting with an empty cache", path,
		    dcsnap_status_str(st), err);
		break;
	}
	spoa_metrics.cache_entries = cache_count(c);
	k->saved_changes = cache_changes(c);
	ev_timer_init(&k->timer, keeper_timer_cb, interval, interval);
	k->timer.data = k;
	ev_timer_start(loop, &k->timer);
	return k;
}

void
dcsnap_keeper_free(struct dcsnap_keeper *k)
{
	if (k == NULL)
		return;
	ev_timer_stop(k->loop, &k->timer);
	keeper_save(k, "exit");
	free(k->path);
	free(k->owner);
	free(k);
}
