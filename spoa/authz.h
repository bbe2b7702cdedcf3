/*
 * authz.h - intention decisions for connect-spoa: parse the caller's identity, ask the agent
 * (POST /v1/agent/connect/authorize), cache per (target, caller URI), share concurrent identical
 * questions (singleflight), invalidate on intention changes, serve stale-if-error, fail closed.
 *
 * The SPOP server (server.c) only sees this interface.
 */
#ifndef HC_AUTHZ_H
#define HC_AUTHZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ev_loop;
struct consul_client;
struct cache;

struct authz_query {
	const uint8_t	*der;		/* client leaf certificate (ssl_c_der), NULL when absent */
	size_t		 der_len;
	const char	*uri;		/* a SPIFFE URI given directly instead of der, NULL when absent */
	size_t		 uri_len;
	const char	*target;	/* destination service; NULL -> the daemon's -target */
	size_t		 target_len;
};

struct authz_decision {
	bool		 allow;
	const char	*source_app;	/* caller's service name, "" when unknown; valid during the callback */
	const char	*reason;	/* short text, never NULL */
};

typedef void authz_done_cb(void *arg, const struct authz_decision *d);

struct authz_pending;

/*
 * Decides one query. Either calls done before returning (cache hit, or an immediate deny such as a
 * missing certificate) and returns NULL, or returns a handle and calls done exactly once later from the
 * loop, always within the configured decision deadline (a late agent answer turns into a deny).
 */
typedef struct authz_pending *authz_check_fn(void *ctx, const struct authz_query *q,
    authz_done_cb *done, void *arg);
/* Forgets a pending query (its SPOP connection went away): done will not be called. */
typedef void authz_cancel_fn(void *ctx, struct authz_pending *p);

struct authz;

struct authz_opts {
	const char	*default_target;	/* -target */
	double		 deadline;		/* seconds; every decision within this, default 0.4 */
	double		 ttl;			/* cache TTL when the intentions watch is unavailable, default 60 */
	double		 stale_if_error;	/* seconds a cached decision still answers while the agent fails, default 300 */
	size_t		 max_entries;		/* cache bound, default 65536 */
	size_t		 max_flights;		/* agent calls in flight at once, default 4096; a question
						 * beyond is answered as if the agent failed (stale or deny) */
};

struct authz *authz_new(struct ev_loop *loop, struct consul_client *consul,
    const struct authz_opts *opts, char *err, size_t errlen);
void authz_free(struct authz *a);
struct authz_pending *authz_check(void *authz, const struct authz_query *q, authz_done_cb *done, void *arg);
void authz_cancel(void *authz, struct authz_pending *p);
/* Drops every cached decision and re-reads every target's intentions (SIGHUP). */
void authz_flush(struct authz *a);
/* The decision cache, for persisting it across restarts (spoa/cache_snapshot.h). */
struct cache *authz_cache(struct authz *a);

#endif
