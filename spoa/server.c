/*
 * server.c - connect-spoa's SPOP listener and connections on libev. See server.h for the contract.
 *
 * One connection = one socket, one input buffer holding at most one frame plus what followed it
 * (never more than 4 + the negotiated max-frame-size), and one output buffer. Frames are answered
 * in the order their checks complete (pipelining). Lifetimes:
 *
 *  - A connection that must go (EOF, I/O error, timeout) is "killed": its watchers stop, its socket
 *    closes, and it moves to a graveyard that a zero-delay timer reaps from the loop. Reaping cancels
 *    its pending checks. Deferring matters because a kill can happen inside an authz callback (a
 *    write error while answering), where calling back into authz would be re-entrant.
 *  - A protocol error or a drain sends AGENT-DISCONNECT, stops reading, and once the output has left,
 *    shuts down our side and discards input until the peer closes (or a short linger timeout), so
 *    the kernel does not reset the connection and destroy the DISCONNECT frame on its way.
 *
 * Backpressure: when the output buffer holds more than OUT_HIGH bytes, or max_inflight NOTIFYs wait
 * for a decision, frames are left in the input buffer and the socket is not read; memory per
 * connection stays bounded by the frame cap plus the answers to in-flight frames.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "metrics.h"
#include "server.h"
#include "spop.h"

#define IN_INIT		16384u		/* first input buffer; grows up to 4 + max frame */
#define OUT_INIT	16384u
#define OUT_HIGH	65536u		/* stop reading while more than this waits to be written */
#define OUT_HARD	(8u * 1024u * 1024u)	/* never reached with the bounds above: a broken invariant */
#define MAX_CHECKS	4u		/* check-intentions messages per NOTIFY (HAProxy sends one) */
#define VAR_TEXT_MAX	255u		/* source_app and reason values in an ACK */
#define LINGER_TIMEOUT	2.0
#define ACCEPT_BATCH	64
#define ACCEPT_RETRY	0.1		/* after EMFILE and friends */
#define DEFAULT_MAX_CONNS	4096u
#define DEFAULT_MAX_INFLIGHT	1024u
#define AGENT_CAPABILITIES	"pipelining"

struct spoa_conn;

struct spoa_check {
	struct spoa_req		*req;
	struct authz_pending	*handle;
	bool			 done;
};

/* One NOTIFY waiting for its checks. */
struct spoa_req {
	LIST_ENTRY(spoa_req)	 entry;
	struct spoa_conn	*conn;
	uint64_t		 stream_id;
	uint64_t		 frame_id;
	unsigned		 outstanding;	/* checks not answered, +1 while dispatching */
	unsigned		 nchecks;
	bool			 allow;
	bool			 have_deny;
	char			 source_app[VAR_TEXT_MAX + 1];
	char			 reason[VAR_TEXT_MAX + 1];
	struct spoa_check	 checks[MAX_CHECKS];
};

struct spoa_conn {
	LIST_ENTRY(spoa_conn)	 entry;		/* in srv->conns, or srv->graveyard once dead */
	struct spoa_server	*srv;
	int			 fd;
	ev_io			 rio;
	ev_io			 wio;
	ev_timer		 ftmo;		/* HELLO, half-received frame, or linger */
	ev_timer		 wtmo;		/* output not taken by the peer */
	ev_timer		 kick;		/* resume processing buffered frames from the loop */
	uint8_t			*in;
	size_t			 in_len, in_cap;
	uint8_t			*out;
	size_t			 out_off, out_len, out_cap;
	uint32_t		 max_frame;	/* accepted frame length (without the prefix) */
	unsigned		 inflight;
	unsigned		 busy;		/* > 0 while conn_process runs */
	bool			 hello_done;
	bool			 closing;	/* DISCONNECT queued or healthcheck done: no more frames */
	bool			 lingering;	/* our side shut down, discarding input */
	bool			 paused;	/* not reading because of backpressure */
	bool			 dead;
	LIST_HEAD(, spoa_req)	 reqs;
};

struct spoa_server {
	struct ev_loop		*loop;
	struct spoa_server_opts	 opts;
	char			*listen;
	char			*unix_path;	/* to unlink at free, when we created it */
	int			 lfd;
	int			 port;
	ev_io			 accept_w;
	ev_timer		 accept_retry;
	ev_timer		 reap_w;
	bool			 accept_paused;
	size_t			 nconns;
	LIST_HEAD(, spoa_conn)	 conns;
	LIST_HEAD(, spoa_conn)	 graveyard;
	double			 frame_timeout;
	double			 write_timeout;
	bool			 draining;
	void			(*drain_done)(void *);
	void			*drain_arg;
	LIST_HEAD(, spoa_req)	 req_pool;	/* finished requests kept for reuse */
	size_t			 req_pooled;
};

