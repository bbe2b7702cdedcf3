/*
 * cache_snapshot.c - see cache_snapshot.h.
 *
 * Decoding runs in three steps, each refusing what the next could not handle safely:
 *   1. and 2. the envelope (structure walk, unpacking, magic, version, checksum): lib/snapfile.c, which
 *      certsync/snapshot.c uses too;
 *   3. every entry checked, then copied into one allocation; nothing reaches the cache unless all of
 *      the file is valid.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <msgpack.h>

#include "atomicfile.h"
#include "cache.h"
#include "cache_snapshot.h"
#include "log.h"
#include "metrics.h"
#include "snapfile.h"

#define TOP_ITEMS	6
#define ENTRY_ITEMS	6
#define TIME_MAX_MS	((int64_t)1 << 50)	/* far beyond any real time, far from overflow */

static const struct snapfile_format dcsnap_format = {
	.magic = DCSNAP_MAGIC,
	.what = "connect-spoa decision snapshot",
	.version = DCSNAP_VERSION,
	.nitems = TOP_ITEMS,
	.max_len = DCSNAP_FILE_MAX,
	.max_depth = 4,
};

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
	rc |= snapfile_begin(&dcsnap_format, &sb, &pk);
	x.pk = &pk;
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
	if (snapfile_seal(&sb, &pk) == -1) {
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
	struct dcsnap tmp;
	msgpack_unpacked u;
	const msgpack_object *item, *ents, *own;	/* item: the envelope's TOP_ITEMS items */
	enum dcsnap_status st = DCSNAP_CORRUPT;
	size_t need = 0;
	uint32_t i;
	char *p;

	memset(out, 0, sizeof(*out));
	memset(&tmp, 0, sizeof(tmp));
	if (expect_owner == NULL)
		expect_owner = "";
	switch (snapfile_open(&dcsnap_format, buf, len, &u, &item, err, errlen)) {
	case SNAPFILE_OK:
		break;
	case SNAPFILE_VERSION_UNKNOWN:
		st = DCSNAP_VERSION_UNKNOWN;
		goto done;
	default:
		goto done;
	}
	own = &item[2];
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
	if (!mp_time(&item[3], 1, TIME_MAX_MS, &tmp.written_at_ms)) {
		snprintf(err, errlen, "bad written-at time");
		goto done;
	}
	ents = &item[4];
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

/*
 * The keeper. A save forks a writer (as Redis' BGSAVE does): the child encodes its copy-on-write view
 * of the cache, writes the file atomically and _exit()s; the loop only pays for the fork and, later, for
 * reaping the child (an ev_child watcher: libev's default loop reaps with waitpid(-1), and connect-spoa
 * has no other child). The child reports through a pipe: the entry count, or the error text.
 */
struct dcsnap_keeper {
	struct ev_loop		*loop;
	struct cache		*cache;
	char			*path;
	char			*owner;
	ev_timer		 timer;
	ev_child		 child;
	pid_t			 writer;	/* the running writer, 0 when none */
	int			 report_fd;	/* read end of the writer's pipe, -1 when none */
	uint64_t		 writing_changes; /* cache_changes() when the writer forked */
	uint64_t		 saved_changes;	/* ... of the last file written */
	bool			 dirty_noted;	/* a change during this write was logged */
	bool			 failing;
	bool			 fork_failing;
	bool			 stop_writer;	/* test hook, see cache_snapshot.h */
	struct dcsnap_keeper_stats st;
};

/* A failed write is logged when writes start failing, and a success when they work again. */
static void
keeper_failed(struct dcsnap_keeper *k, const char *err)
{
	k->st.failures++;
	if (!k->failing)
		log_warnx("cannot write the decision snapshot: %s", err);
	k->failing = true;
}

static void
keeper_written(struct dcsnap_keeper *k, uint64_t changes, size_t n, const char *how)
{
	k->st.writes++;
	if (k->failing)
		log_info("decision snapshot written again to %s", k->path);
	k->failing = false;
	k->saved_changes = changes;
	log_debug("decision snapshot: %zu decisions written to %s (%s)", n, k->path, how);
}

/* On the loop: used at exit, and when no writer can be forked. */
static void
keeper_save_sync(struct dcsnap_keeper *k, const char *how)
{
	uint64_t changes = cache_changes(k->cache);
	size_t n = 0;
	char err[512];

	if (changes == k->saved_changes)
		return;
	if (dcsnap_save(k->path, k->owner, wall_ms(), dcsnap_cache_foreach, k->cache, &n, err,
	    sizeof(err)) == -1) {
		keeper_failed(k, err);
		return;
	}
	keeper_written(k, changes, n, how);
}

/* Removes the temp file a writer killed mid-write leaves behind (only one writer of path runs at a time). */
static void
remove_stale_temps(const char *path)
{
	int n = atomic_remove_temps(path);

	if (n > 0)
		log_debug("removed %d temp file(s) of %s left by an interrupted snapshot write", n, path);
}

/*
 * The writer child: encodes, writes, reports on fd, _exit()s. It runs nothing of the parent's (no loop,
 * no curl, no stdio, no atexit handlers); malloc is safe after fork in glibc.
 */
static void __attribute__((noreturn))
writer_main(struct dcsnap_keeper *k, int64_t now_ms, int fd)
{
	char err[512];
	sigset_t none;
	uint8_t *data;
	size_t len, n = 0;
	int rc;

	/* The parent's handlers (libev's) must not run here, and SIGTERM must stop a writer. */
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* Let go of the listening socket and connections: a restart must be able to bind. */
	if (fd > 3)
		(void)close_range(3, (unsigned)fd - 1, 0);
	(void)close_range((unsigned)fd + 1, ~0u, 0);

	rc = dcsnap_encode(k->owner, now_ms, dcsnap_cache_foreach, k->cache, &data, &len, &n, err,
	    sizeof(err));
	if (rc == 0) {
		if (k->stop_writer)
			(void)raise(SIGSTOP);
		rc = atomic_write_file(k->path, data, len, 0600, err, sizeof(err));
		free(data);
	}
	if (rc == 0)
		(void)!write(fd, &n, sizeof(n));
	else
		(void)!write(fd, err, strnlen(err, sizeof(err)));
	_exit(rc == 0 ? 0 : 1);
}

static void
writer_done_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	struct dcsnap_keeper *k = w->data;
	char msg[512], err[600];
	ssize_t r;
	size_t n = 0;
	int status = w->rstatus;

	ev_child_stop(loop, w);
	do {
		r = read(k->report_fd, msg, sizeof(msg) - 1);
	} while (r == -1 && errno == EINTR);
	close(k->report_fd);
	k->report_fd = -1;
	k->writer = 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && r == (ssize_t)sizeof(n)) {
		memcpy(&n, msg, sizeof(n));
		keeper_written(k, k->writing_changes, n, "in the background");
		return;
	}
	if (WIFEXITED(status)) {
		if (r < 0)
			r = 0;
		msg[r] = '\0';
		snprintf(err, sizeof(err), "%s", r > 0 ? msg : "the writer exited without a report");
	} else {
		snprintf(err, sizeof(err), "the writer (pid %ld) was killed by signal %d; %s is unchanged",
		    (long)w->rpid, WIFSIGNALED(status) ? WTERMSIG(status) : 0, k->path);
		remove_stale_temps(k->path);
	}
	keeper_failed(k, err);
}

