/*
 * test_spoa_server.c - the SPOP server over real sockets on 127.0.0.1 (and a unix socket), with a fake
 * check function: allow for URI spiffe://test/allow, deny otherwise, and answer from an ev_timer
 * (asynchronously) when the target is "async". The client side is plain blocking-style code that
 * runs the server's loop while it waits, so one thread does both.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "metrics.h"
#include "server.h"
#include "spop.h"

#define ALLOW_URI	"spiffe://test/allow"
#define LONG_TEXT	"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" \
			"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" \
			"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" \
			"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" \
			"0123456789abcdef"
#define WAIT_LIMIT	20.0	/* seconds before a wait gives up: a hang guard, not a timing assertion */

/* ---- the fake authz ---- */

struct fake_pending {
	ev_timer		 t;
	authz_done_cb		*done;
	void			*arg;
	bool			 allow;
	struct fake_pending	*next;
};

struct fake {
	struct ev_loop		*loop;
	int			 checks;
	int			 cancels;
	int			 async_done;
	int			 null_der;
	double			 async_delay;
	struct fake_pending	*pend;
};

static void
fake_unlink(struct fake *f, struct fake_pending *p)
{
	struct fake_pending **pp;

	for (pp = &f->pend; *pp != NULL; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			return;
		}
}

static struct fake G;	/* one fake per test (tests run one after another) */

static void
fake_async_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct fake_pending	*p = w->data;
	struct authz_decision	 d = { .allow = p->allow, .source_app = "async-app", .reason = "async" };

	fake_unlink(&G, p);
	G.async_done++;
	p->done(p->arg, &d);
	free(p);
}

static struct authz_pending *
fake_check(void *ctx, const struct authz_query *q, authz_done_cb *done, void *arg)
{
	struct fake		*f = ctx;
	bool			 allow = q->uri != NULL && q->uri_len == strlen(ALLOW_URI) &&
				    memcmp(q->uri, ALLOW_URI, q->uri_len) == 0;
	struct authz_decision	 d;
	struct fake_pending	*p;

	f->checks++;
	if (q->der == NULL)
		f->null_der++;
	if (q->target != NULL && q->target_len == 5 && memcmp(q->target, "async", 5) == 0) {
		p = calloc(1, sizeof(*p));
		assert_non_null(p);
		p->done = done;
		p->arg = arg;
		p->allow = allow;
		ev_timer_init(&p->t, fake_async_cb, f->async_delay, 0.);
		p->t.data = p;
		ev_timer_start(f->loop, &p->t);
		p->next = f->pend;
		f->pend = p;
		return (struct authz_pending *)p;
	}
	d.allow = allow;
	d.source_app = allow ? "web" : "";
	d.reason = allow ? "allowed by intention" : "denied";
	if (q->target != NULL && q->target_len == 4 && memcmp(q->target, "long", 4) == 0) {
		d.source_app = LONG_TEXT;
		d.reason = LONG_TEXT;
	}
	done(arg, &d);
	return NULL;
}

static void
fake_cancel(void *ctx, struct authz_pending *h)
{
	struct fake		*f = ctx;
	struct fake_pending	*p = (struct fake_pending *)h;

	f->cancels++;
	ev_timer_stop(f->loop, &p->t);
	fake_unlink(f, p);
	free(p);
}

/* ---- fixture ---- */

struct fx {
	struct ev_loop		*loop;
	struct spoa_server	*srv;
	int			 port;
};

static struct spoa_server *
start_server(struct ev_loop *loop, const char *listen, size_t max_conns, size_t max_inflight)
{
	struct spoa_server_opts	o = { 0 };
	char			err[256];
	struct spoa_server	*s;

	o.listen = listen;
	o.check = fake_check;
	o.cancel = fake_cancel;
	o.ctx = &G;
	o.max_conns = max_conns;
	o.max_inflight = max_inflight;
	s = spoa_server_new(loop, &o, err, sizeof(err));
	if (s == NULL)
		fail_msg("spoa_server_new: %s", err);
	return s;
}

static int
setup(void **state)
{
	struct fx *x = calloc(1, sizeof(*x));

	assert_non_null(x);
	x->loop = ev_loop_new(EVFLAG_AUTO);
	memset(&G, 0, sizeof(G));
	G.loop = x->loop;
	G.async_delay = 0.02;
	x->srv = start_server(x->loop, "127.0.0.1:0", 0, 0);
	x->port = spoa_server_port(x->srv);
	assert_true(x->port > 0);
	*state = x;
	return 0;
}

static int
teardown(void **state)
{
	struct fx		*x = *state;
	struct fake_pending	*p;

	spoa_server_free(x->srv);
	/* whatever the server did not cancel would leak: the server must have cancelled all */
	while ((p = G.pend) != NULL) {
		G.pend = p->next;
		ev_timer_stop(x->loop, &p->t);
		free(p);
	}
	ev_loop_destroy(x->loop);
	free(x);
	return 0;
}

/* ---- client helpers ---- */

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
connect_tcp(int port)
{
	struct sockaddr_in	sin;
	int			fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd != -1);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
	return fd;
}

/* Writes everything, running the server's loop while the socket is full. */
static void
send_all(struct ev_loop *loop, int fd, const void *p, size_t n)
{
	const uint8_t	*b = p;
	ssize_t		 w;
	double		 limit = now() + WAIT_LIMIT;

	while (n > 0) {
		w = send(fd, b, n, MSG_NOSIGNAL);
		if (w > 0) {
			b += w;
			n -= (size_t)w;
			continue;
		}
		assert_true(w == -1 && (errno == EAGAIN || errno == EINTR));
		ev_run(loop, EVRUN_NOWAIT);
		assert_true(now() < limit);
	}
}