static void conn_process(struct spoa_conn *c);

/*
 * Requests come and go at the decision rate, ~700 bytes each, many in flight at once (past glibc's
 * per-size cache of 7): keep up to REQ_POOL_MAX finished ones instead of calloc/free per NOTIFY (11% of
 * the instructions of a cached decision). Fields are set by req_get's caller; no zeroing.
 */
#ifdef __SANITIZE_ADDRESS__
#define REQ_POOL_MAX	0u	/* every request freed: AddressSanitizer sees any use after the end */
#else
#define REQ_POOL_MAX	1024u
#endif

static struct spoa_req *
req_get(struct spoa_server *s)
{
	struct spoa_req *r = LIST_FIRST(&s->req_pool);

	if (r != NULL) {
		LIST_REMOVE(r, entry);
		s->req_pooled--;
		return r;
	}
	return malloc(sizeof(*r));
}

static void
req_put(struct spoa_server *s, struct spoa_req *r)
{
#if REQ_POOL_MAX > 0
	if (s->req_pooled < REQ_POOL_MAX) {
		LIST_INSERT_HEAD(&s->req_pool, r, entry);
		s->req_pooled++;
		return;
	}
#else
	(void)s;
#endif
	free(r);
}

/* Forgets every request of c: its checks still waiting for the agent are cancelled (no answer follows). */
static void
conn_drop_reqs(struct spoa_conn *c)
{
	struct spoa_server	*s = c->srv;
	struct spoa_req		*r;
	unsigned		 i;

	while ((r = LIST_FIRST(&c->reqs)) != NULL) {
		LIST_REMOVE(r, entry);
		for (i = 0; i < r->nchecks; i++)
			if (!r->checks[i].done && r->checks[i].handle != NULL && s->opts.cancel != NULL)
				s->opts.cancel(s->opts.ctx, r->checks[i].handle);
		req_put(s, r);
	}
}
static void conn_flush(struct spoa_conn *c);
static void conn_kill(struct spoa_conn *c);
static void conn_check_drained(struct spoa_conn *c);
static void accept_update(struct spoa_server *s);

/* ---- small helpers ---- */

static uint32_t
be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static int
set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
		return -1;
	return 0;
}

