/*
 * spop-load.c - SPOP load generator for connect-spoa (and a server to aim it at).
 *
 * Client:  spop-load -addr HOST:PORT|unix:/path [-c conns] [-k inflight] [-d seconds] [-n requests]
 *                    [-rate frames/s [-tick us]] [-cert file.der|file.pem] [-uri spiffe://...] [-target name]
 *                    [-mfs max-frame-size]
 *   Opens -c connections, sends a HAProxy-like HELLO on each, then keeps -k NOTIFY frames in flight
 *   per connection (pipelined), each a "check-intentions" message carrying the client certificate DER
 *   (from -cert, else a generated EC P-256 certificate with -uri as its URI SAN) and -target. Runs for
 *   -d seconds or -n answers. With -rate R, frames leave at R/s in total (open loop): latency is then
 *   measured from the time a frame was due, so a slow server cannot hide its queueing (coordinated
 *   omission); frames are released every -tick microseconds (default 10), which bounds the pacing
 *   error included in the latency. -tick 0 spins instead (the loop never sleeps and releases each frame
 *   when it is due): on a VM whose timers fire late, this is the only way to keep the pacing error out
 *   of the figures; pin the generator to a CPU of its own (taskset) when using it. Reports answers/s, allow/deny counts and latency percentiles in microseconds, and a
 *   last "RESULT key=value ..." line for scripts.
 *
 * Server:  spop-load -serve HOST:PORT|unix:/path [-trivial] [-busy-poll seconds]
 *   Runs connect-spoa's SPOP server (spoa/server.c) with a fake check that allows everything at once
 *   (a cache hit stand-in), or with -trivial a minimal responder that only parses frame headers and
 *   sends a canned ACK: the yardstick for the generator's own capacity. -busy-poll gives its loop
 *   connect-spoa's adaptive busy polling (spoa/busypoll.c) with that window, as connect-spoa -busy-poll.
 *
 * Single-threaded, libev. Latency per frame uses CLOCK_MONOTONIC and a log-linear histogram
 * (about 1.5% resolution).
 */
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "busypoll.h"
#include "server.h"
#include "spop.h"

#define BUFSZ		(64u * 1024u)		/* per connection and direction; a NOTIFY must fit */
#define HIST_SUB	64			/* sub-buckets per power of two */
#define HIST_MAJ	40			/* up to 2^40 ns */

/* ---- histogram ---- */

static uint64_t hist[HIST_MAJ][HIST_SUB];
static uint64_t hist_n;

/*
 * Bucket 0 holds 0..63 ns exactly; bucket maj >= 1 holds [64 << (maj-1), 128 << (maj-1)) in 64 steps.
 */
static void
hist_add(uint64_t ns)
{
	unsigned maj = 0, sub, shift;

	if (ns < HIST_SUB) {
		sub = (unsigned)ns;
	} else {
		shift = 63u - (unsigned)__builtin_clzll(ns) - 6u;	/* ns >> shift in [64, 128) */
		maj = shift + 1;
		sub = (unsigned)(ns >> shift) - HIST_SUB;
		if (maj >= HIST_MAJ) {
			maj = HIST_MAJ - 1;
			sub = HIST_SUB - 1;
		}
	}
	hist[maj][sub]++;
	hist_n++;
}

/* Value (ns) at quantile q, the upper edge of its bucket. */
static double
hist_quantile(double q)
{
	uint64_t	want = (uint64_t)ceil(q * (double)hist_n), seen = 0;
	unsigned	maj, sub;

	if (hist_n == 0)
		return 0;
	if (want == 0)
		want = 1;
	for (maj = 0; maj < HIST_MAJ; maj++)
		for (sub = 0; sub < HIST_SUB; sub++) {
			seen += hist[maj][sub];
			if (seen >= want)
				return maj == 0 ? (double)sub + 1 :
				    (double)((uint64_t)(HIST_SUB + sub + 1) << (maj - 1));
		}
	return 0;
}

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- options ---- */

static const char	*o_addr, *o_serve, *o_cert, *o_target, *o_uri = "spiffe://dc1.consul/ns/default/dc/dc1/svc/web";
static long		 o_conns = 16, o_inflight = 16, o_requests = 0, o_mfs = 16380;
static double		 o_duration = 10, o_rate = 0, o_tick = 10, o_busy_poll = 0;
static int		 o_trivial;

