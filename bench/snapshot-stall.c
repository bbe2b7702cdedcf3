/*
 * snapshot-stall.c - how long connect-spoa's event loop stops for one decision snapshot save.
 *
 *   snapshot-stall [-n entries] [-r rounds] [-d directory]
 *
 * Fills a real cache (spoa/cache.h) with -n decisions (default 65,536, connect-spoa's default
 * -cache-size) shaped like real ones (a SPIFFE URI, an intention's reason), then measures, -r times each
 * (default 5):
 *   on the loop:   one dcsnap_save() (encode + atomic write + fsync), the whole of it a loop stall, as
 *                  connect-spoa did before its keeper forked a writer;
 *   background:    the keeper (spoa/cache_snapshot.c) on libev's default loop, one change per round: the
 *                  longest loop iteration (callbacks run between an ev_check and the next ev_prepare)
 *                  during the round, which holds the fork and the reaping of the writer;
 *   lookups:       while the writer runs, the loop keeps doing cache lookups (each moves an entry to the
 *                  front of the LRU list, a write to memory shared copy-on-write with the writer): their
 *                  latency, against the same lookups with no writer, is what copy-on-write costs.
 * Prints figures only; asserts nothing (a shared, noisy machine). Writes into -d (default a fresh
 * directory under $TMPDIR or /tmp, removed at the end).
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "cache.h"
#include "cache_snapshot.h"
#include "log.h"

#define MAX_SAMPLES	(1u << 20)

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t
wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Resident set size in MB (/proc/self/statm), 0 when unknown. */
static double
rss_mb(void)
{
	unsigned long long size, rss;
	FILE *f = fopen("/proc/self/statm", "r");
	int ok;

	if (f == NULL)
		return 0;
	ok = fscanf(f, "%llu %llu", &size, &rss) == 2;
	fclose(f);
	return ok ? (double)rss * (double)sysconf(_SC_PAGESIZE) / 1e6 : 0;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Sorts v and prints its median and maximum (and p99 and p99.9 when asked), scaled by scale. */
static void
report(const char *what, double *v, size_t n, double scale, const char *unit, bool tails)
{
	if (n == 0) {
		printf("  %-44s no samples\n", what);
		return;
	}
	qsort(v, n, sizeof(*v), cmp_double);
	if (tails)
		printf("  %-44s n=%-8zu median %8.1f  p99 %8.1f  p99.9 %8.1f  max %9.1f %s\n", what, n,
		    v[n / 2] * scale, v[(size_t)((double)(n - 1) * 0.99)] * scale,
		    v[(size_t)((double)(n - 1) * 0.999)] * scale, v[n - 1] * scale, unit);
	else
		printf("  %-44s n=%-8zu median %8.2f  min %8.2f  max %8.2f %s\n", what, n, v[n / 2] * scale,
		    v[0] * scale, v[n - 1] * scale, unit);
}

static void
uri_of(char *uri, size_t len, size_t i)
{
	snprintf(uri, len, "spiffe://0b4d1c58-0ae2-4cc4-9d3c-4a2bd9d0d6f1.consul/ns/default/dc/dc1/svc/"
	    "caller-%06zu", i);
}

struct bench {
	struct ev_loop		*loop;
	struct cache		*cache;
	struct dcsnap_keeper	*k;
	size_t			 entries;
	ev_prepare		 prep;
	ev_check		 check;
	ev_idle			 idle;
	double			 iter_start;
	double			 iter_max;	/* longest iteration of this round */
	double			 fork_iter;	/* the iteration that started the writer */
	double			 reap_iter;	/* the iteration that reaped it */
	uint64_t		 started, writes;
	uint64_t		 target_writes;
	double			*lookups;	/* latencies of lookups while the writer runs, or without one */
	size_t			 nlookups;
	uint64_t		 rng;
};

static void
check_cb(struct ev_loop *loop, ev_check *w, int revents)
{
	struct bench *b = w->data;

	b->iter_start = now_s();
}

static void
prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct bench *b = w->data;
	struct dcsnap_keeper_stats st;
	double d;

	dcsnap_keeper_stats(b->k, &st);
	if (b->iter_start > 0) {
		d = now_s() - b->iter_start;
		if (d > b->iter_max)
			b->iter_max = d;
		if (st.started != b->started)
			b->fork_iter = d;
		if (st.writes != b->writes)
			b->reap_iter = d;
	}
	b->started = st.started;
	b->writes = st.writes;
	if (st.writes >= b->target_writes)
		ev_break(loop, EVBREAK_ONE);
}

