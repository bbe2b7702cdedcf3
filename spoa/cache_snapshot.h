/*
 * cache_snapshot.h - connect-spoa's decision cache persisted across restarts, so that callers allowed
 * before a restart during an agent outage stay allowed for the bounded stale-if-error time (callers it
 * never saw are still denied).
 *
 * Independent of the cache's internals: the cache hands entries out through a foreach callback and
 * takes them back through an insert callback, one struct dcsnap_entry at a time.
 *
 * File format (msgpack; version DCSNAP_VERSION):
 *   array(6) [
 *     str   DCSNAP_MAGIC
 *     uint  format version
 *     str   owner: the daemon's default target service (-target), "" when none
 *     int   written at (Unix milliseconds)
 *     array entries, least recently used first: array(6) [str target, str caller URI, bool allow,
 *           str reason, str source_app, int obtained (Unix milliseconds)]
 *     bin32 SHA-256 of every byte before this element
 *   ]
 *
 * The codec is pure (no I/O, no logging). A decode yields every entry checked (types, lengths, no
 * control characters, times not after the write) or an error and no entry at all. dcsnap_save and
 * dcsnap_load are the only functions doing I/O; the keeper at the end runs dcsnap_save's work in a
 * forked writer process so that the daemon's loop never waits for an encode, a write or an fsync.
 */
#ifndef HC_SPOA_CACHE_SNAPSHOT_H
#define HC_SPOA_CACHE_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define DCSNAP_MAGIC		"haproxy-connect spoa decisions"
#define DCSNAP_VERSION		1
#define DCSNAP_FILE_MAX		(64u * 1024u * 1024u)
#define DCSNAP_ENTRIES_MAX	262144u		/* more entries: only the most recently used are kept */
#define DCSNAP_TARGET_MAX	255u
#define DCSNAP_URI_MAX		1024u
#define DCSNAP_REASON_MAX	1024u
#define DCSNAP_APP_MAX		255u
#define DCSNAP_FUTURE_SLACK_MS	1000		/* an entry newer than now by more is dropped at load */

enum dcsnap_status {
	DCSNAP_OK = 0,
	DCSNAP_MISSING,		/* no file: a first start */
	DCSNAP_IO,		/* unreadable, too big */
	DCSNAP_CORRUPT,		/* truncated, not msgpack, checksum mismatch, a field invalid */
	DCSNAP_VERSION_UNKNOWN,	/* a format version this build does not read */
	DCSNAP_FOREIGN,		/* written by a connect-spoa for another target service */
};

/* One cached decision. Strings are NUL-terminated; they need to live only during a callback. */
struct dcsnap_entry {
	const char	*target;	/* 1..DCSNAP_TARGET_MAX bytes */
	const char	*caller_uri;	/* 1..DCSNAP_URI_MAX bytes */
	const char	*reason;	/* 0..DCSNAP_REASON_MAX bytes */
	const char	*source_app;	/* 0..DCSNAP_APP_MAX bytes */
	bool		 allow;
	int64_t		 obtained_ms;	/* when the agent gave it: Unix milliseconds (wall clock) */
};

/* Receives one entry. 0 to go on, -1 to stop (the foreach then returns -1). */
typedef int dcsnap_visit_fn(void *arg, const struct dcsnap_entry *e);
/*
 * Provided by the cache: calls visit for every entry, least recently used first, and returns 0 (or -1
 * as soon as visit does). It is called twice per save (count, then write) and must not change the cache.
 */
typedef int dcsnap_foreach_fn(void *cache, dcsnap_visit_fn *visit, void *arg);
/* Provided by the cache: stores one restored entry as the most recently used. 0, or -1 (not stored). */
typedef int dcsnap_insert_fn(void *cache, const struct dcsnap_entry *e);

/* A decoded snapshot: n entries in v, all strings in one allocation. */
struct dcsnap {
	char			*owner;
	int64_t			 written_at_ms;
	struct dcsnap_entry	*v;
	size_t			 n;
	char			*strings;
};

/* True when e would be accepted by the decoder (entries that are not are left out of a snapshot). */
bool dcsnap_entry_valid(const struct dcsnap_entry *e);

/*
 * Encodes every valid entry the foreach gives (at most DCSNAP_ENTRIES_MAX, the most recently used), into
 * a fresh buffer (*out, free()d by the caller). *nwritten (may be NULL) gets the entry count. An entry
 * obtained after written_at_ms is written with obtained_ms = written_at_ms. 0, or -1 with err.
 */
int  dcsnap_encode(const char *owner, int64_t written_at_ms, dcsnap_foreach_fn *foreach, void *cache,
    uint8_t **out, size_t *outlen, size_t *nwritten, char *err, size_t errlen);