static void
usage(void)
{
	fprintf(stderr,
	    "usage: spop-load -addr HOST:PORT|unix:/path [-c conns] [-k inflight] [-d seconds] [-n requests]\n"
	    "                 [-rate frames/s [-tick us]] [-cert file] [-uri spiffe-uri] [-target name] [-mfs bytes]\n"
	    "       spop-load -serve HOST:PORT|unix:/path [-trivial] [-busy-poll seconds]\n");
	exit(2);
}

static long
num_arg(const char *s, long min, long max)
{
	char	*end;
	long	 v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "spop-load: bad number %s\n", s);
		exit(2);
	}
	return v;
}

static double
dbl_arg(const char *s)
{
	char	*end;
	double	 v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || *end != '\0' || v < 0) {
		fprintf(stderr, "spop-load: bad number %s\n", s);
		exit(2);
	}
	return v;
}

/* ---- certificate ---- */

static uint8_t	*cert_der;
static size_t	 cert_len;

static void
load_cert(void)
{
	FILE		*f;
	X509		*x = NULL;
	EVP_PKEY	*k;
	X509_EXTENSION	*ext;
	X509V3_CTX	 v3;
	char		 san[512];
	uint8_t		 raw[65536], *p;
	size_t		 n;
	int		 len;

	if (o_cert != NULL) {
		if ((f = fopen(o_cert, "rb")) == NULL) {
			fprintf(stderr, "spop-load: %s: %s\n", o_cert, strerror(errno));
			exit(1);
		}
		n = fread(raw, 1, sizeof(raw), f);
		fclose(f);
		if (n >= 10 && memcmp(raw, "-----BEGIN", 10) == 0) {
			BIO *b = BIO_new_mem_buf(raw, (int)n);

			x = PEM_read_bio_X509(b, NULL, NULL, NULL);
			BIO_free(b);
			if (x == NULL) {
				fprintf(stderr, "spop-load: %s: no PEM certificate\n", o_cert);
				exit(1);
			}
		} else {
			cert_der = malloc(n);
			memcpy(cert_der, raw, n);
			cert_len = n;
			return;
		}
	} else {
		/* a throwaway client certificate like Consul's: EC P-256, SPIFFE URI SAN */
		k = EVP_EC_gen("P-256");
		x = X509_new();
		X509_set_version(x, 2);
		ASN1_INTEGER_set(X509_get_serialNumber(x), 42);
		X509_gmtime_adj(X509_getm_notBefore(x), -60);
		X509_gmtime_adj(X509_getm_notAfter(x), 86400);
		X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
		    (const unsigned char *)"web", -1, -1, 0);
		X509_set_issuer_name(x, X509_get_subject_name(x));
		X509_set_pubkey(x, k);
		X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
		snprintf(san, sizeof(san), "URI:%s", o_uri);
		ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
		X509_add_ext(x, ext, -1);
		X509_EXTENSION_free(ext);
		X509_sign(x, k, EVP_sha256());
		EVP_PKEY_free(k);
	}
	len = i2d_X509(x, NULL);
	cert_der = malloc((size_t)len);
	p = cert_der;
	i2d_X509(x, &p);
	cert_len = (size_t)len;
	X509_free(x);
}

/* ---- connecting ---- */

static int
dial(const char *addr)
{
	struct addrinfo		 hints, *res;
	struct sockaddr_un	 sun;
	char			 host[256];
	const char		*colon, *h = addr, *hend;
	int			 fd, one = 1;
	size_t			 hl;

	if (strncmp(addr, "unix:", 5) == 0) {
		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		if (strlen(addr + 5) >= sizeof(sun.sun_path))
			return -1;
		memcpy(sun.sun_path, addr + 5, strlen(addr + 5) + 1);
		if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) == -1)
			return -1;
		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
			close(fd);
			return -1;
		}
		fcntl(fd, F_SETFL, O_NONBLOCK);
		return fd;
	}
	if (addr[0] == '[') {
		h = addr + 1;
		if ((hend = strchr(h, ']')) == NULL || hend[1] != ':')
			return -1;
		colon = hend + 1;
	} else {
		if ((colon = strrchr(addr, ':')) == NULL)
			return -1;
		hend = colon;
	}
	hl = (size_t)(hend - h);
	if (hl >= sizeof(host))
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
		return -1;
	fd = socket(res->ai_family, SOCK_STREAM, 0);
	if (fd == -1 || connect(fd, res->ai_addr, res->ai_addrlen) == -1) {
		if (fd != -1)
			close(fd);
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(fd, F_SETFL, O_NONBLOCK);
	return fd;
}

