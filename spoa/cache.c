/*
 * cache.c - see cache.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "cache.h"
#include "hash.h"

struct cache {
	struct cache_entry	**buckets;
	size_t			 nbuckets;	/* power of two */
	size_t			 count;
	size_t			 max;
	uint64_t		 seed;
	uint64_t		 evictions;
	uint64_t		 changes;	/* stores and removals, for persistence */
	struct cache_entry	*head;		/* most recently used */
	struct cache_entry	*tail;		/* least recently used */
};

struct cache *
cache_new(size_t max_entries, char *err, size_t errlen)
{
	struct cache *c;
	size_t n = 16;

	if (max_entries == 0 || max_entries > (SIZE_MAX / sizeof(void *)) / 4) {
		snprintf(err, errlen, "cache size %zu out of range", max_entries);
		return NULL;
	}
	while (n < max_entries)
		n <<= 1;
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->buckets = calloc(n, sizeof(*c->buckets))) == NULL) {
		free(c);
		snprintf(err, errlen, "cache: out of memory");
		return NULL;
	}
	c->nbuckets = n;
	c->max = max_entries;
	/* A per-process seed: caller URIs come from certificates, but keep chains unpredictable anyway. */
	if (getrandom(&c->seed, sizeof(c->seed), GRND_NONBLOCK) != (ssize_t)sizeof(c->seed))
		c->seed = (uint64_t)(uintptr_t)c ^ 0x9e3779b97f4a7c15ULL;
	return c;
}

void
cache_free(struct cache *c)
{
	struct cache_entry *e, *next;

	if (c == NULL)
		return;
	for (e = c->head; e != NULL; e = next) {
		next = e->lnext;
		free(e);
	}
	free(c->buckets);
	free(c);
}

/* Over target, then uri (the target's hash seeds the uri's: "ab"+"c" and "a"+"bc" differ), seeded. */
static uint64_t
key_hash(const struct cache *c, const char *t, size_t tlen, const char *u, size_t ulen)
{
	return hash_bytes(hash_bytes(c->seed, t, tlen), u, ulen);
}

static void
lru_unlink(struct cache *c, struct cache_entry *e)
{
	if (e->lprev != NULL)
		e->lprev->lnext = e->lnext;
	else
		c->head = e->lnext;
	if (e->lnext != NULL)
		e->lnext->lprev = e->lprev;
	else
		c->tail = e->lprev;
	e->lprev = e->lnext = NULL;
}

static void
lru_push_front(struct cache *c, struct cache_entry *e)
{
	e->lprev = NULL;
	e->lnext = c->head;
	if (c->head != NULL)
		c->head->lprev = e;
	c->head = e;
	if (c->tail == NULL)
		c->tail = e;
}

static struct cache_entry **
find_slot(struct cache *c, uint64_t h, const char *t, size_t tlen, const char *u, size_t ulen)
{
	struct cache_entry **pp = &c->buckets[h & (c->nbuckets - 1)];

	for (; *pp != NULL; pp = &(*pp)->hnext) {
		const struct cache_entry *e = *pp;

		if (e->hash == h && e->tlen == tlen && e->ulen == ulen &&
		    memcmp(e->target, t, tlen) == 0 && memcmp(e->uri, u, ulen) == 0)
			return pp;
	}
	return pp;
}

struct cache_entry *
cache_lookup(struct cache *c, const char *target, size_t tlen, const char *uri, size_t ulen)
{
	uint64_t h = key_hash(c, target, tlen, uri, ulen);
	struct cache_entry *e = *find_slot(c, h, target, tlen, uri, ulen);

	if (e != NULL && c->head != e) {
		lru_unlink(c, e);
		lru_push_front(c, e);
	}
	return e;
}

void
cache_remove(struct cache *c, struct cache_entry *e)
{
	struct cache_entry **pp = &c->buckets[e->hash & (c->nbuckets - 1)];

	while (*pp != NULL && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp == e)
		*pp = e->hnext;
	lru_unlink(c, e);
	c->count--;
	c->changes++;
	free(e);
}

int
cache_store(struct cache *c, const char *target, size_t tlen, const char *uri, size_t ulen, bool allow,
    const char *reason, const char *source_app, double obtained)
{
	uint64_t h = key_hash(c, target, tlen, uri, ulen);
	size_t rlen, slen, size;
	struct cache_entry **pp, *e;
	char *d;

	if (reason == NULL)
		reason = "";
	if (source_app == NULL)
		source_app = "";
	rlen = strlen(reason);
	slen = strlen(source_app);
	pp = find_slot(c, h, target, tlen, uri, ulen);
	if (*pp != NULL)
		cache_remove(c, *pp);
	else if (c->count >= c->max && c->tail != NULL) {
		cache_remove(c, c->tail);
		c->evictions++;
	}
	if (tlen > SIZE_MAX / 4 || ulen > SIZE_MAX / 4 || rlen > SIZE_MAX / 4 || slen > SIZE_MAX / 4)
		return -1;
	size = sizeof(*e) + tlen + ulen + rlen + slen + 4;
	if ((e = calloc(1, size)) == NULL)
		return -1;
	d = e->data;
	e->target = d;
	memcpy(d, target, tlen);
	d += tlen + 1;
	e->uri = d;
	memcpy(d, uri, ulen);
	d += ulen + 1;
	e->reason = d;
	memcpy(d, reason, rlen);
	d += rlen + 1;
	e->source_app = d;
	memcpy(d, source_app, slen);
	e->hash = h;
	e->tlen = tlen;
	e->ulen = ulen;
	e->allow = allow;
	e->obtained = obtained;
	/* find_slot again: cache_remove above may have changed this chain. */
	pp = &c->buckets[h & (c->nbuckets - 1)];
	e->hnext = *pp;
	*pp = e;
	lru_push_front(c, e);
	c->count++;
	c->changes++;
	return 0;
}

size_t
cache_invalidate_target(struct cache *c, const char *target, size_t tlen)
{
	struct cache_entry *e, *next;
	size_t n = 0;

	for (e = c->head; e != NULL; e = next) {
		next = e->lnext;
		if (e->tlen == tlen && memcmp(e->target, target, tlen) == 0) {
			cache_remove(c, e);
			n++;
		}
	}
	return n;
}

size_t
cache_count(const struct cache *c)
{
	return c->count;
}

size_t
cache_capacity(const struct cache *c)
{
	return c->max;
}

uint64_t
cache_evictions(const struct cache *c)
{
	return c->evictions;
}

uint64_t
cache_changes(const struct cache *c)
{
	return c->changes;
}

int
cache_foreach_lru(const struct cache *c, int (*fn)(void *arg, const struct cache_entry *e), void *arg)
{
	const struct cache_entry *e;

	for (e = c->tail; e != NULL; e = e->lprev)
		if (fn(arg, e) == -1)
			return -1;
	return 0;
}

enum cache_freshness
cache_classify(const struct cache_entry *e, double now, double fresh_for, double stale_if_error)
{
	double age = now - e->obtained;

	if (age < 0)
		age = 0;
	if (age < fresh_for)
		return CACHE_FRESH;
	if (age < stale_if_error)
		return CACHE_STALE;
	return CACHE_EXPIRED;
}
