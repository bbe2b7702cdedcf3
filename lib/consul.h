/*
 * consul.h - the Consul agent HTTP client both daemons share.
 *
 * Non-blocking: libcurl multi driven by a libev loop (curl's evhiperfifo pattern, with its slips fixed).
 * Many requests in flight on one loop. No logging here: every failure is reported to the caller's
 * callback as a struct consul_resp with status 0 and an error text.
 *
 * Configuration is read exactly as Consul's own CLI reads it (see consul_cfg_from_env), then flags
 * override it (consul_cfg_set_*).
 */
#ifndef HC_CONSUL_H
#define HC_CONSUL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ev_loop;

/* Hard cap on a response body from the agent unless the caller sets another (consul_cfg.max_body). */
#define CONSUL_DEFAULT_MAX_BODY (8u * 1024u * 1024u)

struct consul_cfg {
	char	*base_url;	/* "http://127.0.0.1:8500" or "https://..."; for unix sockets "http://localhost" */
	char	*unix_path;	/* non-NULL for unix:///path addresses */
	char	*token;		/* sent as X-Consul-Token; NULL or "" for none */
	char	*token_file;	/* the file token was read from (-token-file, CONSUL_HTTP_TOKEN_FILE), else NULL */
	bool	 ssl;
	bool	 ssl_verify;	/* default true */
	char	*cacert;	/* CONSUL_CACERT */
	char	*capath;	/* CONSUL_CAPATH */
	char	*client_cert;	/* CONSUL_CLIENT_CERT */
	char	*client_key;	/* CONSUL_CLIENT_KEY */
	char	*tls_server_name; /* CONSUL_TLS_SERVER_NAME */
	size_t	 max_body;	/* 0 -> CONSUL_DEFAULT_MAX_BODY */
};

/*
 * Fills cfg from the environment: CONSUL_HTTP_ADDR (host:port, http://, https://, unix:///path; default
 * 127.0.0.1:8500), CONSUL_HTTP_SSL, CONSUL_HTTP_SSL_VERIFY, CONSUL_CACERT, CONSUL_CAPATH, CONSUL_CLIENT_CERT,
 * CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME, and the token: CONNECT_PROXY_TOKEN, then CONSUL_PROXY_TOKEN,
 * then CONSUL_HTTP_TOKEN, then CONSUL_HTTP_TOKEN_FILE (first non-empty wins; a managed proxy's own token
 * is the one the agent expects from it). Returns 0, or -1 with err filled.
 */
int  consul_cfg_from_env(struct consul_cfg *cfg, char *err, size_t errlen);
/*
 * Overrides from flags (-http-addr, -token, -token-file). Return 0, or -1 with err filled. A token file
 * holds one line (surrounding white space trimmed, as Consul does); an empty one means no token. set_token
 * forgets token_file, set_token_file remembers it.
 */
int  consul_cfg_set_addr(struct consul_cfg *cfg, const char *addr, char *err, size_t errlen);
int  consul_cfg_set_token(struct consul_cfg *cfg, const char *token);
int  consul_cfg_set_token_file(struct consul_cfg *cfg, const char *path, char *err, size_t errlen);
/*
 * SIGHUP: reads cfg->token_file again (a token given by value, flag or environment, is never re-read).
 * Returns 1 when the file was read (cfg->token replaced; *changed, if not NULL, says whether it differs
 * from the old one), 0 when the token does not come from a file, -1 with err filled when the file is
 * missing, unreadable, too big, empty or holds more than one line: cfg->token is then left as it was
 * (a rotation tool caught between truncating and writing the file must not drop the token).
 */
int  consul_cfg_reread_token(struct consul_cfg *cfg, bool *changed, char *err, size_t errlen);
void consul_cfg_free(struct consul_cfg *cfg);

struct consul_resp {
	int		 status;	/* HTTP status; 0 for a transport error (connect refused, timeout, too big) */
	const char	*body;		/* NUL-terminated, len bytes; valid only during the callback */
	size_t		 len;
	uint64_t	 index;		/* X-Consul-Index, 0 when absent */
	const char	*content_hash;	/* X-Consul-ContentHash, NULL when absent */
	const char	*cache;		/* X-Cache ("HIT"/"MISS"), NULL when absent */
	const char	*error;		/* transport error text when status == 0, else NULL */
	double		 elapsed;	/* seconds from send to completion */
};