/* ---- client ---- */

struct slot {
	uint64_t	 sid;
	uint64_t	 t0;		/* ns: sent, or due (open loop) */
	bool		 busy;
};

struct lconn {
	ev_io		 rio, wio;
	int		 fd;
	bool		 ready;		/* AGENT-HELLO received */
	bool		 dead;
	uint32_t	 mfs;
	uint8_t		*in, *out;
	size_t		 in_len, out_len, out_off;
	struct slot	*slots;
	unsigned	*free_slots;
	unsigned	 nfree;
	uint64_t	 next_sid;
	uint64_t	*due;		/* open loop: due times of frames waiting for a slot */
	size_t		 due_head, due_len, due_cap;
};

static struct ev_loop	*loop;
static struct lconn	*conns;
static uint64_t		 n_sent, n_acked, n_allow, n_deny, n_noauth, n_errors, n_disc;
static uint64_t		 t_start, t_end;
static bool		 stopping;
static uint64_t		 rate_scheduled;	/* open loop: frames made due so far */
static unsigned		 rr_next;
static ev_timer		 stop_w, grace_w;

static void conn_flush(struct lconn *c);

static void
conn_fail(struct lconn *c, const char *why)
{
	if (c->dead)
		return;
	c->dead = true;
	if (!stopping) {
		n_errors++;
		fprintf(stderr, "spop-load: connection closed: %s\n", why);
	}
	ev_io_stop(loop, &c->rio);
	ev_io_stop(loop, &c->wio);
	close(c->fd);
}

