/*
 * daemon.h - connect-certsync's state and apply loop: what the agent says (desired) against what HAProxy
 * runs (applied), and the smallest step that makes them meet.
 *
 *   watches (lib/consul.h)        desired                          applied through
 *   proxy config (hash)     ->   struct proxy_cfg              ->  render + `haproxy -c` + seamless reload
 *   leaf (index)            ->   leaf PEM                      ->  file, then runtime `set/commit ssl cert`
 *   roots (index)           ->   CA bundle                     ->  file; a new root that chains to the loaded
 *                                                                   bundle: none (leaf via runtime API); a
 *                                                                   removed root: seamless reload (runtime.c)
 *   per upstream (index or  ->   instance list                 ->  runtime `set server` on server slots;
 *     10 s poll)                                                    twice the slots + reload when full
 *
 * The first apply waits until config, leaf, roots and a first answer for every upstream are known; it
 * writes the certificate files, renders, checks, starts HAProxy (master-worker) and connect-spoa. A bad
 * new config (decode error, render error, `-c` failure, failed reload) is logged and the last good one
 * keeps serving. The agent being unreachable changes nothing applied; watches back off and resume.
 * Persistent 404s on the proxy's own config (deregistered) stop everything with exit status 0.
 *
 * Only this layer and main.c log.
 */
#ifndef HC_DAEMON_H
#define HC_DAEMON_H

#include <stdbool.h>

#include "consul.h"
#include "log.h"

struct ev_loop;
struct daemon;

#define DAEMON_QUERY_POLL	10.0	/* prepared queries are re-executed this often, seconds */
#define DAEMON_RESYNC		60.0	/* server slots checked against HAProxy's state this often */
#define DAEMON_INITIAL_SLOTS	4	/* server slots per upstream at first; doubled when full */
#define DAEMON_GONE_COUNT	3	/* consecutive 404s on the own config ... */
#define DAEMON_GONE_SECONDS	10.0	/* ... spanning at least this long: deregistered, exit 0 */

struct daemon_opts {
	const char	*proxy_id;	/* managed (env) or -proxy-id; NULL with sidecar_for */
	bool		 managed;	/* watch /v1/agent/connect/proxy/<id> instead of /v1/agent/service/<id> */
	const char	*sidecar_for;	/* -sidecar-for <service id> */
	const char	*data_dir;	/* absolute, exists, mode 0700 */
	const char	*haproxy_bin;
	const char	*spoa_bin;
	const char	*template_dir;
	const char	*stats_addr;	/* NULL: none */
	const char	*spoa_http_addr;	/* -http-addr to hand to connect-spoa, NULL: it reads the env */
	const char	*spoa_token_file;	/* -token-file to hand to connect-spoa, NULL: env */
	const char	*spoa_metrics_addr;	/* -metrics-addr to hand to connect-spoa, NULL: none */
	const char	*spoa_busy_poll;	/* -busy-poll to hand to connect-spoa (valid, > 0), NULL: none */
	bool		 once;		/* write certificates and configs, then exit */
	const char	*snapshot_path;	/* last-known-good state (snapshot.h); NULL: none */
	int		 nbthread;
	enum log_level	 log_level;
	const struct consul_cfg *consul;
};

/* Creates the daemon on loop (the default loop: children are watched with ev_child). NULL + err on failure. */
struct daemon *daemon_new(struct ev_loop *loop, const struct daemon_opts *o, char *err, size_t errlen);
/* Starts the watches. The loop then runs until daemon_shutdown completes (it calls ev_break). */
int  daemon_start(struct daemon *d, char *err, size_t errlen);
/* Graceful stop: children stopped (HAProxy soft-stop, connect-spoa SIGTERM), then ev_break. */
void daemon_shutdown(struct daemon *d, int exit_code);
/* SIGHUP: refresh every watch, reload the templates and re-render (reload if the result differs). */
void daemon_hup(struct daemon *d);
/*
 * SIGHUP's token step: consul_client_reread_token on the daemon's agent client (requests in flight finish
 * with the old token; daemon_hup's refresh re-asks every watch), then, when the token changed,
 * connect-spoa is sent SIGHUP so that it re-reads the file too. Returns as consul_client_reread_token.
 */
int  daemon_reread_token(struct daemon *d, struct consul_cfg *cfg, bool *changed, char *err, size_t errlen);
int  daemon_exit_code(const struct daemon *d);
void daemon_free(struct daemon *d);

/* Pure helpers (exposed for tests). */
/* A HAProxy-safe backend name for upstream i: [A-Za-z0-9_.-], at most 64 chars. */
void daemon_backend_name(const char *dest_name, const char *dc, int is_query, size_t i, char *out, size_t outlen);
/* Slots needed for n instances: DAEMON_INITIAL_SLOTS doubled until >= n (never below current). */
unsigned daemon_slots_for(unsigned current, size_t n);

#endif