static void
text_copy(char *dst, const char *src)
{
	size_t n = src != NULL ? strnlen(src, VAR_TEXT_MAX) : 0;

	if (n > 0)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

/* ---- output ---- */

/* Makes room for n more output bytes; -1 when it would pass OUT_HARD or memory is short. */
static int
out_reserve(struct spoa_conn *c, size_t n)
{
	size_t	 ncap;
	uint8_t	*p;

	if (c->out_off > 0 && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_cap - c->out_len >= n)
		return 0;
	if (c->out_off > 0) {	/* compact first */
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
		if (c->out_cap - c->out_len >= n)
			return 0;
	}
	if (n > OUT_HARD - c->out_len)
		return -1;
	ncap = c->out_cap > 0 ? c->out_cap : OUT_INIT;
	while (ncap - c->out_len < n)
		ncap *= 2;
	if (ncap > OUT_HARD)
		ncap = OUT_HARD;
	if ((p = realloc(c->out, ncap)) == NULL)
		return -1;
	c->out = p;
	c->out_cap = ncap;
	return 0;
}

static void
out_append(struct spoa_conn *c, const uint8_t *p, size_t n)
{
	if (c->dead)
		return;
	if (out_reserve(c, n) == -1) {
		conn_kill(c);
		return;
	}
	memcpy(c->out + c->out_len, p, n);
	c->out_len += n;
	spoa_metrics.spop_frames_out++;
}

/*
 * Queues AGENT-DISCONNECT with status e, stops taking frames and drops pending checks (HAProxy will not
 * read their answers). The connection closes once the output has left.
 */
static void
conn_disconnect(struct spoa_conn *c, enum spop_err e, const char *message)
{
	uint8_t			 buf[512];
	long			 n;
	struct spoa_server	*s = c->srv;

	if (c->closing || c->dead)
		return;
	c->closing = true;
	ev_io_stop(s->loop, &c->rio);
	ev_timer_stop(s->loop, &c->ftmo);
	ev_timer_stop(s->loop, &c->kick);
	conn_drop_reqs(c);
	c->inflight = 0;
	n = spop_build_agent_disconnect(buf, sizeof(buf), (uint32_t)e,
	    message != NULL ? message : spop_strerror(e));
	if (n > 0)
		out_append(c, buf, (size_t)n);
	spoa_metrics.spop_disconnects_sent++;
	if (e != SPOP_OK)
		spoa_metrics.spop_protocol_errors++;
	if (c->busy == 0)
		conn_flush(c);
}

/* Our side is done: shut down writing, discard input until EOF or the linger timeout. */
static void
conn_linger(struct spoa_conn *c)
{
	struct spoa_server *s = c->srv;

	if (c->lingering || c->dead)
		return;
	c->lingering = true;
	if (shutdown(c->fd, SHUT_WR) == -1) {
		conn_kill(c);
		return;
	}
	ev_timer_stop(s->loop, &c->ftmo);
	ev_timer_set(&c->ftmo, LINGER_TIMEOUT, 0.);
	ev_timer_start(s->loop, &c->ftmo);
	ev_io_start(s->loop, &c->rio);
}

/* Resumes reading (and processing buffered frames from the loop) when backpressure has eased. */
static void
conn_maybe_resume(struct spoa_conn *c)
{
	struct spoa_server *s = c->srv;

	if (!c->paused || c->dead || c->closing)
		return;
	if (c->out_len - c->out_off > OUT_HIGH || c->inflight >= s->opts.max_inflight)
		return;
	c->paused = false;
	if (!s->draining)
		ev_io_start(s->loop, &c->rio);
	if (c->in_len > 0 && !ev_is_active(&c->kick)) {
		ev_timer_set(&c->kick, 0., 0.);
		ev_timer_start(s->loop, &c->kick);
	}
}

/* Writes what it can; arms the write watcher and its timeout for the rest. */
static void
conn_flush(struct spoa_conn *c)
{
	struct spoa_server	*s = c->srv;
	ssize_t			 n;
	bool			 progress = false;

	if (c->dead)
		return;
	while (c->out_off < c->out_len) {
		n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_kill(c);
			return;
		}
		c->out_off += (size_t)n;
		progress = true;
	}
	if (c->out_off < c->out_len) {
		ev_io_start(s->loop, &c->wio);
		/* The timeout counts from the last time the peer took something. */
		if (progress || !ev_is_active(&c->wtmo)) {
			ev_timer_stop(s->loop, &c->wtmo);
			ev_timer_set(&c->wtmo, s->write_timeout, 0.);
			ev_timer_start(s->loop, &c->wtmo);
		}
		return;
	}
	c->out_off = c->out_len = 0;
	ev_io_stop(s->loop, &c->wio);
	ev_timer_stop(s->loop, &c->wtmo);
	if (c->closing) {
		conn_linger(c);
		return;
	}
	conn_maybe_resume(c);
}

/* ---- checks and ACKs ---- */

/* Builds the ACK of r, fitting it under the negotiated max-frame-size by shortening the texts. */
static void
req_send_ack(struct spoa_req *r)
{
	struct spoa_conn	*c = r->conn;
	uint8_t			 buf[64 + 2 * VAR_TEXT_MAX + 64];
	struct spop_writer	 w;
	struct spop_data	 d;
	long			 n = -1;
	int			 attempt;
	size_t			 app_len = strlen(r->source_app), reason_len = strlen(r->reason);

	for (attempt = 0; attempt < 3; attempt++) {
		spop_writer_init(&w, buf, sizeof(buf));
		spop_ack_begin(&w, r->stream_id, r->frame_id);
		if (r->nchecks > 0) {
			d = spop_int32(r->allow ? 1 : 0);
			spop_ack_set_var(&w, SPOP_SCOPE_SESS, "auth", 4, &d);
			d = spop_string(r->source_app, app_len);
			spop_ack_set_var(&w, SPOP_SCOPE_SESS, "source_app", 10, &d);
			d = spop_string(r->reason, reason_len);
			spop_ack_set_var(&w, SPOP_SCOPE_SESS, "reason", 6, &d);
		}
		n = spop_frame_end(&w);
		if (n > 0 && (size_t)n - 4 <= c->max_frame)
			break;
		/* Too big for this peer (max-frame-size can be as low as 256): drop the texts. */
		if (attempt == 0)
			reason_len = reason_len > 32 ? 32 : reason_len;
		else
			app_len = app_len > 32 ? 32 : app_len;
		n = -1;
	}
	if (n > 0)
		out_append(c, buf, (size_t)n);
}

/* Called when the last check of r has answered (or at once for a NOTIFY without checks). */
static void
req_finish(struct spoa_req *r)
{
	struct spoa_conn *c = r->conn;

	LIST_REMOVE(r, entry);
	c->inflight--;
	if (!c->dead && !c->closing) {
		req_send_ack(r);
		if (c->busy == 0)
			conn_flush(c);
	}
	req_put(c->srv, r);
	if (!c->dead && c->busy == 0) {
		conn_maybe_resume(c);
		conn_check_drained(c);
	}
}