static bool
out_room(struct lconn *c, size_t n)
{
	if (c->out_off > 0 && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (BUFSZ - c->out_len < n && c->out_off > 0) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	return BUFSZ - c->out_len >= n;
}

/* Queues one NOTIFY; t0 is its start time for the latency. */
static bool
send_notify(struct lconn *c, uint64_t t0)
{
	struct spop_writer	w;
	struct spop_data	d;
	unsigned		i;
	struct slot		*s;
	long			n;

	if (c->nfree == 0 || !out_room(c, cert_len + 256))
		return false;
	i = c->free_slots[--c->nfree];
	s = &c->slots[i];
	s->busy = true;
	s->sid = c->next_sid++;
	s->t0 = t0;
	spop_writer_init(&w, c->out + c->out_len, BUFSZ - c->out_len);
	spop_frame_begin(&w, SPOP_FRM_NOTIFY, SPOP_FL_FIN, s->sid, (uint64_t)i + 1);
	spop_put_str(&w, "check-intentions", 16);
	spop_put_u8(&w, o_target != NULL ? 2 : 1);
	spop_put_str(&w, "cert", 4);
	d = spop_binary(cert_der, cert_len);
	spop_put_data(&w, &d);
	if (o_target != NULL) {
		spop_put_str(&w, "target", 6);
		d = spop_string(o_target, strlen(o_target));
		spop_put_data(&w, &d);
	}
	n = spop_frame_end(&w);
	if (n < 0 || (size_t)n - 4 > c->mfs) {
		fprintf(stderr, "spop-load: NOTIFY does not fit max-frame-size %u\n", c->mfs);
		exit(1);
	}
	c->out_len += (size_t)n;
	n_sent++;
	return true;
}

/* Closed loop: fill every free slot. Open loop: send frames already due. */
static void
conn_fill(struct lconn *c)
{
	uint64_t t;

	if (!c->ready || c->dead || stopping)
		return;
	if (o_rate > 0) {
		while (c->due_len > 0 && send_notify(c, c->due[c->due_head])) {
			c->due_head = (c->due_head + 1) % c->due_cap;
			c->due_len--;
		}
		return;
	}
	t = now_ns();
	while ((o_requests == 0 || n_sent < (uint64_t)o_requests) && send_notify(c, t))
		;
}

static void
handle_ack(struct lconn *c, const struct spop_frame *f, uint64_t t)
{
	struct spop_cursor	cur;
	uint8_t			type, nargs, scope;
	struct spop_str		name;
	struct spop_data	v;
	int			auth = -1;
	uint64_t		idx = f->frame_id - 1;
	struct slot		*s;

	if (f->frame_id == 0 || idx >= (uint64_t)o_inflight || !c->slots[idx].busy || c->slots[idx].sid != f->stream_id) {
		n_errors++;
		return;
	}
	spop_cursor_init(&cur, f->payload, f->payload_len);
	while (spop_cursor_left(&cur) > 0) {
		if (spop_get_u8(&cur, &type) == -1 || spop_get_u8(&cur, &nargs) == -1 ||
		    spop_get_u8(&cur, &scope) == -1 || spop_get_str(&cur, &name) == -1)
			break;
		if (type == 1 && spop_get_data(&cur, &v) == -1)
			break;
		if (type == 1 && name.len == 4 && memcmp(name.ptr, "auth", 4) == 0) {
			if (v.type == SPOP_DT_INT32)
				auth = v.u.i32 != 0;
			else if (v.type == SPOP_DT_BOOL)
				auth = v.u.b;
			else if (v.type == SPOP_DT_INT64 || v.type == SPOP_DT_UINT64)
				auth = v.u.u64 != 0;
			else if (v.type == SPOP_DT_UINT32)
				auth = v.u.u32 != 0;
		}
	}
	if (cur.err != SPOP_OK)
		n_errors++;
	if (auth == 1)
		n_allow++;
	else if (auth == 0)
		n_deny++;
	else
		n_noauth++;
	s = &c->slots[idx];
	if (!stopping || t <= t_end)
		hist_add(t > s->t0 ? t - s->t0 : 0);
	s->busy = false;
	c->free_slots[c->nfree++] = (unsigned)idx;
	n_acked++;
}

static void
handle_frame(struct lconn *c, const uint8_t *p, size_t len, uint64_t t)
{
	struct spop_frame	 f;
	struct spop_cursor	 cur;
	struct spop_kv		 kv;
	uint32_t		 st;
	struct spop_str		 msg;

	if (spop_frame_decode(p, len, &f) != SPOP_OK) {
		conn_fail(c, "bad frame");
		return;
	}
	switch (f.type) {
	case SPOP_FRM_AGENT_HELLO:
		spop_cursor_init(&cur, f.payload, f.payload_len);
		while (spop_kv_next(&cur, &kv) == 1)
			if (kv.name.len == 14 && memcmp(kv.name.ptr, "max-frame-size", 14) == 0 &&
			    kv.value.type == SPOP_DT_UINT32)
				c->mfs = kv.value.u.u32;
		c->ready = true;
		break;
	case SPOP_FRM_ACK:
		handle_ack(c, &f, t);
		break;
	case SPOP_FRM_AGENT_DISCON:
		(void)spop_disconnect_parse(f.payload, f.payload_len, &st, &msg);
		if (!stopping)
			fprintf(stderr, "spop-load: AGENT-DISCONNECT %u %.*s\n", st, (int)msg.len, msg.ptr);
		n_disc++;
		conn_fail(c, "agent disconnect");
		break;
	default:
		conn_fail(c, "unexpected frame type");
		break;
	}
}

static void
conn_flush(struct lconn *c)
{
	ssize_t n;

	while (!c->dead && c->out_off < c->out_len) {
		n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			conn_fail(c, strerror(errno));
			return;
		}
		c->out_off += (size_t)n;
	}
	if (c->dead)
		return;
	if (c->out_off < c->out_len)
		ev_io_start(loop, &c->wio);
	else
		ev_io_stop(loop, &c->wio);
}

static void
check_done(void)
{
	if (o_requests > 0 && n_acked >= (uint64_t)o_requests && !stopping) {
		stopping = true;
		t_end = now_ns();
		ev_break(loop, EVBREAK_ALL);
	}
}

static void
read_cb(struct ev_loop *l, ev_io *w, int revents)
{
	struct lconn	*c = w->data;
	ssize_t		 n;
	size_t		 pos = 0, flen;
	uint64_t	 t;

	n = recv(c->fd, c->in + c->in_len, BUFSZ - c->in_len, 0);
	if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR)) {
		conn_fail(c, n == 0 ? "EOF" : strerror(errno));
		return;
	}
	if (n < 0)
		return;
	c->in_len += (size_t)n;
	t = now_ns();
	while (!c->dead && c->in_len - pos >= 4) {
		flen = (size_t)c->in[pos] << 24 | (size_t)c->in[pos + 1] << 16 | (size_t)c->in[pos + 2] << 8 | c->in[pos + 3];
		if (flen > BUFSZ - 4) {
			conn_fail(c, "frame too big");
			return;
		}
		if (c->in_len - pos - 4 < flen)
			break;
		handle_frame(c, c->in + pos + 4, flen, t);
		pos += 4 + flen;
	}
	if (c->dead)
		return;
	memmove(c->in, c->in + pos, c->in_len - pos);
	c->in_len -= pos;
	conn_fill(c);
	conn_flush(c);
	check_done();
}