/*
 * Reads one frame (without its prefix) into buf; returns its length, or -1 on EOF / reset.
 * Runs the loop while waiting.
 */
static long
recv_frame(struct ev_loop *loop, int fd, uint8_t *buf, size_t cap)
{
	uint8_t		hdr[4];
	size_t		got = 0, need = 4, len = 0;
	uint8_t		*dst = hdr;
	ssize_t		r;
	double		limit = now() + WAIT_LIMIT;
	struct pollfd	pfd = { .fd = fd, .events = POLLIN };

	for (;;) {
		r = recv(fd, dst + got, need - got, 0);
		if (r == 0)
			return -1;
		if (r == -1 && errno == ECONNRESET)
			return -1;
		if (r > 0) {
			got += (size_t)r;
			if (got < need)
				continue;
			if (dst == hdr) {
				len = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
				assert_true(len > 0);	/* never an empty frame */
				assert_true(len <= cap);
				dst = buf;
				got = 0;
				need = len;
				continue;
			}
			return (long)len;
		}
		assert_true(errno == EAGAIN || errno == EINTR);
		ev_run(loop, EVRUN_NOWAIT);
		(void)poll(&pfd, 1, 1);
		if (now() > limit)
			fail_msg("no frame from the server");
	}
}

/* Waits for EOF (or reset) from the server; fails if a frame arrives instead. */
static void
expect_eof(struct ev_loop *loop, int fd)
{
	uint8_t buf[65536];

	assert_int_equal(recv_frame(loop, fd, buf, sizeof(buf)), -1);
}

static void
run_until(struct ev_loop *loop, int *counter, int want)
{
	double limit = now() + WAIT_LIMIT;

	while (*counter < want) {
		ev_run(loop, EVRUN_ONCE);
		if (now() > limit)
			fail_msg("condition not reached: %d < %d", *counter, want);
	}
}

/* ---- frame builders (HAProxy's side) ---- */

static size_t
build_hello(uint8_t *buf, size_t cap, uint32_t mfs, bool healthcheck)
{
	struct spop_writer	w;
	struct spop_data	d;
	long			n;

	spop_writer_init(&w, buf, cap);
	spop_frame_begin(&w, SPOP_FRM_HAPROXY_HELLO, SPOP_FL_FIN, 0, 0);
	spop_put_str(&w, "supported-versions", 18);
	d = spop_string("2.0", 3);
	spop_put_data(&w, &d);
	spop_put_str(&w, "max-frame-size", 14);
	d = spop_uint32(mfs);
	spop_put_data(&w, &d);
	spop_put_str(&w, "capabilities", 12);
	d = healthcheck ? spop_string("", 0) : spop_string("pipelining,async", 16);
	spop_put_data(&w, &d);
	if (healthcheck) {
		spop_put_str(&w, "healthcheck", 11);
		d = spop_bool(true);
		spop_put_data(&w, &d);
	} else {
		spop_put_str(&w, "engine-id", 9);
		d = spop_string("test-engine", 11);
		spop_put_data(&w, &d);
	}
	n = spop_frame_end(&w);
	assert_true(n > 0);
	return (size_t)n;
}

/* NOTIFY with one check-intentions message (uri, target; cert BINARY or NULL) after an unrelated one. */
static size_t
build_notify(uint8_t *buf, size_t cap, uint64_t sid, uint64_t fid, const char *uri, const char *target,
    bool with_cert)
{
	struct spop_writer	w;
	struct spop_data	d;
	long			n;
	uint8_t			nargs = 2;

	spop_writer_init(&w, buf, cap);
	spop_frame_begin(&w, SPOP_FRM_NOTIFY, SPOP_FL_FIN, sid, fid);
	/* an unknown message first: must be skipped */
	spop_put_str(&w, "other-msg", 9);
	spop_put_u8(&w, 1);
	spop_put_str(&w, "x", 1);
	d = spop_int64(42);
	spop_put_data(&w, &d);

	spop_put_str(&w, "check-intentions", 16);
	if (uri != NULL)
		nargs++;
	if (target != NULL)
		nargs++;
	spop_put_u8(&w, nargs);
	spop_put_str(&w, "cert", 4);
	if (with_cert)
		d = spop_binary("\x30\x03\x02\x01\x01", 5);
	else
		d.type = SPOP_DT_NULL;
	spop_put_data(&w, &d);
	spop_put_str(&w, "unknown-arg", 11);	/* unknown args are skipped */
	d = spop_string("zzz", 3);
	spop_put_data(&w, &d);
	if (uri != NULL) {
		spop_put_str(&w, "uri", 3);
		d = spop_string(uri, strlen(uri));
		spop_put_data(&w, &d);
	}
	if (target != NULL) {
		spop_put_str(&w, "target", 6);
		d = spop_string(target, strlen(target));
		spop_put_data(&w, &d);
	}
	n = spop_frame_end(&w);
	assert_true(n > 0);
	return (size_t)n;
}

/* What an ACK said. */
struct ack {
	uint64_t	sid, fid;
	int		auth;		/* -1: absent */
	char		source_app[256];
	char		reason[256];
	size_t		payload_len;
};