/* Starts a writer for the current cache, or writes on the loop when no process can be forked. */
static void
keeper_start_writer(struct dcsnap_keeper *k, uint64_t changes)
{
	int64_t now = wall_ms();
	int p[2], e;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) == -1) {
		e = errno;
		goto fallback;
	}
	if ((pid = fork()) == -1) {
		e = errno;
		close(p[0]);
		close(p[1]);
		goto fallback;
	}
	if (pid == 0) {
		close(p[0]);
		writer_main(k, now, p[1]);
	}
	close(p[1]);
	k->fork_failing = false;
	k->writer = pid;
	k->report_fd = p[0];
	k->writing_changes = changes;
	k->dirty_noted = false;
	k->st.started++;
	ev_child_set(&k->child, pid, 0);
	ev_child_start(k->loop, &k->child);
	return;
fallback:
	if (!k->fork_failing)
		log_warnx("decision snapshot: cannot start a writer process (%s): writing on the event loop "
		    "until one can be started", strerror(e));
	k->fork_failing = true;
	keeper_save_sync(k, "on the loop");
}

static void
keeper_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct dcsnap_keeper *k = w->data;
	uint64_t changes = cache_changes(k->cache);

	if (k->writer != 0) {
		/* Never two writers: what changed meanwhile is written by the next tick after this one ends. */
		if (changes != k->writing_changes) {
			k->st.deferred++;
			if (!k->dirty_noted)
				log_debug("decision snapshot: the cache changed during a write: writing again "
				    "once it ends");
			k->dirty_noted = true;
		}
		return;
	}
	if (changes != k->saved_changes)
		keeper_start_writer(k, changes);
}

/* Stops a running writer (SIGKILL: its file is not renamed into place, or already is) and reaps it. */
static void
keeper_stop_writer(struct dcsnap_keeper *k)
{
	int status;
	pid_t r;

	if (k->writer == 0)
		return;
	ev_child_stop(k->loop, &k->child);
	(void)kill(k->writer, SIGKILL);
	do {
		r = waitpid(k->writer, &status, 0);
	} while (r == -1 && errno == EINTR);
	log_debug("decision snapshot: stopped the background writer (pid %ld)", (long)k->writer);
	close(k->report_fd);
	k->report_fd = -1;
	k->writer = 0;
	remove_stale_temps(k->path);
}

struct dcsnap_keeper *
dcsnap_keeper_new(struct ev_loop *loop, struct cache *c, const char *path, const char *owner,
    double stale_if_error, double interval)
{
	struct dcsnap_keeper *k;
	enum dcsnap_status st;
	size_t restored = 0, dropped = 0;
	int64_t age = 0;
	const char *hook;
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
	k->report_fd = -1;
	hook = getenv(DCSNAP_TEST_STOP_ENV);
	if (hook != NULL && strcmp(hook, "1") == 0) {
		k->stop_writer = true;
		log_warnx("%s=1 (a test hook): every background snapshot writer stops itself (SIGSTOP) "
		    "before writing", DCSNAP_TEST_STOP_ENV);
	}
	remove_stale_temps(path);
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
	ev_child_init(&k->child, writer_done_cb, 0, 0);
	k->child.data = k;
	ev_timer_init(&k->timer, keeper_timer_cb, interval, interval);
	k->timer.data = k;
	ev_timer_start(loop, &k->timer);
	return k;
}

void
dcsnap_keeper_stats(const struct dcsnap_keeper *k, struct dcsnap_keeper_stats *out)
{
	*out = k->st;
	out->writer = k->writer;
}

void
dcsnap_keeper_free(struct dcsnap_keeper *k)
{
	if (k == NULL)
		return;
	ev_timer_stop(k->loop, &k->timer);
	keeper_stop_writer(k);
	keeper_save_sync(k, "at exit");
	free(k->path);
	free(k->owner);
	free(k);
}