static void
write_cb(struct ev_loop *l, ev_io *w, int revents)
{
	conn_flush(w->data);
}

/*
 * Open loop: make the frames due since the start due on connections in turn, and send them. Called
 * between non-blocking loop iterations (a busy loop: epoll's millisecond timeouts would add up to a
 * millisecond of pacing delay to every frame).
 */
static void
rate_tick(void)
{
	uint64_t	t = now_ns();
	/* frame k is due at t_start + k / rate: frames 0..floor(elapsed * rate) are due now */
	uint64_t	target = (uint64_t)((double)(t - t_start) / 1e9 * o_rate) + 1;
	uint64_t	due_at;
	struct lconn	*c;
	unsigned	tries;

	if (stopping)
		return;
	while (rate_scheduled < target && (o_requests == 0 || rate_scheduled < (uint64_t)o_requests)) {
		due_at = t_start + (uint64_t)((double)rate_scheduled * 1e9 / o_rate);
		c = &conns[0];
		for (tries = 0; tries < (unsigned)o_conns; tries++) {
			c = &conns[rr_next++ % (unsigned)o_conns];
			if (c->ready && !c->dead)
				break;
		}
		if (c->due_len == c->due_cap) {
			/* more than a second's worth waiting: the server cannot keep up; drop it as an error */
			n_errors++;
		} else {
			c->due[(c->due_head + c->due_len) % c->due_cap] = due_at;
			c->due_len++;
		}
		rate_scheduled++;
	}
	for (tries = 0; tries < (unsigned)o_conns; tries++) {
		if (conns[tries].due_len == 0)
			continue;
		conn_fill(&conns[tries]);
		conn_flush(&conns[tries]);
	}
}

static int	tick_fd = -1;
static ev_io	tick_w;
static ev_idle	spin_w;

/* -tick 0: an idle watcher keeps libev polling without sleeping; every pass releases what is due. */
static void
spin_cb(struct ev_loop *l, ev_idle *w, int revents)
{
	rate_tick();
}

static void
tick_cb(struct ev_loop *l, ev_io *w, int revents)
{
	uint64_t expirations;

	(void)read(tick_fd, &expirations, sizeof(expirations));
	rate_tick();
}

static void
stop_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	stopping = true;
	t_end = now_ns();
	ev_break(loop, EVBREAK_ALL);
}

static void
grace_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	ev_break(loop, EVBREAK_ALL);
}