static void
parse_ack(const uint8_t *p, size_t n, struct ack *a)
{
	struct spop_frame	f;
	struct spop_cursor	c;
	uint8_t			type, nargs, scope;
	struct spop_str		name;
	struct spop_data	v;

	memset(a, 0, sizeof(*a));
	a->auth = -1;
	assert_int_equal(spop_frame_decode(p, n, &f), SPOP_OK);
	assert_int_equal(f.type, SPOP_FRM_ACK);
	a->sid = f.stream_id;
	a->fid = f.frame_id;
	a->payload_len = f.payload_len;
	spop_cursor_init(&c, f.payload, f.payload_len);
	while (spop_cursor_left(&c) > 0) {
		assert_int_equal(spop_get_u8(&c, &type), 0);
		assert_int_equal(spop_get_u8(&c, &nargs), 0);
		assert_int_equal(type, 1);
		assert_int_equal(nargs, 3);
		assert_int_equal(spop_get_u8(&c, &scope), 0);
		assert_int_equal(scope, SPOP_SCOPE_SESS);
		assert_int_equal(spop_get_str(&c, &name), 0);
		assert_int_equal(spop_get_data(&c, &v), 0);
		if (name.len == 4 && memcmp(name.ptr, "auth", 4) == 0) {
			assert_int_equal(v.type, SPOP_DT_INT32);
			a->auth = v.u.i32;
		} else if (name.len == 10 && memcmp(name.ptr, "source_app", 10) == 0) {
			assert_int_equal(v.type, SPOP_DT_STRING);
			memcpy(a->source_app, v.u.str.ptr, v.u.str.len);
		} else if (name.len == 6 && memcmp(name.ptr, "reason", 6) == 0) {
			assert_int_equal(v.type, SPOP_DT_STRING);
			memcpy(a->reason, v.u.str.ptr, v.u.str.len);
		} else {
			fail_msg("unexpected variable %.*s", (int)name.len, name.ptr);
		}
	}
}

/* Expects an AGENT-DISCONNECT with this status. */
static void
expect_disconnect(struct ev_loop *loop, int fd, uint32_t want)
{
	uint8_t			buf[1024];
	long			n = recv_frame(loop, fd, buf, sizeof(buf));
	struct spop_frame	f;
	uint32_t		st;
	struct spop_str		msg;

	assert_true(n > 0);
	assert_int_equal(spop_frame_decode(buf, (size_t)n, &f), SPOP_OK);
	assert_int_equal(f.type, SPOP_FRM_AGENT_DISCON);
	assert_int_equal(spop_disconnect_parse(f.payload, f.payload_len, &st, &msg), SPOP_OK);
	assert_int_equal(st, want);
	assert_true(msg.len > 0 && msg.len <= 255);
}

/* Connects and completes HELLO; checks the AGENT-HELLO. */
static int
hello(struct fx *x, uint32_t mfs, uint32_t want_mfs)
{
	uint8_t			buf[1024];
	size_t			n = build_hello(buf, sizeof(buf), mfs, false);
	int			fd = connect_tcp(x->port);
	long			r;
	struct spop_frame	f;
	struct spop_cursor	c;
	struct spop_kv		kv;
	int			seen = 0;

	send_all(x->loop, fd, buf, n);
	r = recv_frame(x->loop, fd, buf, sizeof(buf));
	assert_true(r > 0);
	assert_int_equal(spop_frame_decode(buf, (size_t)r, &f), SPOP_OK);
	assert_int_equal(f.type, SPOP_FRM_AGENT_HELLO);
	assert_true(f.stream_id == 0 && f.frame_id == 0);
	spop_cursor_init(&c, f.payload, f.payload_len);
	while (spop_kv_next(&c, &kv) == 1) {
		if (kv.name.len == 7 && memcmp(kv.name.ptr, "version", 7) == 0) {
			assert_int_equal(kv.value.type, SPOP_DT_STRING);
			assert_int_equal(kv.value.u.str.len, 3);
			assert_memory_equal(kv.value.u.str.ptr, "2.0", 3);
			seen |= 1;
		} else if (kv.name.len == 14 && memcmp(kv.name.ptr, "max-frame-size", 14) == 0) {
			assert_int_equal(kv.value.type, SPOP_DT_UINT32);
			assert_int_equal(kv.value.u.u32, want_mfs);
			seen |= 2;
		} else if (kv.name.len == 12 && memcmp(kv.name.ptr, "capabilities", 12) == 0) {
			assert_int_equal(kv.value.type, SPOP_DT_STRING);
			assert_int_equal(kv.value.u.str.len, 10);
			assert_memory_equal(kv.value.u.str.ptr, "pipelining", 10);
			seen |= 4;
		}
	}
	assert_int_equal(c.err, SPOP_OK);
	assert_int_equal(seen, 7);
	return fd;
}

static void
notify_and_ack(struct fx *x, int fd, uint64_t sid, uint64_t fid, const char *uri, const char *target,
    bool cert, struct ack *a)
{
	uint8_t	buf[1024];
	size_t	n = build_notify(buf, sizeof(buf), sid, fid, uri, target, cert);
	long	r;

	send_all(x->loop, fd, buf, n);
	r = recv_frame(x->loop, fd, buf, sizeof(buf));
	assert_true(r > 0);
	parse_ack(buf, (size_t)r, a);
}

/* ---- tests ---- */