/* Lookups of random cached callers, timed one by one: only while a writer runs (or none is wanted). */
static void
idle_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	struct bench *b = w->data;
	struct dcsnap_keeper_stats st;
	char uri[128];
	double t0;
	size_t i, j;

	dcsnap_keeper_stats(b->k, &st);
	if (st.writer == 0)
		return;
	for (j = 0; j < 64 && b->nlookups < MAX_SAMPLES; j++) {
		b->rng = b->rng * 6364136223846793005ULL + 1442695040888963407ULL;
		i = (size_t)(b->rng >> 33) % b->entries;
		uri_of(uri, sizeof(uri), i);
		t0 = now_s();
		(void)cache_lookup(b->cache, "db", 2, uri, strlen(uri));
		b->lookups[b->nlookups++] = now_s() - t0;
	}
}

int
main(int argc, char **argv)
{
	struct bench b;
	struct dcsnap_keeper_stats st;
	struct stat sb;
	char dir[256], path[320], uri[128], err[512];
	const char *tmp = getenv("TMPDIR");
	double *sync_s, *bg_s, *sync_fork, *fork_s, *reap_s, t0, now;
	size_t i, n, rounds = 5, r;
	bool own_dir = false;
	int opt;

	memset(&b, 0, sizeof(b));
	b.entries = 65536;
	dir[0] = '\0';
	while ((opt = getopt(argc, argv, "n:r:d:")) != -1) {
		char *end;
		unsigned long long v;

		switch (opt) {
		case 'n':
		case 'r':
			errno = 0;
			v = strtoull(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || v < 1 || v > 1000000) {
				fprintf(stderr, "-%c: want 1..1000000\n", opt);
				return 2;
			}
			if (opt == 'n')
				b.entries = (size_t)v;
			else
				rounds = (size_t)v;
			break;
		case 'd':
			snprintf(dir, sizeof(dir), "%s", optarg);
			break;
		default:
			fprintf(stderr, "usage: snapshot-stall [-n entries] [-r rounds] [-d directory]\n");
			return 2;
		}
	}
	if (dir[0] == '\0') {
		snprintf(dir, sizeof(dir), "%s/snapshot-stall.XXXXXX", tmp != NULL ? tmp : "/tmp");
		if (mkdtemp(dir) == NULL) {
			perror("mkdtemp");
			return 1;
		}
		own_dir = true;
	}
	snprintf(path, sizeof(path), "%s/decisions.snapshot", dir);
	log_init("snapshot-stall", LL_WARN);

	if ((b.cache = cache_new(b.entries, err, sizeof(err))) == NULL) {
		fprintf(stderr, "cache: %s\n", err);
		return 1;
	}
	now = now_s();
	for (i = 0; i < b.entries; i++) {
		uri_of(uri, sizeof(uri), i);
		if (cache_store(b.cache, "db", 2, uri, strlen(uri), i % 11 != 0, i % 11 != 0 ?
		    "Matched L4 intention: caller allowed by the default-allow intention" :
		    "Matched L4 intention: deny", "caller", now - (double)(i % 60)) == -1) {
			fprintf(stderr, "cache full of memory\n");
			return 1;
		}
	}
	sync_s = calloc(rounds, sizeof(*sync_s));
	bg_s = calloc(rounds, sizeof(*bg_s));
	sync_fork = calloc(rounds, sizeof(*sync_fork));
	fork_s = calloc(rounds, sizeof(*fork_s));
	reap_s = calloc(rounds, sizeof(*reap_s));
	b.lookups = calloc(MAX_SAMPLES, sizeof(*b.lookups));
	if (sync_s == NULL || bg_s == NULL || sync_fork == NULL || fork_s == NULL || reap_s == NULL || b.lookups == NULL)
		return 1;

	/* On the loop: the whole save is a stall. */
	for (r = 0; r < rounds; r++) {
		t0 = now_s();
		if (dcsnap_save(path, "db", wall_ms(), dcsnap_cache_foreach, b.cache, &n, err, sizeof(err)) == -1) {
			fprintf(stderr, "save: %s\n", err);
			return 1;
		}
		sync_s[r] = now_s() - t0;
	}
	if (stat(path, &sb) == -1)
		return 1;
	printf("snapshot of %zu decisions: %lld bytes in %s\n", n, (long long)sb.st_size, dir);

	/* Background: the keeper, one change per round; the longest loop iteration of each round. */
	b.loop = EV_DEFAULT;
	b.rng = 42;
	if ((b.k = dcsnap_keeper_new(b.loop, b.cache, path, "db", 300, 0.01)) == NULL)
		return 1;
	ev_prepare_init(&b.prep, prepare_cb);
	ev_check_init(&b.check, check_cb);
	ev_idle_init(&b.idle, idle_cb);
	b.prep.data = b.check.data = b.idle.data = &b;
	ev_prepare_start(b.loop, &b.prep);
	ev_check_start(b.loop, &b.check);
	for (r = 0; r < rounds; r++) {
		dcsnap_keeper_stats(b.k, &st);
		b.target_writes = st.writes + 1;
		uri_of(uri, sizeof(uri), r);
		(void)cache_store(b.cache, "db", 2, uri, strlen(uri), true, "changed", "caller", now_s());
		b.iter_start = 0;
		b.iter_max = 0;
		b.started = st.started;
		b.writes = st.writes;
		ev_run(b.loop, 0);
		bg_s[r] = b.iter_max;
		fork_s[r] = b.fork_iter;
		reap_s[r] = b.reap_iter;
	}
	/* Then the same rounds with lookups on the loop while each writer runs. */
	ev_idle_start(b.loop, &b.idle);
	for (r = 0; r < rounds; r++) {
		dcsnap_keeper_stats(b.k, &st);
		b.target_writes = st.writes + 1;
		uri_of(uri, sizeof(uri), r + rounds);
		(void)cache_store(b.cache, "db", 2, uri, strlen(uri), true, "changed", "caller", now_s());
		ev_run(b.loop, 0);
	}
	dcsnap_keeper_stats(b.k, &st);
	if (st.failures != 0)
		fprintf(stderr, "warning: %llu background writes failed\n", (unsigned long long)st.failures);
	n = b.nlookups;
	/* The yardstick of the background figure: a bare fork() of this process (the child exits at once). */
	for (r = 0; r < rounds; r++) {
		pid_t pid;

		t0 = now_s();
		if ((pid = fork()) == 0)
			_exit(0);
		sync_fork[r] = now_s() - t0;
		if (pid > 0)
			(void)waitpid(pid, NULL, 0);
	}
	printf("resident set of this process: %.1f MB\n", rss_mb());
	printf("loop stall per save, %zu rounds:\n", rounds);
	report("on the loop (dcsnap_save)", sync_s, rounds, 1e3, "ms", false);
	report("background writer (longest loop iteration)", bg_s, rounds, 1e3, "ms", false);
	report("  of which the iteration starting it", fork_s, rounds, 1e3, "ms", false);
	report("  of which the iteration reaping it", reap_s, rounds, 1e3, "ms", false);
	report("a bare fork() of this process", sync_fork, rounds, 1e3, "ms", false);
	printf("cache lookups on the loop (microseconds):\n");
	report("while a writer runs (copy-on-write)", b.lookups, n, 1e6, "us", true);

	/* The same lookups with no writer: the yardstick. */
	ev_idle_stop(b.loop, &b.idle);
	b.rng = 42;
	for (i = 0; i < n; i++) {
		b.rng = b.rng * 6364136223846793005ULL + 1442695040888963407ULL;
		uri_of(uri, sizeof(uri), (size_t)(b.rng >> 33) % b.entries);
		t0 = now_s();
		(void)cache_lookup(b.cache, "db", 2, uri, strlen(uri));
		b.lookups[i] = now_s() - t0;
	}
	report("no writer", b.lookups, n, 1e6, "us", true);

	ev_prepare_stop(b.loop, &b.prep);
	ev_check_stop(b.loop, &b.check);
	dcsnap_keeper_free(b.k);
	cache_free(b.cache);
	if (own_dir) {
		unlink(path);
		rmdir(dir);
	}
	free(sync_s);
	free(bg_s);
	free(sync_fork);
	free(fork_s);
	free(reap_s);
	free(b.lookups);
	return 0;
}