static void
check_done(void *arg, const struct authz_decision *d)
{
	struct spoa_check	*k = arg;
	struct spoa_req		*r = k->req;

	if (k->done)
		return;		/* defensive: done twice */
	k->done = true;
	k->handle = NULL;
	if (d == NULL || !d->allow) {
		if (!r->have_deny) {
			r->have_deny = true;
			text_copy(r->source_app, d != NULL ? d->source_app : "");
			text_copy(r->reason, d != NULL ? d->reason : "no decision");
		}
		r->allow = false;
	} else if (!r->have_deny) {
		text_copy(r->source_app, d->source_app);
		text_copy(r->reason, d->reason);
	}
	if (--r->outstanding == 0)
		req_finish(r);
}

/* Arguments of one check-intentions message. */
static void
collect_query(struct spop_notify_iter *it, struct authz_query *q)
{
	struct spop_kv arg;

	memset(q, 0, sizeof(*q));
	while (spop_notify_next_arg(it, &arg) == 1) {
		if (arg.name.len == 4 && memcmp(arg.name.ptr, "cert", 4) == 0) {
			/* Only BINARY is a certificate; NULL (no client certificate) or anything else -> der NULL -> deny. */
			if (arg.value.type == SPOP_DT_BINARY && arg.value.u.str.len > 0) {
				q->der = (const uint8_t *)arg.value.u.str.ptr;
				q->der_len = arg.value.u.str.len;
			} else {
				q->der = NULL;
				q->der_len = 0;
			}
		} else if (arg.name.len == 6 && memcmp(arg.name.ptr, "target", 6) == 0) {
			if (arg.value.type == SPOP_DT_STRING && arg.value.u.str.len > 0) {
				q->target = arg.value.u.str.ptr;
				q->target_len = arg.value.u.str.len;
			}
		} else if (arg.name.len == 3 && memcmp(arg.name.ptr, "uri", 3) == 0) {
			if (arg.value.type == SPOP_DT_STRING && arg.value.u.str.len > 0) {
				q->uri = arg.value.u.str.ptr;
				q->uri_len = arg.value.u.str.len;
			}
		}
	}
}

static void
handle_notify(struct spoa_conn *c, const struct spop_frame *f)
{
	struct spoa_server	*s = c->srv;
	struct spop_notify_iter	 it;
	struct spop_str		 name;
	struct authz_query	 q[MAX_CHECKS];
	struct authz_pending	*h;
	struct spoa_req		*r;
	unsigned		 nargs, nq = 0, extra = 0, i;
	int			 rc;

	spoa_metrics.spop_notify++;
	/* First the whole payload is walked and validated; only then checks start. */
	spop_notify_init(&it, f->payload, f->payload_len);
	while ((rc = spop_notify_next_msg(&it, &name, &nargs)) == 1) {
		if (name.len != 16 || memcmp(name.ptr, "check-intentions", 16) != 0)
			continue;	/* its arguments are skipped by the next call */
		if (nq < MAX_CHECKS)
			collect_query(&it, &q[nq++]);
		else
			extra++;
	}
	if (rc == -1) {
		conn_disconnect(c, SPOP_ERR_INVALID, NULL);
		return;
	}
	if ((r = req_get(s)) == NULL) {
		conn_disconnect(c, SPOP_ERR_RES, NULL);
		return;
	}
	r->conn = c;
	r->stream_id = f->stream_id;
	r->frame_id = f->frame_id;
	r->allow = true;
	r->have_deny = false;
	r->source_app[0] = '\0';
	r->reason[0] = '\0';
	r->nchecks = nq;
	r->outstanding = nq + 1;	/* our own reference until every check is dispatched */
	LIST_INSERT_HEAD(&c->reqs, r, entry);
	c->inflight++;
	if (extra > 0) {	/* more identities than we check: fail closed */
		r->allow = false;
		r->have_deny = true;
		text_copy(r->reason, "too many check-intentions messages");
	}
	for (i = 0; i < nq; i++) {
		r->checks[i].req = r;
		r->checks[i].handle = NULL;
		r->checks[i].done = false;
		h = s->opts.check(s->opts.ctx, &q[i], check_done, &r->checks[i]);
		if (r->checks[i].done)
			continue;
		if (h == NULL) {
			/* Neither answered nor pending breaks authz's contract: deny now rather than stall. */
			check_done(&r->checks[i], NULL);
			continue;
		}
		r->checks[i].handle = h;
	}
	if (--r->outstanding == 0)
		req_finish(r);
}

/* ---- frames ---- */