static int
run_client(void)
{
	uint8_t		hello[256];
	long		hn, i;
	unsigned	j;
	struct spop_writer w;
	struct spop_data d;
	double		secs;
	uint64_t	answered;

	load_cert();
	if (cert_len + 256 > BUFSZ || cert_len + 256 > (size_t)o_mfs) {
		fprintf(stderr, "spop-load: a %zu-byte certificate does not fit in a frame (-mfs %ld)\n", cert_len, o_mfs);
		return 1;
	}
	loop = EV_DEFAULT;
	/* HAProxy 2.6's HELLO */
	spop_writer_init(&w, hello, sizeof(hello));
	spop_frame_begin(&w, SPOP_FRM_HAPROXY_HELLO, SPOP_FL_FIN, 0, 0);
	spop_put_str(&w, "supported-versions", 18);
	d = spop_string("2.0", 3);
	spop_put_data(&w, &d);
	spop_put_str(&w, "max-frame-size", 14);
	d = spop_uint32((uint32_t)o_mfs);
	spop_put_data(&w, &d);
	spop_put_str(&w, "capabilities", 12);
	d = spop_string("pipelining,async", 16);
	spop_put_data(&w, &d);
	spop_put_str(&w, "engine-id", 9);
	d = spop_string("spop-load", 9);
	spop_put_data(&w, &d);
	hn = spop_frame_end(&w);

	conns = calloc((size_t)o_conns, sizeof(*conns));
	for (i = 0; i < o_conns; i++) {
		struct lconn *c = &conns[i];

		if ((c->fd = dial(o_addr)) == -1) {
			fprintf(stderr, "spop-load: connect %s: %s\n", o_addr, strerror(errno));
			return 1;
		}
		c->in = malloc(BUFSZ);
		c->out = malloc(BUFSZ);
		c->slots = calloc((size_t)o_inflight, sizeof(*c->slots));
		c->free_slots = calloc((size_t)o_inflight, sizeof(*c->free_slots));
		for (j = 0; j < (unsigned)o_inflight; j++)
			c->free_slots[c->nfree++] = (unsigned)o_inflight - 1 - j;
		c->mfs = (uint32_t)o_mfs;
		c->next_sid = 1;
		if (o_rate > 0) {
			c->due_cap = (size_t)(o_rate / (double)o_conns) + 1024;
			c->due = calloc(c->due_cap, sizeof(*c->due));
		}
		ev_io_init(&c->rio, read_cb, c->fd, EV_READ);
		ev_io_init(&c->wio, write_cb, c->fd, EV_WRITE);
		c->rio.data = c->wio.data = c;
		ev_io_start(loop, &c->rio);
		memcpy(c->out, hello, (size_t)hn);
		c->out_len = (size_t)hn;
		conn_flush(c);
	}
	/* wait for every AGENT-HELLO */
	for (;;) {
		long ready = 0, dead = 0;

		for (i = 0; i < o_conns; i++) {
			ready += conns[i].ready;
			dead += conns[i].dead;
		}
		if (dead > 0)
			return 1;
		if (ready == o_conns)
			break;
		ev_run(loop, EVRUN_ONCE);
	}
	t_start = now_ns();
	if (o_rate == 0) {
		for (i = 0; i < o_conns; i++) {
			conn_fill(&conns[i]);
			conn_flush(&conns[i]);
		}
	}
	if (o_requests == 0 || o_duration > 0) {
		ev_timer_init(&stop_w, stop_cb, o_requests > 0 && o_duration == 0 ? 3600 : o_duration, 0.);
		ev_timer_start(loop, &stop_w);
	}
	if (o_rate > 0 && o_tick == 0) {
		ev_idle_init(&spin_w, spin_cb);
		ev_idle_start(loop, &spin_w);
	} else if (o_rate > 0) {
		/*
		 * Pacing ticks from a timerfd: libev sleeps in epoll_wait, whose timeout is in milliseconds,
		 * which would add up to a millisecond of pacing delay to every frame.
		 */
		struct itimerspec its = { 0 };

		(void)prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
		if ((tick_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) == -1) {
			fprintf(stderr, "spop-load: timerfd: %s\n", strerror(errno));
			return 1;
		}
		its.it_value.tv_nsec = (long)(o_tick * 1000);
		its.it_interval.tv_nsec = (long)(o_tick * 1000);
		timerfd_settime(tick_fd, 0, &its, NULL);
		ev_io_init(&tick_w, tick_cb, tick_fd, EV_READ);
		ev_io_start(loop, &tick_w);
	}
	ev_run(loop, 0);
	if (o_rate > 0 && o_tick == 0)
		ev_idle_stop(loop, &spin_w);
	else if (o_rate > 0)
		ev_io_stop(loop, &tick_w);
	ev_timer_stop(loop, &stop_w);
	answered = n_acked;
	/* let what is in flight come back (not counted in the rate), then close */
	ev_timer_init(&grace_w, grace_cb, 1.0, 0.);
	ev_timer_start(loop, &grace_w);
	while (n_acked < n_sent && ev_is_active(&grace_w))
		ev_run(loop, EVRUN_ONCE);
	for (i = 0; i < o_conns; i++)
		if (!conns[i].dead) {
			conns[i].dead = true;
			close(conns[i].fd);
		}
	secs = (double)(t_end - t_start) / 1e9;
	printf("spop-load: %ld connections x %ld in flight, %s, %.2f s\n", o_conns, o_inflight,
	    o_rate > 0 ? "open loop" : "closed loop", secs);
	if (o_rate > 0)
		printf("  offered rate  %.0f frames/s\n", o_rate);
	printf("  answers       %llu (%.0f/s)   allow %llu  deny %llu  no-auth %llu  errors %llu  disconnects %llu\n",
	    (unsigned long long)answered, (double)answered / secs, (unsigned long long)n_allow,
	    (unsigned long long)n_deny, (unsigned long long)n_noauth, (unsigned long long)n_errors,
	    (unsigned long long)n_disc);
	printf("  latency (us)  p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n",
	    hist_quantile(0.50) / 1e3, hist_quantile(0.90) / 1e3, hist_quantile(0.99) / 1e3,
	    hist_quantile(0.999) / 1e3, hist_quantile(1.0) / 1e3);
	printf("RESULT rate=%.0f answers=%llu allow=%llu deny=%llu errors=%llu p50_us=%.1f p90_us=%.1f p99_us=%.1f "
	    "p999_us=%.1f\n", (double)answered / secs, (unsigned long long)answered, (unsigned long long)n_allow,
	    (unsigned long long)n_deny, (unsigned long long)(n_errors + n_disc), hist_quantile(0.50) / 1e3,
	    hist_quantile(0.90) / 1e3, hist_quantile(0.99) / 1e3, hist_quantile(0.999) / 1e3);
	return n_errors + n_disc > 0 ? 1 : 0;
}