struct consul_client;
struct consul_req;

typedef void consul_cb(void *arg, const struct consul_resp *resp);

/* The client copies what it needs from cfg. Returns NULL with err filled on failure. */
struct consul_client *consul_client_new(struct ev_loop *loop, const struct consul_cfg *cfg,
    char *err, size_t errlen);
/* Cancels every request and watch still in flight (their callbacks are not called), then frees. */
void consul_client_free(struct consul_client *c);
/*
 * Replaces the token sent as X-Consul-Token (NULL or "": none) from now on: every request started after
 * this, including the next round of every watch, carries it; requests already in flight (a blocking
 * query included) finish with the old one (consul_watch_refresh re-asks at once). Returns 0, or -1 with err
 * filled (a line break in the token, out of memory) and the old token kept.
 */
int  consul_client_set_token(struct consul_client *c, const char *token, char *err, size_t errlen);
/*
 * SIGHUP's token step of both daemons: consul_cfg_reread_token, then the client uses what was read.
 * Returns 1 (re-read and in use; *changed as consul_cfg_reread_token says), 0 (the token does not come
 * from a file), or -1 with err filled: the client keeps the token it had.
 */
int  consul_client_reread_token(struct consul_client *c, struct consul_cfg *cfg, bool *changed, char *err,
    size_t errlen);

/*
 * Starts one request. path includes the query string ("/v1/agent/connect/authorize", "/v1/agent/self?x=1").
 * body may be NULL. timeout in seconds (0: none). cb is called exactly once from the loop, never from
 * inside consul_request itself, unless the request is cancelled first. Returns NULL only when out of memory
 * or on a libcurl setup error.
 */
struct consul_req *consul_request(struct consul_client *c, const char *method, const char *path,
    const char *body, size_t bodylen, double timeout, consul_cb *cb, void *arg);
/* Cancels a request in flight; its callback will not be called. Safe from inside other callbacks. */
void consul_cancel(struct consul_req *req);

/*
 * Blocking-query watches. A watch GETs path (which may carry its own query string) repeatedly:
 *   CONSUL_WATCH_INDEX: adds index=<last X-Consul-Index>&wait=<wait>. Index rules follow Consul's API
 *     client: an index that goes backwards resets to 0; an index below 1 is treated as 1.
 *   CONSUL_WATCH_HASH: adds hash=<last X-Consul-ContentHash>&wait=<wait>.
 * cb is called with every 2xx response whose index/hash differs from the last one delivered (the first
 * always), and with every failure (status 0 or non-2xx) so the caller can track agent health. After a
 * failure the watch retries with exponential back-off and jitter (min_backoff .. max_backoff); after a
 * success it reissues at once. Never a hot loop: a 2xx answer that came back faster than 50 ms with an
 * unchanged index/hash also waits a little before the next request.
 * The callback may call consul_watch_stop on its own watch.
 */
enum consul_watch_kind {
	CONSUL_WATCH_INDEX,
	CONSUL_WATCH_HASH,
	CONSUL_WATCH_POLL,	/* no blocking: re-GET every poll_interval (prepared queries) */
};

struct consul_watch_opts {
	enum consul_watch_kind kind;
	const char	*wait;		/* Go duration for wait=, default "5m" */
	double		 poll_interval;	/* CONSUL_WATCH_POLL only, seconds, default 30 */
	double		 min_backoff;	/* default 0.1 s */
	double		 max_backoff;	/* default 10 s */
};

struct consul_watch;

struct consul_watch *consul_watch_start(struct consul_client *c, const char *path,
    const struct consul_watch_opts *opts, consul_cb *cb, void *arg);
void consul_watch_stop(struct consul_watch *w);
/* Forces an immediate re-fetch (SIGHUP): drops the blocking request in flight and asks again with index 0. */
void consul_watch_refresh(struct consul_watch *w);

/* Percent-encodes s into out for use in a URL path segment or query value. -1 when it does not fit. */
int consul_urlencode(const char *s, char *out, size_t outlen);

#endif