static void
test_hello_notify_ack(void **state)
{
	struct fx	*x = *state;
	struct ack	 a;
	int		 fd = hello(x, 16380, 16380);
	uint8_t		 buf[256];
	long		 r;
	struct spop_writer w;

	notify_and_ack(x, fd, 7, 1, ALLOW_URI, NULL, true, &a);
	assert_true(a.sid == 7 && a.fid == 1);
	assert_int_equal(a.auth, 1);
	assert_string_equal(a.source_app, "web");
	assert_string_equal(a.reason, "allowed by intention");

	notify_and_ack(x, fd, 8, 1, "spiffe://test/other", NULL, true, &a);
	assert_true(a.sid == 8 && a.fid == 1);
	assert_int_equal(a.auth, 0);
	assert_string_equal(a.reason, "denied");

	/* no client certificate: NULL arrives as der NULL and is a deny, not a protocol error */
	notify_and_ack(x, fd, 9, 1, NULL, NULL, false, &a);
	assert_int_equal(a.auth, 0);
	assert_int_equal(G.null_der, 1);

	/* a NOTIFY without check-intentions: an empty ACK */
	spop_writer_init(&w, buf, sizeof(buf));
	spop_frame_begin(&w, SPOP_FRM_NOTIFY, SPOP_FL_FIN, 10, 3);
	spop_put_str(&w, "unrelated", 9);
	spop_put_u8(&w, 0);
	r = spop_frame_end(&w);
	send_all(x->loop, fd, buf, (size_t)r);
	r = recv_frame(x->loop, fd, buf, sizeof(buf));
	assert_true(r > 0);
	parse_ack(buf, (size_t)r, &a);
	assert_true(a.sid == 10 && a.fid == 3);
	assert_int_equal(a.payload_len, 0);
	assert_int_equal(a.auth, -1);

	assert_int_equal(G.checks, 3);
	assert_int_equal(spoa_server_nconns(x->srv), 1);
	close(fd);
}

/* HAProxy may announce max-frame-size 256: the ACK still fits (texts shortened), auth is kept. */
static void
test_ack_fits_small_frames(void **state)
{
	struct fx	*x = *state;
	int		 fd = hello(x, 256, 256);
	uint8_t		 buf[1024];
	size_t		 n = build_notify(buf, sizeof(buf), 1, 1, ALLOW_URI, "long", false);
	long		 r;
	struct ack	 a;

	assert_true(n - 4 <= 256);
	send_all(x->loop, fd, buf, n);
	r = recv_frame(x->loop, fd, buf, sizeof(buf));
	assert_true(r > 0 && r <= 256);
	parse_ack(buf, (size_t)r, &a);
	assert_int_equal(a.auth, 1);
	assert_true(strlen(a.source_app) < strlen(LONG_TEXT));

	/* with room, the texts are whole (cut at 255 bytes) */
	close(fd);
	fd = hello(x, 16380, 16380);
	n = build_notify(buf, sizeof(buf), 1, 1, ALLOW_URI, "long", false);
	send_all(x->loop, fd, buf, n);
	r = recv_frame(x->loop, fd, buf, sizeof(buf));
	assert_true(r > 0);
	parse_ack(buf, (size_t)r, &a);
	assert_int_equal(strlen(a.source_app), 255);
	assert_int_equal(strlen(a.reason), 255);
	close(fd);
}

/* Several check-intentions messages in one NOTIFY: allowed only if every one is. */
static void
test_several_checks_in_one_notify(void **state)
{
	struct fx		*x = *state;
	int			 fd = hello(x, 16380, 16380);
	uint8_t			 buf[1024];
	struct spop_writer	 w;
	struct spop_data	 d;
	struct ack		 a;
	long			 r;
	const char		*uris[2][2] = { { ALLOW_URI, ALLOW_URI }, { ALLOW_URI, "spiffe://test/no" } };
	int			 round, i;

	G.async_delay = 0.01;
	for (round = 0; round < 2; round++) {
		spop_writer_init(&w, buf, sizeof(buf));
		spop_frame_begin(&w, SPOP_FRM_NOTIFY, SPOP_FL_FIN, 1, (uint64_t)round + 1);
		for (i = 0; i < 2; i++) {
			spop_put_str(&w, "check-intentions", 16);
			spop_put_u8(&w, 3);
			spop_put_str(&w, "cert", 4);
			d.type = SPOP_DT_NULL;
			spop_put_data(&w, &d);
			spop_put_str(&w, "uri", 3);
			d = spop_string(uris[round][i], strlen(uris[round][i]));
			spop_put_data(&w, &d);
			/* one answered at once, one from the timer */
			spop_put_str(&w, "target", 6);
			d = i == 0 ? spop_string("async", 5) : spop_string("web", 3);
			spop_put_data(&w, &d);
		}
		r = spop_frame_end(&w);
		send_all(x->loop, fd, buf, (size_t)r);
		r = recv_frame(x->loop, fd, buf, sizeof(buf));
		assert_true(r > 0);
		parse_ack(buf, (size_t)r, &a);
		assert_int_equal((int)a.fid, round + 1);
		assert_int_equal(a.auth, round == 0 ? 1 : 0);
	}
	assert_int_equal(G.checks, 4);
	assert_int_equal(G.async_done, 2);
	close(fd);
}