/* ---- servers ---- */

static struct authz_pending *
allow_all(void *ctx, const struct authz_query *q, authz_done_cb *done, void *arg)
{
	static const struct authz_decision d = { .allow = true, .source_app = "web", .reason = "cached allow" };

	done(arg, &d);
	return NULL;
}

static void
drained(void *arg)
{
	ev_break(loop, EVBREAK_ALL);
}

static struct spoa_server *srv;

static void
sig_cb(struct ev_loop *l, ev_signal *w, int revents)
{
	if (srv != NULL)
		spoa_server_drain(srv, drained, NULL);
	else
		ev_break(loop, EVBREAK_ALL);
}

/* The trivial peer: parses frame headers only, answers HELLO and NOTIFY with canned frames. */
struct tconn {
	ev_io	 rio;
	int	 fd;
	uint8_t	 in[BUFSZ];
	size_t	 in_len;
	uint8_t	 out[BUFSZ];
};

static void
trivial_read(struct ev_loop *l, ev_io *w, int revents)
{
	struct tconn		*c = w->data;
	ssize_t			 n;
	size_t			 pos = 0, flen, olen = 0;
	struct spop_frame	 f;
	struct spop_writer	 wr;
	struct spop_data	 d;
	long			 m;

	n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
	if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR)) {
		ev_io_stop(l, w);
		close(c->fd);
		free(c);
		return;
	}
	if (n < 0)
		return;
	c->in_len += (size_t)n;
	while (c->in_len - pos >= 4) {
		flen = (size_t)c->in[pos] << 24 | (size_t)c->in[pos + 1] << 16 | (size_t)c->in[pos + 2] << 8 | c->in[pos + 3];
		if (flen > sizeof(c->in) - 4 || c->in_len - pos - 4 < flen)
			break;
		if (spop_frame_decode(c->in + pos + 4, flen, &f) == SPOP_OK && sizeof(c->out) - olen > 128) {
			if (f.type == SPOP_FRM_HAPROXY_HELLO) {
				m = spop_build_agent_hello(c->out + olen, sizeof(c->out) - olen, 16380, "pipelining");
			} else {
				spop_writer_init(&wr, c->out + olen, sizeof(c->out) - olen);
				spop_ack_begin(&wr, f.stream_id, f.frame_id);
				d = spop_int32(1);
				spop_ack_set_var(&wr, SPOP_SCOPE_SESS, "auth", 4, &d);
				m = spop_frame_end(&wr);
			}
			if (m > 0)
				olen += (size_t)m;
		}
		pos += 4 + flen;
	}
	memmove(c->in, c->in + pos, c->in_len - pos);
	c->in_len -= pos;
	if (olen > 0) {
		/* a bench peer: one send when it fits (always, in practice); else block until written */
		n = send(c->fd, c->out, olen, MSG_NOSIGNAL);
		if (n >= 0 && (size_t)n < olen) {
			fcntl(c->fd, F_SETFL, 0);
			(void)send(c->fd, c->out + n, olen - (size_t)n, MSG_NOSIGNAL);
			fcntl(c->fd, F_SETFL, O_NONBLOCK);
		}
	}
}

static int	tlfd = -1;

static void
trivial_accept(struct ev_loop *l, ev_io *w, int revents)
{
	struct tconn	*c;
	int		 fd, one = 1;

	while ((fd = accept4(tlfd, NULL, NULL, SOCK_NONBLOCK)) != -1) {
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = calloc(1, sizeof(*c));
		c->fd = fd;
		ev_io_init(&c->rio, trivial_read, fd, EV_READ);
		c->rio.data = c;
		ev_io_start(l, &c->rio);
	}
}

