/*
 * server.h - connect-spoa's SPOP listener: accepts HAProxy's SPOE connections on a libev loop, negotiates
 * HELLO, turns every "check-intentions" message of a NOTIFY into one authz check and answers with an ACK
 * setting, in SESS scope (var-prefix chosen by the SPOE config, e.g. "connect"):
 *
 *	auth		INT32 1 (allow) or 0 (deny): matches both `-m int eq 1` and `-m bool`
 *	source_app	STRING, the caller's service name ("" when unknown)
 *	reason		STRING, a short text
 *
 * Message "check-intentions" arguments: cert (BINARY, ssl_c_der; NULL -> no certificate -> deny),
 * optional target (STRING), optional uri (STRING); other arguments and other messages are skipped.
 * A NOTIFY without that message gets an empty ACK. ACKs may leave in any order (pipelining).
 * The pointers of the struct authz_query given to check() point into the connection's input buffer:
 * valid only during the call (copy what an asynchronous answer needs). A check that neither answers
 * nor returns a handle is taken as a deny. A connection that goes away cancels its pending checks.
 *
 * Limits: a frame before HELLO may be at most SPOP_HELLO_MAX_FRAME (16380, HAProxy's default
 * max-frame-size); after HELLO at most min(HAProxy's max-frame-size, SPOP_MAX_FRAME_CAP). A bigger
 * length prefix is answered with AGENT-DISCONNECT 3 before its body is read.
 */
#ifndef HC_SPOA_SERVER_H
#define HC_SPOA_SERVER_H

#include <stddef.h>

#include "authz.h"

struct ev_loop;

struct spoa_server_opts {
	const char	*listen;	/* "host:port", "[v6]:port" or "unix:/path" */
	authz_check_fn	*check;		/* from authz.h */
	authz_cancel_fn	*cancel;
	void		*ctx;		/* passed to check/cancel */
	const char	*var_scope_note;/* unused, reserved */
	size_t		 max_conns;	/* default 4096 */
	size_t		 max_inflight;	/* NOTIFY frames pending per connection, default 1024 */
};

struct spoa_server;

/*
 * Binds and listens (TCP v4/v6, or a unix socket: a stale socket file is removed, a live one is an
 * error). Returns NULL with a message in err (e.g. "bind 127.0.0.1:8000: Address already in use").
 */
struct spoa_server *spoa_server_new(struct ev_loop *loop, const struct spoa_server_opts *o, char *err, size_t errlen);
/* Stop accepting, answer every NOTIFY in flight, send AGENT-DISCONNECT (status 0) to every connection, close;
 * then call done(arg). done is called from the loop, never from inside spoa_server_drain. */
void spoa_server_drain(struct spoa_server *s, void (*done)(void *arg), void *arg);
/* Closes everything at once (pending checks are cancelled) and frees s. Safe on NULL. */
void spoa_server_free(struct spoa_server *s);

/* ---- Additions beyond the interface above; useful to tests, benches and the daemon. ---- */

/* The bound TCP port (listen "127.0.0.1:0" picks a free one), 0 for a unix socket. */
int spoa_server_port(const struct spoa_server *s);
/* Number of open connections. */
size_t spoa_server_nconns(const struct spoa_server *s);
/*
 * Timeouts in seconds (defaults 10 and 30): how long a half-received frame (or a missing HELLO) may
 * take, and how long a peer may leave our output unread. 0 keeps the current value.
 */
void spoa_server_set_timeouts(struct spoa_server *s, double frame_timeout, double write_timeout);
/* Serves an already connected, non-blocking socket as if accepted (tests, fuzzing). -1 if refused. */
int spoa_server_adopt(struct spoa_server *s, int fd);

#endif