/*
 * Decodes a snapshot written by the connect-spoa of target expect_owner ("" or NULL: none). On DCSNAP_OK
 * *out holds every entry (dcsnap_free); on any other status *out is empty and err says why.
 */
enum dcsnap_status dcsnap_decode(const uint8_t *buf, size_t len, const char *expect_owner,
    struct dcsnap *out, char *err, size_t errlen);
void dcsnap_free(struct dcsnap *s);
const char *dcsnap_status_str(enum dcsnap_status st);

/* Encodes and writes path atomically with mode 0600. 0, or -1 with err. */
int  dcsnap_save(const char *path, const char *owner, int64_t now_ms, dcsnap_foreach_fn *foreach,
    void *cache, size_t *nwritten, char *err, size_t errlen);

/*
 * Reads and decodes path; only when the whole file is valid, inserts (in file order) the entries
 * obtained at most max_age_ms before now_ms (an entry apparently from the future by more than
 * DCSNAP_FUTURE_SLACK_MS is dropped, one within that slack is inserted as obtained now). *restored and
 * *dropped (may be NULL) count them; an insert failure counts as dropped. *age_ms (may be NULL) gets the
 * snapshot's age.
 */
enum dcsnap_status dcsnap_load(const char *path, const char *expect_owner, int64_t now_ms,
    int64_t max_age_ms, dcsnap_insert_fn *insert, void *cache, size_t *restored, size_t *dropped,
    int64_t *age_ms, char *err, size_t errlen);

/* ---- connect-spoa's glue: the codec above over spoa/cache.h, on the daemon's loop ---------------- */

struct ev_loop;
struct cache;

/*
 * Adapters between struct cache (monotonic seconds) and dcsnap entries (Unix milliseconds): the
 * foreach walks the cache least recently used first, the insert stores an entry as most recently used.
 * cache is a struct cache *.
 */
int  dcsnap_cache_foreach(void *cache, dcsnap_visit_fn *visit, void *arg);
int  dcsnap_cache_insert(void *cache, const struct dcsnap_entry *e);

/*
 * The daemon's snapshot keeper. dcsnap_keeper_new loads path into c (entries younger than
 * stale_if_error seconds; a missing file is a first start, a bad one is ignored with a warning and the
 * cache stays empty), logs what it did, and then every interval seconds, if the cache changed since the
 * last write, writes it to path OFF the event loop: it fork()s a writer process that encodes its
 * copy-on-write view of the cache, writes the file atomically and _exit()s; the loop pays only for the
 * fork (1.3-3.2 ms for a full 65,536-entry cache on our CI VM, against 37-140 ms for an encode and
 * write on the loop; bench/snapshot-stall.c) and for reaping the writer with an ev_child watcher (so
 * loop must be libev's default loop, whose SIGCHLD watcher reaps every child: the daemon must have no
 * other children it waits for itself).
 *
 * At most one writer runs: a tick that finds the cache changed during a write leaves it to the first
 * tick after the write ends. A write that fails, or whose writer dies (killed: the file is left as it
 * was, and the temp file a killed writer leaves is removed), is logged once when writes start failing
 * and once when they work again; the next tick retries. When no process can be forked the keeper writes
 * on the loop instead (logged once). dcsnap_keeper_free (at exit, after the drain) kills and reaps a
 * running writer, then writes the cache a last time on the loop if it changed since the last completed
 * write, and frees. Logs; never fails the daemon: NULL only when out of memory.
 *
 * Test hook: with the environment variable DCSNAP_TEST_STOP_ENV set to "1" when the keeper is created,
 * every writer stops itself (raise(SIGSTOP)) after encoding and before writing, so that a test can hold
 * a write in progress for as long as it wants, deterministically (SIGCONT resumes it, SIGKILL kills it).
 */
#define DCSNAP_TEST_STOP_ENV	"HC_SPOA_SNAPSHOT_TEST_STOP"

struct dcsnap_keeper;

struct dcsnap_keeper_stats {
	uint64_t	writes;		/* files written (in the background or on the loop) */
	uint64_t	failures;	/* writes that failed, writers that died */
	uint64_t	started;	/* writer processes started */
	uint64_t	deferred;	/* ticks that found the cache changed while a writer ran */
	pid_t		writer;		/* the running writer, 0 when none */
};

struct dcsnap_keeper *dcsnap_keeper_new(struct ev_loop *loop, struct cache *c, const char *path,
    const char *owner, double stale_if_error, double interval);
void dcsnap_keeper_stats(const struct dcsnap_keeper *k, struct dcsnap_keeper_stats *out);
void dcsnap_keeper_free(struct dcsnap_keeper *k);

#endif