static void
handle_hello(struct spoa_conn *c, const struct spop_frame *f)
{
	struct spop_hello	h;
	uint32_t		fs;
	enum spop_err		e;
	uint8_t			buf[128];
	long			n;

	if (f->type != SPOP_FRM_HAPROXY_HELLO) {
		conn_disconnect(c, SPOP_ERR_INVALID, "expected HAPROXY-HELLO");
		return;
	}
	e = spop_hello_parse(f->payload, f->payload_len, SPOP_MAX_FRAME_CAP, &h, &fs);
	if (e != SPOP_OK) {
		conn_disconnect(c, e, NULL);
		return;
	}
	n = spop_build_agent_hello(buf, sizeof(buf), fs, AGENT_CAPABILITIES);
	if (n <= 0) {
		conn_disconnect(c, SPOP_ERR_RES, NULL);
		return;
	}
	out_append(c, buf, (size_t)n);
	c->hello_done = true;
	c->max_frame = fs;
	if (h.healthcheck) {
		/* option spop-check: AGENT-HELLO then close, no DISCONNECT. */
		spoa_metrics.spop_healthchecks++;
		c->closing = true;
		ev_io_stop(c->srv->loop, &c->rio);
	}
}

static void
handle_frame(struct spoa_conn *c, const uint8_t *p, size_t len)
{
	struct spop_frame	f;
	enum spop_err		e;
	uint32_t		status;
	struct spop_str		msg;

	spoa_metrics.spop_frames_in++;
	e = spop_frame_decode(p, len, &f);
	if (e != SPOP_OK) {
		conn_disconnect(c, e, NULL);
		return;
	}
	if (!c->hello_done) {
		handle_hello(c, &f);
		return;
	}
	switch (f.type) {
	case SPOP_FRM_NOTIFY:
		handle_notify(c, &f);
		break;
	case SPOP_FRM_HAPROXY_DISCON:
		if (spop_disconnect_parse(f.payload, f.payload_len, &status, &msg) != SPOP_OK) {
			conn_disconnect(c, SPOP_ERR_INVALID, NULL);
			break;
		}
		conn_disconnect(c, SPOP_OK, NULL);
		break;
	default:	/* a second HELLO, agent frames, unknown types */
		conn_disconnect(c, SPOP_ERR_INVALID, NULL);
		break;
	}
}

/* (Re)arms the frame timeout while a partial frame (or the HELLO) is awaited. */
static void
conn_arm_ftmo(struct spoa_conn *c, bool progress, bool partial)
{
	struct spoa_server *s = c->srv;

	if (c->closing || c->dead)
		return;
	if (progress || !partial)
		ev_timer_stop(s->loop, &c->ftmo);
	if ((partial || !c->hello_done) && !ev_is_active(&c->ftmo)) {
		ev_timer_set(&c->ftmo, s->frame_timeout, 0.);
		ev_timer_start(s->loop, &c->ftmo);
	}
}

/*
 * Handles every complete frame in the input buffer, as far as backpressure allows; keeps the rest.
 */
static void
conn_process(struct spoa_conn *c)
{
	struct spoa_server	*s = c->srv;
	size_t			 pos = 0;
	uint32_t		 flen;
	bool			 progress = false, partial = false;
	uint8_t			*p;

	c->busy++;
	while (!c->closing && !c->dead) {
		if (c->out_len - c->out_off > OUT_HIGH || c->inflight >= s->opts.max_inflight) {
			c->paused = true;
			ev_io_stop(s->loop, &c->rio);
			break;
		}
		if (c->in_len - pos < 4) {
			partial = c->in_len > pos;
			break;
		}
		flen = be32(c->in + pos);
		if (flen > c->max_frame) {
			/* Refused before its body is read: nothing beyond the prefix is waited for. */
			conn_disconnect(c, SPOP_ERR_TOO_BIG, NULL);
			break;
		}
		if (flen == 0) {
			conn_disconnect(c, SPOP_ERR_INVALID, "empty frame");
			break;
		}
		if (c->in_len - pos - 4 < flen) {
			partial = true;
			if (c->in_cap < (size_t)flen + 4) {
				if (pos > 0) {
					memmove(c->in, c->in + pos, c->in_len - pos);
					c->in_len -= pos;
					pos = 0;
				}
				if ((p = realloc(c->in, (size_t)flen + 4)) == NULL) {
					conn_disconnect(c, SPOP_ERR_RES, NULL);
					break;
				}
				c->in = p;
				c->in_cap = (size_t)flen + 4;
			}
			break;
		}
		handle_frame(c, c->in + pos + 4, flen);
		pos += 4 + (size_t)flen;
		progress = true;
	}
	c->busy--;
	if (c->dead)
		return;
	if (c->closing) {
		c->in_len = 0;
	} else if (pos > 0) {
		memmove(c->in, c->in + pos, c->in_len - pos);
		c->in_len -= pos;
	}
	conn_arm_ftmo(c, progress, partial);
	conn_flush(c);
	if (!c->dead)
		conn_check_drained(c);
}