static int
run_server(void)
{
	struct spoa_server_opts	o = { 0 };
	char			err[256];
	ev_signal		sint, sterm;
	ev_io			acc;
	struct addrinfo		hints, *res;
	char			host[256];
	const char		*colon;
	int			one = 1;

	loop = EV_DEFAULT;
	if (o_busy_poll > 0 && busypoll_new(loop, o_busy_poll) == NULL) {
		fprintf(stderr, "spop-load: busy polling: out of memory\n");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	ev_signal_init(&sint, sig_cb, SIGINT);
	ev_signal_init(&sterm, sig_cb, SIGTERM);
	ev_signal_start(loop, &sint);
	ev_signal_start(loop, &sterm);
	if (!o_trivial) {
		o.listen = o_serve;
		o.check = allow_all;
		if ((srv = spoa_server_new(loop, &o, err, sizeof(err))) == NULL) {
			fprintf(stderr, "spop-load: %s\n", err);
			return 1;
		}
		fprintf(stderr, "spop-load: serving connect-spoa's SPOP server with an allow-all check on %s\n", o_serve);
		ev_run(loop, 0);
		spoa_server_free(srv);
		return 0;
	}
	if (strncmp(o_serve, "unix:", 5) == 0) {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };

		if (strlen(o_serve + 5) >= sizeof(sun.sun_path))
			usage();
		strcpy(sun.sun_path, o_serve + 5);
		(void)unlink(sun.sun_path);
		if ((tlfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0)) == -1 ||
		    bind(tlfd, (struct sockaddr *)&sun, sizeof(sun)) == -1 || listen(tlfd, 1024) == -1) {
			fprintf(stderr, "spop-load: trivial server on %s: %s\n", o_serve, strerror(errno));
			return 1;
		}
		goto listening;
	}
	if ((colon = strrchr(o_serve, ':')) == NULL || (size_t)(colon - o_serve) >= sizeof(host))
		usage();
	memcpy(host, o_serve, (size_t)(colon - o_serve));
	host[colon - o_serve] = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0 ||
	    (tlfd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK, 0)) == -1 ||
	    setsockopt(tlfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    bind(tlfd, res->ai_addr, res->ai_addrlen) == -1 || listen(tlfd, 1024) == -1) {
		fprintf(stderr, "spop-load: trivial server on %s: %s\n", o_serve, strerror(errno));
		return 1;
	}
	freeaddrinfo(res);
listening:
	ev_io_init(&acc, trivial_accept, tlfd, EV_READ);
	ev_io_start(loop, &acc);
	fprintf(stderr, "spop-load: trivial SPOP peer on %s\n", o_serve);
	ev_run(loop, 0);
	return 0;
}

int
main(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "-trivial") == 0) {
			o_trivial = 1;
			continue;
		}
		if (v == NULL)
			usage();
		i++;
		if (strcmp(a, "-addr") == 0)
			o_addr = v;
		else if (strcmp(a, "-serve") == 0)
			o_serve = v;
		else if (strcmp(a, "-c") == 0)
			o_conns = num_arg(v, 1, 100000);
		else if (strcmp(a, "-k") == 0)
			o_inflight = num_arg(v, 1, 65536);
		else if (strcmp(a, "-n") == 0)
			o_requests = num_arg(v, 0, 1L << 40);
		else if (strcmp(a, "-d") == 0)
			o_duration = dbl_arg(v);
		else if (strcmp(a, "-rate") == 0)
			o_rate = dbl_arg(v);
		else if (strcmp(a, "-tick") == 0)
			o_tick = dbl_arg(v);
		else if (strcmp(a, "-busy-poll") == 0)
			o_busy_poll = dbl_arg(v);
		else if (strcmp(a, "-cert") == 0)
			o_cert = v;
		else if (strcmp(a, "-uri") == 0)
			o_uri = v;
		else if (strcmp(a, "-target") == 0)
			o_target = v;
		else if (strcmp(a, "-mfs") == 0)
			o_mfs = num_arg(v, 256, 1L << 24);
		else
			usage();
	}
	if (o_serve != NULL)
		return run_server();
	if (o_addr == NULL || (o_tick != 0 && o_tick < 1) || o_tick >= 1e6)
		usage();
	if (o_requests > 0 && o_duration == 10)
		o_duration = 0;	/* -n alone: until n answers */
	signal(SIGPIPE, SIG_IGN);
	return run_client();
}
