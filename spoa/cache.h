/*
 * cache.h - connect-spoa's bounded decision cache, keyed by (target, caller URI).
 *
 * A hash table of fixed size (chosen at creation from the bound) plus an LRU list: lookup, store, touch
 * and evict are O(1); a hit allocates nothing. Invalidation by target walks the LRU list (rare: it
 * happens when the target's intentions change). Pure data structure: no clock, no I/O, no logging; the
 * caller passes times in seconds on a monotonic clock.
 */
#ifndef HC_SPOA_CACHE_H
#define HC_SPOA_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cache_entry {
	struct cache_entry	*hnext;		/* hash chain */
	struct cache_entry	*lprev;		/* LRU list, most recent first */
	struct cache_entry	*lnext;
	uint64_t		 hash;
	size_t			 tlen;		/* key = target '\0' uri '\0' */
	size_t			 ulen;
	bool			 allow;
	double			 obtained;	/* when the agent gave this decision */
	const char		*target;	/* all point into data[] */
	const char		*uri;
	const char		*reason;
	const char		*source_app;
	char			 data[];
};

enum cache_freshness {
	CACHE_FRESH,		/* answer from the cache */
	CACHE_STALE,		/* only while the agent fails (stale-if-error) */
	CACHE_EXPIRED,		/* unusable */
};

struct cache;

/* max_entries >= 1. NULL with err filled on failure. */
struct cache *cache_new(size_t max_entries, char *err, size_t errlen);
void cache_free(struct cache *c);

/* Finds an entry and marks it most recently used; NULL when absent. The entry stays valid until the next
 * cache_store, cache_remove, cache_invalidate_target or cache_free. */
struct cache_entry *cache_lookup(struct cache *c, const char *target, size_t tlen, const char *uri,
    size_t ulen);

/* Inserts or replaces the decision for (target, uri), evicting the least recently used entry when full.
 * Returns 0, or -1 when out of memory (the cache is unchanged apart from a possible eviction). */
int cache_store(struct cache *c, const char *target, size_t tlen, const char *uri, size_t ulen, bool allow,
    const char *reason, const char *source_app, double obtained);

void cache_remove(struct cache *c, struct cache_entry *e);

/* Drops every entry of target; returns how many. */
size_t cache_invalidate_target(struct cache *c, const char *target, size_t tlen);

size_t cache_count(const struct cache *c);
size_t cache_capacity(const struct cache *c);
uint64_t cache_evictions(const struct cache *c);

/* Persistence (spoa/cache_snapshot.c): a counter bumped by every store and removal, so a periodic
 * saver knows whether anything changed; and a walk over every entry, least recently used first, that
 * stops and returns -1 as soon as fn does (fn must not change the cache). */
uint64_t cache_changes(const struct cache *c);
int cache_foreach_lru(const struct cache *c, int (*fn)(void *arg, const struct cache_entry *e), void *arg);

/*
 * How an entry may be used at time now: fresh while younger than fresh_for (INFINITY when a working
 * watch invalidates it), stale while younger than stale_if_error, else expired. An entry from the future
 * (clock confusion) counts as age 0.
 */
enum cache_freshness cache_classify(const struct cache_entry *e, double now, double fresh_for,
    double stale_if_error);

#endif