/* ---- connection events ---- */

static void
conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct spoa_conn	*c = w->data;
	uint8_t			 discard[4096];
	uint8_t			*p;
	ssize_t			 n;

	if (c->lingering) {
		for (;;) {
			n = recv(c->fd, discard, sizeof(discard), 0);
			if (n > 0)
				continue;
			if (n == -1 && errno == EINTR)
				continue;
			if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return;
			conn_kill(c);	/* EOF or error: done */
			return;
		}
	}
	if (c->in == NULL) {
		if ((c->in = malloc(IN_INIT)) == NULL) {
			conn_kill(c);
			return;
		}
		c->in_cap = IN_INIT;
	}
	if (c->in_len == c->in_cap) {
		/* Full of complete frames not processed yet (backpressure): process, which pauses if needed. */
		conn_process(c);
		return;
	}
	n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
	if (n == -1) {
		if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		conn_kill(c);
		return;
	}
	if (n == 0) {
		conn_kill(c);	/* the peer went away: pending checks are cancelled at reap */
		return;
	}
	c->in_len += (size_t)n;
	conn_process(c);
	/* Give back a buffer grown for one big frame once it is no longer needed. */
	if (!c->dead && c->in_len == 0 && c->in_cap > IN_INIT && (p = realloc(c->in, IN_INIT)) != NULL) {
		c->in = p;
		c->in_cap = IN_INIT;
	}
}

static void
conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct spoa_conn *c = w->data;

	conn_flush(c);
}

static void
conn_ftmo_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct spoa_conn *c = w->data;

	if (c->lingering || c->closing) {
		conn_kill(c);
		return;
	}
	/* A frame (or the HELLO) is taking too long: tell the peer, then close. */
	conn_disconnect(c, SPOP_ERR_TIMEOUT, NULL);
}

static void
conn_wtmo_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	conn_kill(w->data);
}

static void
conn_kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct spoa_conn *c = w->data;

	if (!c->dead && !c->closing)
		conn_process(c);
}

/* ---- connection lifetime ---- */

static void
reap_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct spoa_server	*s = w->data;
	struct spoa_conn	*c;

	while ((c = LIST_FIRST(&s->graveyard)) != NULL) {
		LIST_REMOVE(c, entry);
		conn_drop_reqs(c);
		free(c->in);
		free(c->out);
		free(c);
	}
	if (s->draining && s->nconns == 0 && s->drain_done != NULL) {
		void (*done)(void *) = s->drain_done;

		s->drain_done = NULL;
		done(s->drain_arg);
	}
}

static void
schedule_reap(struct spoa_server *s)
{
	if (!ev_is_active(&s->reap_w)) {
		ev_timer_set(&s->reap_w, 0., 0.);
		ev_timer_start(s->loop, &s->reap_w);
	}
}

/* Closes the socket now; the memory and the pending checks go at the next reap (see the top). */
static void
conn_kill(struct spoa_conn *c)
{
	struct spoa_server *s = c->srv;

	if (c->dead)
		return;
	c->dead = true;
	ev_io_stop(s->loop, &c->rio);
	ev_io_stop(s->loop, &c->wio);
	ev_timer_stop(s->loop, &c->ftmo);
	ev_timer_stop(s->loop, &c->wtmo);
	ev_timer_stop(s->loop, &c->kick);
	close(c->fd);
	c->fd = -1;
	LIST_REMOVE(c, entry);
	LIST_INSERT_HEAD(&s->graveyard, c, entry);
	s->nconns--;
	spoa_metrics.spop_conns_active--;
	schedule_reap(s);
	accept_update(s);
}

/* While draining: a connection with nothing left to answer gets AGENT-DISCONNECT 0. */
static void
conn_check_drained(struct spoa_conn *c)
{
	size_t flen;

	if (!c->srv->draining || c->closing || c->dead || c->inflight > 0)
		return;
	/* A complete frame still buffered is in flight too: it is processed first (kick). */
	if (c->in_len >= 4) {
		flen = be32(c->in);
		if (flen <= c->max_frame && c->in_len - 4 >= flen)
			return;
	}
	conn_disconnect(c, SPOP_OK, NULL);
}

