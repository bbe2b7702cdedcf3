/*
 * test_spoa_cache.c - the decision cache: bound with LRU eviction, replacement, invalidation by target,
 * freshness and the stale-if-error window.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cache.h"

static struct cache_entry *
get(struct cache *c, const char *t, const char *u)
{
	return cache_lookup(c, t, strlen(t), u, strlen(u));
}

static void
put(struct cache *c, const char *t, const char *u, int allow, double when)
{
	char reason[64];

	snprintf(reason, sizeof(reason), "r-%s-%s", t, u);
	assert_int_equal(cache_store(c, t, strlen(t), u, strlen(u), allow != 0, reason, "web", when), 0);
}

static void
test_store_lookup(void **state)
{
	char err[128];
	struct cache *c = cache_new(8, err, sizeof(err));
	struct cache_entry *e;

	assert_non_null(c);
	assert_null(get(c, "db", "spiffe://a/ns/default/dc/dc1/svc/web"));
	put(c, "db", "spiffe://a/ns/default/dc/dc1/svc/web", 1, 10.0);
	e = get(c, "db", "spiffe://a/ns/default/dc/dc1/svc/web");
	assert_non_null(e);
	assert_true(e->allow);
	assert_string_equal(e->reason, "r-db-spiffe://a/ns/default/dc/dc1/svc/web");
	assert_string_equal(e->source_app, "web");
	assert_true(e->obtained == 10.0);
	/* Same URI, other target: another key. Target "d" + uri "b..." must not collide with "db". */
	assert_null(get(c, "api", "spiffe://a/ns/default/dc/dc1/svc/web"));
	assert_null(cache_lookup(c, "d", 1, "bspiffe://a/ns/default/dc/dc1/svc/web", 37));
	/* Replacing keeps one entry with the new decision. */
	put(c, "db", "spiffe://a/ns/default/dc/dc1/svc/web", 0, 20.0);
	assert_int_equal(cache_count(c), 1);
	e = get(c, "db", "spiffe://a/ns/default/dc/dc1/svc/web");
	assert_false(e->allow);
	assert_true(e->obtained == 20.0);
	cache_free(c);
}

static void
test_lru_bound(void **state)
{
	char err[128], uri[64];
	struct cache *c = cache_new(100, err, sizeof(err));
	int i;

	for (i = 0; i < 100; i++) {
		snprintf(uri, sizeof(uri), "u%d", i);
		put(c, "db", uri, i % 2, i);
	}
	assert_int_equal(cache_count(c), 100);
	/* Touch u0..u9 so they are the most recently used. */
	for (i = 0; i < 10; i++) {
		snprintf(uri, sizeof(uri), "u%d", i);
		assert_non_null(get(c, "db", uri));
	}
	/* 50 more: the 50 least recently used (u10..u59) go, u0..u9 stay. */
	for (i = 100; i < 150; i++) {
		snprintf(uri, sizeof(uri), "u%d", i);
		put(c, "db", uri, 1, i);
		assert_true(cache_count(c) <= 100);
	}
	assert_int_equal(cache_count(c), 100);
	assert_int_equal(cache_evictions(c), 50);
	for (i = 0; i < 150; i++) {
		snprintf(uri, sizeof(uri), "u%d", i);
		if (i < 10 || i >= 60)
			assert_non_null(get(c, "db", uri));
		else
			assert_null(get(c, "db", uri));
	}
	cache_free(c);
}

static void
test_invalidate_target(void **state)
{
	char err[128], uri[64];
	struct cache *c = cache_new(1000, err, sizeof(err));
	int i;

	for (i = 0; i < 300; i++) {
		snprintf(uri, sizeof(uri), "u%d", i);
		put(c, i % 3 == 0 ? "db" : (i % 3 == 1 ? "api" : "dbx"), uri, 1, 1);
	}
	assert_int_equal(cache_invalidate_target(c, "db", 2), 100);
	assert_int_equal(cache_count(c), 200);
	for (i = 0; i < 300; i++) {
		snprintf(uri, sizeof(uri), "u%d", i);
		if (i % 3 == 0)
			assert_null(get(c, "db", uri));
		else
			assert_non_null(get(c, i % 3 == 1 ? "api" : "dbx", uri));
	}
	assert_int_equal(cache_invalidate_target(c, "db", 2), 0);
	/* The cache keeps working after removals (chains and LRU intact). */
	put(c, "db", "u0", 0, 2);
	assert_non_null(get(c, "db", "u0"));
	assert_int_equal(cache_invalidate_target(c, "api", 3), 100);
	assert_int_equal(cache_invalidate_target(c, "dbx", 3), 100);
	assert_int_equal(cache_count(c), 1);
	cache_free(c);
}

static void
test_freshness(void **state)
{
	char err[128];
	struct cache *c = cache_new(4, err, sizeof(err));
	struct cache_entry *e;

	put(c, "db", "u", 1, 100.0);
	e = get(c, "db", "u");
	/* Watch working: fresh whatever its age. */
	assert_int_equal(cache_classify(e, 1e6, INFINITY, 300), CACHE_FRESH);
	/* TTL 60, stale-if-error 300. */
	assert_int_equal(cache_classify(e, 159.9, 60, 300), CACHE_FRESH);
	assert_int_equal(cache_classify(e, 160.0, 60, 300), CACHE_STALE);
	assert_int_equal(cache_classify(e, 399.9, 60, 300), CACHE_STALE);
	assert_int_equal(cache_classify(e, 400.0, 60, 300), CACHE_EXPIRED);
	/* stale-if-error 0 disables serving stale. */
	assert_int_equal(cache_classify(e, 170.0, 60, 0), CACHE_EXPIRED);
	/* The failure path asks with fresh_for 0: only the stale window counts. */
	assert_int_equal(cache_classify(e, 100.0, 0, 300), CACHE_STALE);
	assert_int_equal(cache_classify(e, 50.0, 0, 300), CACHE_STALE);
	cache_free(c);
}

static void
test_bad_sizes(void **state)
{
	char err[128];
	struct cache *c;

	assert_null(cache_new(0, err, sizeof(err)));
	c = cache_new(1, err, sizeof(err));
	put(c, "a", "1", 1, 0);
	put(c, "a", "2", 1, 0);
	assert_int_equal(cache_count(c), 1);
	assert_null(get(c, "a", "1"));
	assert_non_null(get(c, "a", "2"));
	cache_remove(c, get(c, "a", "2"));
	assert_int_equal(cache_count(c), 0);
	cache_free(c);
	cache_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_store_lookup),
		cmocka_unit_test(test_lru_bound),
		cmocka_unit_test(test_invalidate_target),
		cmocka_unit_test(test_freshness),
		cmocka_unit_test(test_bad_sizes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