static void
test_pipelined_out_of_order(void **state)
{
	struct fx	*x = *state;
	int		 fd = hello(x, 16380, 16380);
	uint8_t		 buf[4096], rb[1024];
	size_t		 n = 0;
	struct ack	 a;
	long		 r;
	int		 i;

	/* fid 1 waits for the timer, fids 2..4 are answered at once: ACKs 2, 3, 4, then 1 */
	n += build_notify(buf + n, sizeof(buf) - n, 1, 1, ALLOW_URI, "async", true);
	for (i = 2; i <= 4; i++)
		n += build_notify(buf + n, sizeof(buf) - n, (uint64_t)i, (uint64_t)i, ALLOW_URI, NULL, true);
	send_all(x->loop, fd, buf, n);
	for (i = 2; i <= 4; i++) {
		r = recv_frame(x->loop, fd, rb, sizeof(rb));
		assert_true(r > 0);
		parse_ack(rb, (size_t)r, &a);
		assert_int_equal((int)a.fid, i);
		assert_int_equal(a.auth, 1);
	}
	r = recv_frame(x->loop, fd, rb, sizeof(rb));
	assert_true(r > 0);
	parse_ack(rb, (size_t)r, &a);
	assert_true(a.sid == 1 && a.fid == 1);
	assert_int_equal(a.auth, 1);
	assert_string_equal(a.source_app, "async-app");
	assert_int_equal(G.async_done, 1);
	close(fd);
}

static void
test_oversize_frame(void **state)
{
	struct fx	*x = *state;
	int		 fd;
	uint8_t		 hdr[8] = { 0x00, 0x00, 0x40, 0x00, 0x03, 0x00, 0x00, 0x00 };	/* 16384 > 16380 */
	uint8_t		 big[4] = { (uint8_t)((SPOP_MAX_FRAME_CAP + 1) >> 24), (uint8_t)((SPOP_MAX_FRAME_CAP + 1) >> 16),
			    (uint8_t)((SPOP_MAX_FRAME_CAP + 1) >> 8), (uint8_t)(SPOP_MAX_FRAME_CAP + 1) };

	/* before HELLO: our pre-HELLO cap (16380); only the prefix and 4 bytes are ever sent */
	fd = connect_tcp(x->port);
	send_all(x->loop, fd, hdr, sizeof(hdr));
	expect_disconnect(x->loop, fd, SPOP_ERR_TOO_BIG);
	expect_eof(x->loop, fd);
	close(fd);

	/* after HELLO with max-frame-size 1024: a 1025-byte frame is refused */
	fd = hello(x, 1024, 1024);
	hdr[2] = 0x04;
	hdr[3] = 0x01;
	send_all(x->loop, fd, hdr, sizeof(hdr));
	expect_disconnect(x->loop, fd, SPOP_ERR_TOO_BIG);
	expect_eof(x->loop, fd);
	close(fd);

	/* HAProxy announcing more than our cap gets our cap, and frames above it are refused */
	fd = hello(x, 4000000, SPOP_MAX_FRAME_CAP);
	send_all(x->loop, fd, big, sizeof(big));
	expect_disconnect(x->loop, fd, SPOP_ERR_TOO_BIG);
	expect_eof(x->loop, fd);
	close(fd);
	assert_int_equal(G.checks, 0);
}

static void
test_big_frame_within_limit(void **state)
{
	struct fx		*x = *state;
	int			 fd = hello(x, 65532, 65532);
	static uint8_t		 buf[65536], rb[1024];
	struct spop_writer	 w;
	struct spop_data	 d;
	struct ack		 a;
	long			 n;
	static uint8_t		 cert[60000];

	/* a 60 kB certificate, delivered in pieces, is answered */
	memset(cert, 0x5a, sizeof(cert));
	spop_writer_init(&w, buf, sizeof(buf));
	spop_frame_begin(&w, SPOP_FRM_NOTIFY, SPOP_FL_FIN, 1, 1);
	spop_put_str(&w, "check-intentions", 16);
	spop_put_u8(&w, 2);
	spop_put_str(&w, "cert", 4);
	d = spop_binary(cert, sizeof(cert));
	spop_put_data(&w, &d);
	spop_put_str(&w, "uri", 3);
	d = spop_string(ALLOW_URI, strlen(ALLOW_URI));
	spop_put_data(&w, &d);
	n = spop_frame_end(&w);
	assert_true(n > 0);
	send_all(x->loop, fd, buf, 1000);
	ev_run(x->loop, EVRUN_NOWAIT);
	send_all(x->loop, fd, buf + 1000, (size_t)n - 1000);
	n = recv_frame(x->loop, fd, rb, sizeof(rb));
	assert_true(n > 0);
	parse_ack(rb, (size_t)n, &a);
	assert_int_equal(a.auth, 1);
	close(fd);
}

static void
test_healthcheck(void **state)
{
	struct fx		*x = *state;
	uint8_t			 buf[1024];
	size_t			 n = build_hello(buf, sizeof(buf), 16380, true);
	int			 fd = connect_tcp(x->port);
	long			 r;
	struct spop_frame	 f;
	uint64_t		 hc = spoa_metrics.spop_healthchecks;

	send_all(x->loop, fd, buf, n);
	r = recv_frame(x->loop, fd, buf, sizeof(buf));
	assert_true(r > 0);
	assert_int_equal(spop_frame_decode(buf, (size_t)r, &f), SPOP_OK);
	assert_int_equal(f.type, SPOP_FRM_AGENT_HELLO);
	/* then the server closes, with no DISCONNECT frame */
	expect_eof(x->loop, fd);
	assert_true(spoa_metrics.spop_healthchecks == hc + 1);
	close(fd);
}