static struct spoa_conn *
conn_new(struct spoa_server *s, int fd)
{
	struct spoa_conn *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->srv = s;
	c->fd = fd;
	c->max_frame = SPOP_HELLO_MAX_FRAME;
	LIST_INIT(&c->reqs);
	ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
	ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
	ev_timer_init(&c->ftmo, conn_ftmo_cb, s->frame_timeout, 0.);
	ev_timer_init(&c->wtmo, conn_wtmo_cb, s->write_timeout, 0.);
	ev_timer_init(&c->kick, conn_kick_cb, 0., 0.);
	c->rio.data = c->wio.data = c->ftmo.data = c->wtmo.data = c->kick.data = c;
	LIST_INSERT_HEAD(&s->conns, c, entry);
	s->nconns++;
	spoa_metrics.spop_conns_total++;
	spoa_metrics.spop_conns_active++;
	ev_io_start(s->loop, &c->rio);
	ev_timer_start(s->loop, &c->ftmo);	/* the HELLO must come within frame_timeout */
	return c;
}

int
spoa_server_adopt(struct spoa_server *s, int fd)
{
	if (s->draining || set_nonblock(fd) == -1)
		return -1;
	return conn_new(s, fd) != NULL ? 0 : -1;
}

/* ---- listener ---- */

static void
accept_update(struct spoa_server *s)
{
	if (s->lfd == -1 || s->draining)
		return;
	if (s->nconns >= s->opts.max_conns || ev_is_active(&s->accept_retry)) {
		ev_io_stop(s->loop, &s->accept_w);
		return;
	}
	ev_io_start(s->loop, &s->accept_w);
}

static void
accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	accept_update(w->data);
}

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct spoa_server	*s = w->data;
	int			 fd, i, one = 1;

	for (i = 0; i < ACCEPT_BATCH && s->nconns < s->opts.max_conns; i++) {
		fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* Out of descriptors: back off instead of spinning on a readable listener. */
				ev_timer_set(&s->accept_retry, ACCEPT_RETRY, 0.);
				ev_timer_start(loop, &s->accept_retry);
			}
			break;
		}
		if (s->unix_path == NULL)
			(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (conn_new(s, fd) == NULL)
			close(fd);
	}
	accept_update(s);
}

/* Parses "host:port" or "[v6]:port" into a bound, listening socket. */
static int
listen_tcp(struct spoa_server *s, const char *spec, char *err, size_t errlen)
{
	char		 host[256], portstr[16];
	const char	*colon, *h = spec, *hend;
	struct addrinfo	 hints, *res = NULL;
	struct sockaddr_storage ss;
	socklen_t	 sl = sizeof(ss);
	char		*end;
	long		 port;
	int		 fd = -1, one = 1, rc;
	size_t		 hl;

	if (spec[0] == '[') {
		h = spec + 1;
		if ((hend = strchr(h, ']')) == NULL || hend[1] != ':') {
			snprintf(err, errlen, "listen %s: expected [address]:port", spec);
			return -1;
		}
		colon = hend + 1;
	} else {
		if ((colon = strrchr(spec, ':')) == NULL) {
			snprintf(err, errlen, "listen %s: expected host:port, [v6]:port or unix:/path", spec);
			return -1;
		}
		hend = colon;
	}
	hl = (size_t)(hend - h);
	if (hl >= sizeof(host) || strlen(colon + 1) >= sizeof(portstr) || colon[1] == '\0') {
		snprintf(err, errlen, "listen %s: bad address", spec);
		return -1;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || port < 0 || port > 65535) {
		snprintf(err, errlen, "listen %s: bad port", spec);
		return -1;
	}
	snprintf(portstr, sizeof(portstr), "%ld", port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(host[0] == '\0' || strcmp(host, "*") == 0 ? NULL : host, portstr, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "listen %s: %s", spec, gai_strerror(rc));
		return -1;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(err, errlen, "listen %s: socket: %s", spec, strerror(errno));
		goto fail;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) == -1) {
		snprintf(err, errlen, "bind %s: %s", spec, strerror(errno));
		goto fail;
	}
	if (listen(fd, 1024) == -1) {
		snprintf(err, errlen, "listen %s: %s", spec, strerror(errno));
		goto fail;
	}
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port :
		    ((struct sockaddr_in *)&ss)->sin_port);
	freeaddrinfo(res);
	return fd;
fail:
	if (fd != -1)
		close(fd);
	freeaddrinfo(res);
	return -1;
}