static void
test_haproxy_disconnect(void **state)
{
	struct fx		*x = *state;
	int			 fd = hello(x, 16380, 16380);
	uint8_t			 buf[256];
	struct spop_writer	 w;
	struct spop_data	 d;
	long			 n;

	spop_writer_init(&w, buf, sizeof(buf));
	spop_frame_begin(&w, SPOP_FRM_HAPROXY_DISCON, SPOP_FL_FIN, 0, 0);
	spop_put_str(&w, "status-code", 11);
	d = spop_uint32(0);
	spop_put_data(&w, &d);
	spop_put_str(&w, "message", 7);
	d = spop_string("normal", 6);
	spop_put_data(&w, &d);
	n = spop_frame_end(&w);
	send_all(x->loop, fd, buf, (size_t)n);
	expect_disconnect(x->loop, fd, SPOP_OK);
	expect_eof(x->loop, fd);
	close(fd);
}

/* Sends raw bytes on a fresh (optionally HELLO'd) connection and expects DISCONNECT with status. */
static void
expect_status_for(struct fx *x, bool do_hello, const char *hex, uint32_t status)
{
	uint8_t	buf[512];
	size_t	n = strlen(hex) / 2, i;
	int	fd = do_hello ? hello(x, 16380, 16380) : connect_tcp(x->port);
	unsigned v;

	for (i = 0; i < n; i++) {
		assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
		buf[i] = (uint8_t)v;
	}
	send_all(x->loop, fd, buf, n);
	expect_disconnect(x->loop, fd, status);
	expect_eof(x->loop, fd);
	close(fd);
}

static void
test_malformed(void **state)
{
	struct fx *x = *state;
	uint64_t errs = spoa_metrics.spop_protocol_errors;

	/* garbage of a plausible length: an unknown frame type */
	expect_status_for(x, false, "00000007ff000000010000", SPOP_ERR_INVALID);
	/* a NOTIFY before HELLO */
	expect_status_for(x, false, "0000000703000000010001", SPOP_ERR_INVALID);
	/* HELLO without supported-versions, then with a bad version, bad and missing max-frame-size */
	expect_status_for(x, false, "0000000d0100000001000003666f6f0800", SPOP_ERR_NO_VSN);
	expect_status_for(x, false,
	    "0000001f0100000001000012737570706f727465642d76657273696f6e730803312e30", SPOP_ERR_BAD_VSN);
	expect_status_for(x, false,
	    "0000001f0100000001000012737570706f727465642d76657273696f6e730803322e30", SPOP_ERR_NO_FRAME_SIZE);
	expect_status_for(x, false,
	    "000000300100000001000012737570706f727465642d76657273696f6e730803322e30"
	    "0e6d61782d6672616d652d73697a650364", SPOP_ERR_BAD_FRAME_SIZE);
	/* a frame without FIN, and a fragment continuation (type UNSET) */
	expect_status_for(x, true, "0000000703000000000101", SPOP_ERR_FRAG);
	expect_status_for(x, true, "0000000700000000010101", SPOP_ERR_FRAG);
	/* a NOTIFY whose argument runs past the frame */
	expect_status_for(x, true, "000000190300000001010110636865636b2d696e74656e74696f6e7301", SPOP_ERR_INVALID);
	/* a second HELLO */
	{
		uint8_t	buf[1024];
		size_t	n = build_hello(buf, sizeof(buf), 16380, false);
		int	fd = hello(x, 16380, 16380);

		send_all(x->loop, fd, buf, n);
		expect_disconnect(x->loop, fd, SPOP_ERR_INVALID);
		close(fd);
	}
	/* an empty frame */
	expect_status_for(x, true, "00000000", SPOP_ERR_INVALID);
	assert_true(spoa_metrics.spop_protocol_errors >= errs + 11);
	assert_int_equal(G.checks, 0);
}

static void
test_close_with_pending_cancels(void **state)
{
	struct fx	*x = *state;
	int		 fd = hello(x, 16380, 16380);
	uint8_t		 buf[4096];
	size_t		 n = 0;

	G.async_delay = 3600.;	/* never answers on its own */
	n += build_notify(buf + n, sizeof(buf) - n, 1, 1, ALLOW_URI, "async", true);
	n += build_notify(buf + n, sizeof(buf) - n, 2, 1, ALLOW_URI, "async", true);
	send_all(x->loop, fd, buf, n);
	run_until(x->loop, &G.checks, 2);
	close(fd);
	run_until(x->loop, &G.cancels, 2);
	assert_int_equal(G.async_done, 0);
	assert_null(G.pend);
	/* the connection is gone */
	while (spoa_server_nconns(x->srv) != 0)
		ev_run(x->loop, EVRUN_ONCE);
}

static int drain_calls;

static void
drain_done(void *arg)
{
	drain_calls++;
}

static void
test_drain(void **state)
{
	struct fx	*x = *state;
	int		 fd1 = hello(x, 16380, 16380), fd2 = hello(x, 16380, 16380);
	uint8_t		 buf[1024];
	size_t		 n;
	long		 r;
	struct ack	 a;
	struct sockaddr_in sin;
	int		 probe;

	drain_calls = 0;
	G.async_delay = 0.05;
	n = build_notify(buf, sizeof(buf), 1, 1, ALLOW_URI, "async", true);
	send_all(x->loop, fd1, buf, n);
	run_until(x->loop, &G.checks, 1);
	spoa_server_drain(x->srv, drain_done, NULL);
	assert_int_equal(drain_calls, 0);	/* never from inside drain */

	/* the NOTIFY in flight is answered, then DISCONNECT 0, then close */
	r = recv_frame(x->loop, fd1, buf, sizeof(buf));
	assert_true(r > 0);
	parse_ack(buf, (size_t)r, &a);
	assert_int_equal(a.auth, 1);
	expect_disconnect(x->loop, fd1, SPOP_OK);
	expect_disconnect(x->loop, fd2, SPOP_OK);
	/* HAProxy closes on DISCONNECT */
	close(fd1);
	close(fd2);
	run_until(x->loop, &drain_calls, 1);
	assert_int_equal(spoa_server_nconns(x->srv), 0);

	/* no longer accepting */
	probe = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)x->port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(probe, (struct sockaddr *)&sin, sizeof(sin)), -1);
	close(probe);
}