/* A unix socket; a stale socket file (nobody accepting) is removed, a live one or another file is an error. */
static int
listen_unix(struct spoa_server *s, const char *path, char *err, size_t errlen)
{
	struct sockaddr_un	sun;
	struct stat		st;
	int			fd, probe;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (path[0] == '\0' || strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "listen unix:%s: bad or too long path", path);
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "listen unix:%s: exists and is not a socket", path);
			return -1;
		}
		if ((probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
			snprintf(err, errlen, "listen unix:%s: socket: %s", path, strerror(errno));
			return -1;
		}
		if (connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
			close(probe);
			snprintf(err, errlen, "listen unix:%s: in use by a running server", path);
			return -1;
		}
		close(probe);
		if (unlink(path) == -1) {
			snprintf(err, errlen, "listen unix:%s: remove stale socket: %s", path, strerror(errno));
			return -1;
		}
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1) {
		snprintf(err, errlen, "listen unix:%s: socket: %s", path, strerror(errno));
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		snprintf(err, errlen, "bind unix:%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (listen(fd, 1024) == -1) {
		snprintf(err, errlen, "listen unix:%s: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	if ((s->unix_path = strdup(path)) == NULL) {
		snprintf(err, errlen, "out of memory");
		close(fd);
		unlink(path);
		return -1;
	}
	return fd;
}

struct spoa_server *
spoa_server_new(struct ev_loop *loop, const struct spoa_server_opts *o, char *err, size_t errlen)
{
	struct spoa_server *s;

	if (o == NULL || o->listen == NULL || o->check == NULL) {
		snprintf(err, errlen, "spoa server: listen address and check function are required");
		return NULL;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->loop = loop;
	s->opts = *o;
	if (s->opts.max_conns == 0)
		s->opts.max_conns = DEFAULT_MAX_CONNS;
	if (s->opts.max_inflight == 0)
		s->opts.max_inflight = DEFAULT_MAX_INFLIGHT;
	s->frame_timeout = 10.;
	s->write_timeout = 30.;
	s->lfd = -1;
	LIST_INIT(&s->conns);
	LIST_INIT(&s->graveyard);
	if ((s->listen = strdup(o->listen)) == NULL) {
		snprintf(err, errlen, "out of memory");
		free(s);
		return NULL;
	}
	s->opts.listen = s->listen;
	if (strncmp(o->listen, "unix:", 5) == 0)
		s->lfd = listen_unix(s, o->listen + 5, err, errlen);
	else
		s->lfd = listen_tcp(s, o->listen, err, errlen);
	if (s->lfd == -1) {
		free(s->listen);
		free(s);
		return NULL;
	}
	ev_io_init(&s->accept_w, accept_cb, s->lfd, EV_READ);
	s->accept_w.data = s;
	ev_timer_init(&s->accept_retry, accept_retry_cb, ACCEPT_RETRY, 0.);
	s->accept_retry.data = s;
	ev_timer_init(&s->reap_w, reap_cb, 0., 0.);
	s->reap_w.data = s;
	ev_io_start(loop, &s->accept_w);
	return s;
}

int
spoa_server_port(const struct spoa_server *s)
{
	return s->port;
}

size_t
spoa_server_nconns(const struct spoa_server *s)
{
	return s->nconns;
}

void
spoa_server_set_timeouts(struct spoa_server *s, double frame_timeout, double write_timeout)
{
	if (frame_timeout > 0)
		s->frame_timeout = frame_timeout;
	if (write_timeout > 0)
		s->write_timeout = write_timeout;
}

static void
close_listener(struct spoa_server *s)
{
	ev_io_stop(s->loop, &s->accept_w);
	ev_timer_stop(s->loop, &s->accept_retry);
	if (s->lfd != -1) {
		close(s->lfd);
		s->lfd = -1;
	}
	if (s->unix_path != NULL) {
		unlink(s->unix_path);
		free(s->unix_path);
		s->unix_path = NULL;
	}
}

void
spoa_server_drain(struct spoa_server *s, void (*done)(void *arg), void *arg)
{
	struct spoa_conn *c, *next;

	s->draining = true;
	s->drain_done = done;
	s->drain_arg = arg;
	close_listener(s);
	for (c = LIST_FIRST(&s->conns); c != NULL; c = next) {
		next = LIST_NEXT(c, entry);
		ev_io_stop(s->loop, &c->rio);	/* no new frames; buffered ones are still answered */
		if (c->in_len > 0 && !c->closing && !ev_is_active(&c->kick)) {
			ev_timer_set(&c->kick, 0., 0.);
			ev_timer_start(s->loop, &c->kick);
		}
		conn_check_drained(c);
	}
	schedule_reap(s);	/* calls done from the loop once every connection is gone */
}

void
spoa_server_free(struct spoa_server *s)
{
	struct spoa_conn *c;
	struct spoa_req *r;

	if (s == NULL)
		return;
	close_listener(s);
	s->drain_done = NULL;
	while ((c = LIST_FIRST(&s->conns)) != NULL)
		conn_kill(c);
	ev_timer_stop(s->loop, &s->reap_w);
	reap_cb(s->loop, &s->reap_w, 0);
	while ((r = LIST_FIRST(&s->req_pool)) != NULL) {
		LIST_REMOVE(r, entry);
		free(r);
	}
	free(s->listen);
	free(s);
}