static void
test_max_conns(void **state)
{
	struct fx		*x = *state;
	struct spoa_server	*s2;
	int			 p2, a, b, c;
	uint8_t			 buf[1024], rb[1024];
	size_t			 n;
	struct pollfd		 pfd;
	int			 i;

	spoa_server_free(x->srv);
	x->srv = s2 = start_server(x->loop, "127.0.0.1:0", 2, 0);
	x->port = p2 = spoa_server_port(s2);
	a = hello(x, 16380, 16380);
	b = hello(x, 16380, 16380);
	/* the third connects (kernel backlog) but is not served while two are open */
	c = connect_tcp(p2);
	n = build_hello(buf, sizeof(buf), 16380, false);
	send_all(x->loop, c, buf, n);
	for (i = 0; i < 50; i++) {
		ev_run(x->loop, EVRUN_NOWAIT);
		pfd.fd = c;
		pfd.events = POLLIN;
		assert_int_equal(poll(&pfd, 1, 2), 0);
	}
	assert_int_equal(spoa_server_nconns(s2), 2);
	/* one leaves: the third is served */
	close(a);
	assert_true(recv_frame(x->loop, c, rb, sizeof(rb)) > 0);
	assert_int_equal(spoa_server_nconns(s2), 2);
	close(b);
	close(c);
}

static void
test_frame_timeout(void **state)
{
	struct fx	*x = *state;
	int		 fd = hello(x, 16380, 16380);
	uint8_t		 half[10] = { 0x00, 0x00, 0x00, 0x20, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00 };

	spoa_server_set_timeouts(x->srv, 0.1, 0);
	/* a new connection picks up the timeout; half a frame, then nothing */
	close(fd);
	fd = hello(x, 16380, 16380);
	send_all(x->loop, fd, half, sizeof(half));
	expect_disconnect(x->loop, fd, SPOP_ERR_TIMEOUT);
	expect_eof(x->loop, fd);
	close(fd);
	/* no HELLO at all */
	fd = connect_tcp(x->port);
	expect_disconnect(x->loop, fd, SPOP_ERR_TIMEOUT);
	close(fd);
}

/*
 * The peer writes NOTIFYs without reading ACKs: the server stops reading (our writes block) instead of
 * buffering without bound, and once we read, every NOTIFY is answered exactly once.
 */
static void
test_backpressure(void **state)
{
	struct fx	*x = *state;
	int		 fd = hello(x, 16380, 16380);
	uint8_t		 frame[256], rb[1024];
	size_t		 fl = build_notify(frame, sizeof(frame), 1, 1, ALLOW_URI, NULL, true);
	size_t		 off = 0;
	long		 sent = 0, acked = 0, r;
	int		 stalls = 0;
	ssize_t		 w;
	struct ack	 a;
	int		 sz = 65536;

	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	/* write until the server has stopped taking data for a while */
	while (stalls < 200) {
		w = send(fd, frame + off, fl - off, MSG_NOSIGNAL);
		if (w > 0) {
			off += (size_t)w;
			if (off == fl) {
				off = 0;
				sent++;
			}
			stalls = 0;
			continue;
		}
		assert_true(errno == EAGAIN);
		ev_run(x->loop, EVRUN_NOWAIT);
		stalls++;
		assert_true(sent < 10000000);	/* it must stop reading long before this */
	}
	assert_true(sent > 100);
	/* read the ACKs; a partly written frame is finished on the way (the server reads again as we read) */
	while (acked < sent || off > 0) {
		if (off > 0 && acked == sent) {
			/* everything answered so far is read: the server takes input again */
			send_all(x->loop, fd, frame + off, fl - off);
			off = 0;
			sent++;
		} else if (off > 0) {
			w = send(fd, frame + off, fl - off, MSG_NOSIGNAL);
			if (w > 0 && (off += (size_t)w) == fl) {
				off = 0;
				sent++;
			}
		}
		r = recv_frame(x->loop, fd, rb, sizeof(rb));
		assert_true(r > 0);
		parse_ack(rb, (size_t)r, &a);
		assert_int_equal(a.auth, 1);
		acked++;
	}
	assert_int_equal(G.checks, sent);
	print_message("backpressure: %ld NOTIFYs written before the server stopped reading\n", sent);
	close(fd);
}

/* A peer that stops reading for longer than the write timeout is disconnected. */
static void
test_write_timeout(void **state)
{
	struct fx	*x = *state;
	int		 fd, sz = 4096;
	uint8_t		 frame[256];
	size_t		 fl = build_notify(frame, sizeof(frame), 1, 1, ALLOW_URI, NULL, true);
	size_t		 off = 0;
	int		 stalls = 0;
	ssize_t		 w;
	double		 limit;
	uint8_t		 sink[65536];

	spoa_server_set_timeouts(x->srv, 0, 0.2);
	fd = hello(x, 16380, 16380);
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	while (stalls < 200) {
		w = send(fd, frame + off, fl - off, MSG_NOSIGNAL);
		if (w > 0) {
			off = (off + (size_t)w) % fl;
			stalls = 0;
			continue;
		}
		if (w == -1 && errno == EPIPE)
			break;
		ev_run(x->loop, EVRUN_NOWAIT);
		stalls++;
	}
	/* never reading: the server gives up on us and closes */
	limit = now() + WAIT_LIMIT;
	while (spoa_server_nconns(x->srv) != 0) {
		ev_run(x->loop, EVRUN_ONCE);
		if (now() > limit)
			fail_msg("the server kept a peer that does not read");
	}
	/* what it had sent is readable, then EOF or reset */
	while ((w = recv(fd, sink, sizeof(sink), 0)) > 0)
		;
	assert_true(w == 0 || (w == -1 && errno == ECONNRESET));
	close(fd);
}

static void
test_listen_errors_and_unix(void **state)
{
	struct fx		*x = *state;
	struct spoa_server_opts	 o = { 0 };
	char			 err[256], path[108], addr[160];
	struct spoa_server	*s2, *s3;
	int			 fd, ufd;
	struct sockaddr_un	 sun;
	uint8_t			 buf[1024];
	size_t			 n;
	struct stat		 st;

	o.check = fake_check;
	o.cancel = fake_cancel;
	o.ctx = &G;
	/* port in use: a clear error */
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", x->port);
	o.listen = addr;
	assert_null(spoa_server_new(x->loop, &o, err, sizeof(err)));
	assert_non_null(strstr(err, "Address already in use"));
	/* bad addresses */
	o.listen = "nonsense";
	assert_null(spoa_server_new(x->loop, &o, err, sizeof(err)));
	o.listen = "127.0.0.1:99999";
	assert_null(spoa_server_new(x->loop, &o, err, sizeof(err)));
	o.listen = "[::1:80";
	assert_null(spoa_server_new(x->loop, &o, err, sizeof(err)));

	/* unix: a stale socket file is replaced */
	snprintf(path, sizeof(path), "/tmp/test_spoa_server.%d.sock", (int)getpid());
	unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	close(fd);	/* the file stays, nobody listens: stale */
	snprintf(addr, sizeof(addr), "unix:%s", path);
	s2 = start_server(x->loop, addr, 0, 0);
	assert_int_equal(spoa_server_port(s2), 0);
	/* a live one is not stolen */
	o.listen = addr;
	assert_null((s3 = spoa_server_new(x->loop, &o, err, sizeof(err))));
	assert_non_null(strstr(err, "in use"));
	/* and it serves */
	ufd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(connect(ufd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(fcntl(ufd, F_SETFL, O_NONBLOCK), 0);
	n = build_hello(buf, sizeof(buf), 16380, false);
	send_all(x->loop, ufd, buf, n);
	assert_true(recv_frame(x->loop, ufd, buf, sizeof(buf)) > 0);
	close(ufd);
	spoa_server_free(s2);
	assert_int_equal(stat(path, &st), -1);	/* removed at free */

	/* not a socket: refused, untouched */
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	assert_true(fd != -1);
	close(fd);
	assert_null(spoa_server_new(x->loop, &o, err, sizeof(err)));
	assert_non_null(strstr(err, "not a socket"));
	assert_int_equal(stat(path, &st), 0);
	unlink(path);
}

static void
test_ipv6(void **state)
{
	struct fx		*x = *state;
	struct spoa_server	*s6;
	struct spoa_server_opts	 o = { 0 };
	char			 err[256];

	o.listen = "[::1]:0";
	o.check = fake_check;
	o.ctx = &G;
	s6 = spoa_server_new(x->loop, &o, err, sizeof(err));
	if (s6 == NULL) {
		/* a machine without IPv6 loopback: the error must say why */
		assert_true(strlen(err) > 0);
		return;
	}
	assert_true(spoa_server_port(s6) > 0);
	spoa_server_free(s6);
}

/* adopt() serves a socket pair: the path the fuzz target uses. */
static void
test_adopt_socketpair(void **state)
{
	struct fx	*x = *state;
	int		 sv[2];
	uint8_t		 buf[1024];
	size_t		 n;
	struct ack	 a;
	long		 r;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(spoa_server_adopt(x->srv, sv[0]), 0);
	assert_int_equal(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	n = build_hello(buf, sizeof(buf), 16380, false);
	n += build_notify(buf + n, sizeof(buf) - n, 3, 4, ALLOW_URI, NULL, true);
	send_all(x->loop, sv[1], buf, n);
	assert_true(recv_frame(x->loop, sv[1], buf, sizeof(buf)) > 0);
	r = recv_frame(x->loop, sv[1], buf, sizeof(buf));
	assert_true(r > 0);
	parse_ack(buf, (size_t)r, &a);
	assert_true(a.sid == 3 && a.fid == 4 && a.auth == 1);
	close(sv[1]);
	while (spoa_server_nconns(x->srv) != 0)
		ev_run(x->loop, EVRUN_ONCE);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_hello_notify_ack, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipelined_out_of_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ack_fits_small_frames, setup, teardown),
		cmocka_unit_test_setup_teardown(test_several_checks_in_one_notify, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversize_frame, setup, teardown),
		cmocka_unit_test_setup_teardown(test_big_frame_within_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_healthcheck, setup, teardown),
		cmocka_unit_test_setup_teardown(test_haproxy_disconnect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_with_pending_cancels, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_max_conns, setup, teardown),
		cmocka_unit_test_setup_teardown(test_frame_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listen_errors_and_unix, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ipv6, setup, teardown),
		cmocka_unit_test_setup_teardown(test_adopt_socketpair, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
