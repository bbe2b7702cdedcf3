/*
 * runtime.c - HAProxy runtime API client (stats socket) and certsync's transactions through it.
 *
 * ---- The CA-change path on Debian's HAProxy 2.6.12: what was tried and what was seen ----
 *
 * 1. "set ssl ca-file ca.pem" + "commit ssl ca-file ca.pem" on the ca-file of a bind
 *    "ssl crt leaf.pem ca-file ca.pem verify required": "Success!", but from then on "show ssl cert
 *    leaf.pem" says "Status: Unused" and every later "set/commit ssl cert leaf.pem" answers "Success!"
 *    while the OLD certificate keeps being served (checked with a TLS client reading the served
 *    serial: three later rotations, none served). Note that "show ssl cert" then reports the NEW serial:
 *    a serial check alone does not see the breakage, so rt_cert_update also requires "Status: Used".
 * 2. A NEW ca-file name plus a crt-list entry swap, bind "ssl crt-list list.txt" with the line
 *    "leaf.pem [ca-file ca.pem verify required]": "new ssl ca-file ca-2.pem", set, commit: Success;
 *    "add ssl crt-list list.txt <<" "leaf.pem [ca-file ca-2.pem verify required]": Success (two
 *    entries for leaf.pem); "del ssl crt-list list.txt leaf.pem:1" is REFUSED: "certificate cannot be
 *    deleted, it is used as default certificate by the following frontends". The first crt-list entry is
 *    the bind's default context, used by every client that sends no SNI (our upstream server lines
 *    send none), so a client with a leaf of the new CA was refused by the old ca-file (seen). Working around it needs a dummy default entry plus SNI on every client, and the upstream
 *    server lines cannot use a crt-list at all ("add server" with a new ca-file would need dynamic
 *    servers in place of the server-template slots). Rejected as not provably safe.
 * 3. Adopted: HAProxy's ca-file is never changed through the runtime API. A CA rotation needs no change
 *    of it at once: Consul's new leaves carry the new root cross-signed by the old one, so the loaded
 *    bundle still verifies them; certsync/daemon.c (ca_reload_why) keeps the running worker's bundle
 *    and rotates the leaf through the runtime API when the new active root chains to it. Only when a
 *    root the worker trusts is REMOVED (Consul pruned it: stop trusting it now), or the new CA does not
 *    chain to the loaded bundle, is the CA change a seamless master-worker reload. The daemon
 *    writes the new CA bundle (all roots) first, then hap_reload (haproxy.c): `haproxy -c`, master
 *    "reload", the listening sockets are handed over to the new worker, the old worker finishes its
 *    connections (hard-stop-after bounds it). Leaf rotations stay on the runtime API (rt_cert_update,
 *    no reload), also the first leaf signed by the new CA, which Consul publishes after the new roots.
 *    ORDER MATTERS: reload with the new roots BEFORE putting a leaf of the new CA in service. Between
 *    the two, the old worker (old roots only) may still open a server-side connection that lands on
 *    the new worker's bind; it must present a leaf the old roots accept.
 *    Proven by tests/integration/test_runtime_rotation.py on Debian's 2.6.12 under continuous load (a
 *    loop of new connections through an upstream server line into the mTLS bind, a loop of direct mTLS
 *    connections reading the served serial, and one long-lived connection pinging every 20 ms):
 *    - three leaf rotations: 0 failed of ~310 upstream + ~230 inbound connections + ~70 long-lived
 *      pings; each new serial served on the bind; show proc: same worker pid, reload count unchanged;
 *    - roots change by reload, then a new-CA leaf and a further leaf by the runtime API: 0 failed of
 *      ~360 + ~280 connections + ~100 pings (the long-lived connection, opened before the reload, kept
 *      working on the old worker); "Status: Used" and the new serial served after each step; callers
 *      with leaves of the old and of the new CA accepted; show proc: exactly one reload, none failed;
 *    - a third test pins the 2.6.12 breakage of path 1 (it will fail if HAProxy fixes it).
 *    Five consecutive runs passed. The C paths themselves (rt_cert_update incl. abort on a key
 *    mismatch, hap_reload keeping a held connection) are tested in tests/unit/test_certsync_runtime.c.
 *
 * ---- The client ----
 * One connection per command; one operation at a time from a FIFO queue (an operation is one raw
 * command, or a small state machine of several: the whole certificate transaction holds the queue, so
 * two "set ssl cert" transactions can never interleave). Answers are read to EOF, capped at
 * RT_MAX_ANSWER, with a per-command timeout.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "runtime.h"

enum rt_kind {
	RT_RAW,
	RT_CERT,
	RT_SERIAL,
	RT_SERVER,
	RT_SERVERS,
};

enum rt_step {
	ST_ONE,			/* RAW, SERIAL, SERVERS: a single command */
	ST_CERT_SET,
	ST_CERT_COMMIT,
	ST_CERT_ABORT,
	ST_CERT_SHOW,
	ST_SRV_ADDR,
	ST_SRV_STATE,
	ST_SRV_READ,
};

struct rt_op {
	struct rt_op	*next;
	enum rt_kind	 kind;
	enum rt_step	 step;
	char		*cmd;		/* RAW: the command line */
	char		*payload;	/* RAW: stripped payload; CERT: the stripped PEM */
	size_t		 payload_len;
	char		*file;		/* CERT, SERIAL */
	char		 serial[128];	/* CERT: expected serial */
	char		*backend;	/* SERVER, SERVERS */
	char		*server;	/* SERVER */
	char		 addr[64];	/* SERVER */
	int		 port;
	bool		 ready;
	char		 failure[2048];	/* CERT: the error kept while aborting */
	rt_answer_cb	*answer_cb;
	rt_done_cb	*done_cb;
	rt_serial_cb	*serial_cb;
	rt_servers_cb	*servers_cb;
	void		*arg;
};

struct rt_client {
	struct ev_loop	*loop;
	char		*path;
	double		 timeout;
	struct rt_op	*head, *tail;
	size_t		 nops;
	bool		 in_cb;
	bool		 dead;

	/* the connection of the command in flight */
	int		 fd;
	bool		 connecting;
	char		*out;
	size_t		 outlen, outoff;
	char		*in;
	size_t		 inlen, incap;
	ev_io		 io;
	ev_timer	 tm;
	ev_timer	 kick;
	char		 pending_err[256];	/* a failure of rt_send, delivered from the loop */
};

static void rt_next(struct rt_client *c);
static void rt_send(struct rt_client *c, const char *cmd, const char *payload, size_t plen);

/* ---------------------------------------------------------------- pure helpers */

/* The line that starts at *i in text[0..len): [*s, *e) without its newline; *i moves past the newline. */
static void
next_line(const char *text, size_t len, size_t *i, size_t *s, size_t *e)
{
	*s = *i;
	while (*i < len && text[*i] != '\n')
		(*i)++;
	*e = *i;
	if (*i < len)
		(*i)++;
}

int
rt_pem_strip_blank(const char *in, size_t len, char **out, size_t *outlen, char *err, size_t errlen)
{
	char *o;
	size_t i = 0, n = 0;

	if ((o = malloc(len + 2)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	while (i < len) {
		size_t s, e;
		bool blank = true;

		next_line(in, len, &i, &s, &e);
		while (e > s && in[e - 1] == '\r')
			e--;
		for (size_t k = s; k < e; k++)
			if (!isspace((unsigned char)in[k])) {
				blank = false;
				break;
			}
		if (blank)
			continue;
		for (size_t k = s; k < e; k++)
			if (in[k] == '\0') {
				free(o);
				snprintf(err, errlen, "payload contains a NUL byte");
				return -1;
			}
		memcpy(o + n, in + s, e - s);
		n += e - s;
		o[n++] = '\n';
	}
	o[n] = '\0';
	*out = o;
	*outlen = n;
	return 0;
}

/* Upper-case hex without leading zeros, so "0A29.." and "A29.." compare equal. */
static void
serial_norm(const char *in, char *out, size_t outlen)
{
	size_t n = 0;

	while (*in == '0' && in[1] != '\0')
		in++;
	for (; *in != '\0' && n + 1 < outlen; in++)
		if (isxdigit((unsigned char)*in))
			out[n++] = (char)toupper((unsigned char)*in);
	out[n] = '\0';
}

int
rt_pem_serial(const char *pem, size_t len, char *out, size_t outlen, char *err, size_t errlen)
{
	BIO *b;
	X509 *x;
	BIGNUM *bn;
	char *hex;
	int rc = -1;

	if (len > (size_t)1 << 30 || (b = BIO_new_mem_buf(pem, (int)len)) == NULL) {
		snprintf(err, errlen, "cannot read the PEM");
		return -1;
	}
	x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	if (x == NULL) {
		snprintf(err, errlen, "no certificate in the PEM");
		return -1;
	}
	bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	hex = bn != NULL ? BN_bn2hex(bn) : NULL;
	if (hex == NULL)
		snprintf(err, errlen, "cannot read the certificate's serial");
	else if (strlen(hex) + 1 > outlen)
		snprintf(err, errlen, "serial too long");
	else {
		serial_norm(hex, out, outlen);
		rc = 0;
	}
	OPENSSL_free(hex);
	BN_free(bn);
	X509_free(x);
	return rc;
}

/* The value of the line "<key><value>" (key includes ": "), without trailing spaces. */
static int
find_line_value(const char *text, size_t len, const char *key, const char **val, size_t *vlen)
{
	size_t klen = strlen(key), i = 0;

	while (i < len) {
		size_t s, e;

		next_line(text, len, &i, &s, &e);
		if (e - s >= klen && memcmp(text + s, key, klen) == 0) {
			s += klen;
			while (s < e && text[s] == ' ')
				s++;
			while (e > s && isspace((unsigned char)text[e - 1]))
				e--;
			*val = text + s;
			*vlen = e - s;
			return 0;
		}
	}
	return -1;
}

int
rt_parse_serial(const char *text, size_t len, char *out, size_t outlen, char *err, size_t errlen)
{
	const char *v;
	size_t vlen;
	char tmp[256];

	if (find_line_value(text, len, "Serial:", &v, &vlen) == -1 || vlen == 0) {
		snprintf(err, errlen, "no serial in the answer");
		return -1;
	}
	if (vlen >= sizeof(tmp)) {
		snprintf(err, errlen, "serial too long");
		return -1;
	}
	for (size_t i = 0; i < vlen; i++)
		if (!isxdigit((unsigned char)v[i])) {
			snprintf(err, errlen, "serial is not hex");
			return -1;
		}
	memcpy(tmp, v, vlen);
	tmp[vlen] = '\0';
	serial_norm(tmp, out, outlen);
	return 0;
}

static bool
has_ci(const char *text, size_t len, const char *needle)
{
	size_t n = strlen(needle);

	for (size_t i = 0; n <= len && i + n <= len; i++)
		if (strncasecmp(text + i, needle, n) == 0)
			return true;
	return false;
}

bool
rt_answer_success(const char *text, size_t len)
{
	return has_ci(text, len, "Success!") && !has_ci(text, len, "Failed") &&
	    !has_ci(text, len, "rror") && !has_ci(text, len, "(null)");
}

/* An answer to "set server" / "abort" is an error when it says so; the read-back is the real check. */
static bool
answer_is_error(const char *text, size_t len)
{
	static const char *bad[] = { "No such", "Require", "nvalid", "Can't", "cannot", "failed", "Unknown",
	    "rror", "not ", "Permission denied" };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (has_ci(text, len, bad[i]))
			return true;
	return false;
}

/* Splits one line into space-separated fields (in place, on a copy). Returns the count (<= max). */
static size_t
split_fields(char *line, char **f, size_t max)
{
	size_t n = 0;
	char *p = line;

	while (*p != '\0' && n < max) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		f[n++] = p;
		while (*p != '\0' && *p != ' ' && *p != '\t')
			p++;
		if (*p != '\0')
			*p++ = '\0';
	}
	return n;
}

static int
parse_int(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	if (*s == '\0')
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

#define RT_MAX_FIELDS	64

int
rt_parse_servers_state(const char *text, size_t len, const char *backend, struct rt_server **srv,
    size_t *n, char *err, size_t errlen)
{
	struct rt_server *v = NULL, *nv;
	size_t nv_n = 0, cap = 0, i = 0, lineno = 0;
	int col_be = -1, col_name = -1, col_addr = -1, col_op = -1, col_admin = -1, col_port = -1;
	char line[4096];
	bool version_seen = false;

	*srv = NULL;
	*n = 0;
	while (i < len) {
		size_t s, e;
		char *f[RT_MAX_FIELDS];
		size_t nf;

		next_line(text, len, &i, &s, &e);
		lineno++;
		if (e - s >= sizeof(line)) {
			snprintf(err, errlen, "servers state: line %zu too long", lineno);
			goto fail;
		}
		memcpy(line, text + s, e - s);
		line[e - s] = '\0';
		if (memchr(line, '\0', e - s) != NULL) {
			snprintf(err, errlen, "servers state: NUL byte on line %zu", lineno);
			goto fail;
		}
		if (line[0] == '\0')
			continue;
		if (!version_seen) {
			if (strcmp(line, "1") != 0) {
				snprintf(err, errlen, "servers state: unexpected answer: %.200s", line);
				goto fail;
			}
			version_seen = true;
			continue;
		}
		if (line[0] == '#') {
			nf = split_fields(line + 1, f, RT_MAX_FIELDS);
			for (size_t k = 0; k < nf; k++) {
				if (strcmp(f[k], "be_name") == 0)
					col_be = (int)k;
				else if (strcmp(f[k], "srv_name") == 0)
					col_name = (int)k;
				else if (strcmp(f[k], "srv_addr") == 0)
					col_addr = (int)k;
				else if (strcmp(f[k], "srv_op_state") == 0)
					col_op = (int)k;
				else if (strcmp(f[k], "srv_admin_state") == 0)
					col_admin = (int)k;
				else if (strcmp(f[k], "srv_port") == 0)
					col_port = (int)k;
			}
			continue;
		}
		if (col_be < 0 || col_name < 0 || col_addr < 0 || col_op < 0 || col_admin < 0 || col_port < 0) {
			snprintf(err, errlen, "servers state: no column header before line %zu", lineno);
			goto fail;
		}
		nf = split_fields(line, f, RT_MAX_FIELDS);
		{
			int need = col_be;
			long op, admin, port;
			struct rt_server *r;

			if (col_name > need) need = col_name;
			if (col_addr > need) need = col_addr;
			if (col_op > need) need = col_op;
			if (col_admin > need) need = col_admin;
			if (col_port > need) need = col_port;
			if ((size_t)need >= nf) {
				snprintf(err, errlen, "servers state: line %zu has %zu fields", lineno, nf);
				goto fail;
			}
			if (backend != NULL && strcmp(f[col_be], backend) != 0)
				continue;
			if (parse_int(f[col_op], 0, 3, &op) == -1 || parse_int(f[col_admin], 0, 255, &admin) == -1 ||
			    parse_int(f[col_port], 0, 65535, &port) == -1) {
				snprintf(err, errlen, "servers state: bad number on line %zu", lineno);
				goto fail;
			}
			if (strlen(f[col_name]) >= sizeof(v->name) || strlen(f[col_addr]) >= sizeof(v->addr)) {
				snprintf(err, errlen, "servers state: field too long on line %zu", lineno);
				goto fail;
			}
			if (nv_n == cap) {
				cap = cap ? cap * 2 : 8;
				if ((nv = realloc(v, cap * sizeof(*v))) == NULL) {
					snprintf(err, errlen, "out of memory");
					goto fail;
				}
				v = nv;
			}
			r = &v[nv_n++];
			memset(r, 0, sizeof(*r));
			snprintf(r->name, sizeof(r->name), "%s", f[col_name]);
			snprintf(r->addr, sizeof(r->addr), "%s", f[col_addr]);
			r->port = (int)port;
			r->op_state = (int)op;
			r->admin_state = (int)admin;
			r->maint = (admin & (0x01 | 0x02 | 0x20)) != 0;	/* SRV_ADMF_MAINT; 0x04 only records "disabled" in the config */
		}
	}
	if (!version_seen) {
		snprintf(err, errlen, "servers state: empty answer");
		goto fail;
	}
	*srv = v;
	*n = nv_n;
	return 0;
fail:
	free(v);
	return -1;
}

/* Same address, textually or as parsed (HAProxy prints addresses its own way). */
static bool
addr_equal(const char *a, const char *b)
{
	unsigned char x[16], y[16];

	if (strcmp(a, b) == 0)
		return true;
	if (inet_pton(AF_INET, a, x) == 1 && inet_pton(AF_INET, b, y) == 1)
		return memcmp(x, y, 4) == 0;
	if (inet_pton(AF_INET6, a, x) == 1 && inet_pton(AF_INET6, b, y) == 1)
		return memcmp(x, y, 16) == 0;
	return false;
}

/* A value that goes into a command line: no spaces, no control characters. */
static bool
word_ok(const char *s)
{
	if (s == NULL || *s == '\0' || strlen(s) > 1024)
		return false;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f || *s == ';' || *s == '\\')
			return false;
	return true;
}

/* ---------------------------------------------------------------- connection */

static void
conn_close(struct rt_client *c)
{
	ev_io_stop(c->loop, &c->io);
	ev_timer_stop(c->loop, &c->tm);
	if (c->fd != -1)
		close(c->fd);
	c->fd = -1;
	free(c->out);
	c->out = NULL;
	free(c->in);
	c->in = NULL;
	c->inlen = c->incap = c->outlen = c->outoff = 0;
}

static void
op_free(struct rt_op *op)
{
	if (op == NULL)
		return;
	free(op->cmd);
	free(op->payload);
	free(op->file);
	free(op->backend);
	free(op->server);
	free(op);
}

/* Removes the head (finished) and starts the next operation from the loop. */
static void
op_finish(struct rt_client *c)
{
	struct rt_op *op = c->head;

	c->head = op->next;
	if (c->head == NULL)
		c->tail = NULL;
	c->nops--;
	op_free(op);
	if (c->head != NULL && !ev_is_active(&c->kick)) {
		ev_timer_set(&c->kick, 0.0, 0.0);
		ev_timer_start(c->loop, &c->kick);
	}
}

static void op_answer(struct rt_client *c, bool ok, const char *text, size_t len, const char *err);

static void
conn_done(struct rt_client *c, bool ok, const char *err)
{
	char *text = c->in;
	size_t len = c->inlen;

	c->in = NULL;
	conn_close(c);
	if (ok && text == NULL)
		text = strdup("");
	if (ok && text == NULL) {
		ok = false;
		err = "out of memory";
	}
	c->in_cb = true;
	op_answer(c, ok, ok ? text : NULL, ok ? len : 0, err);
	c->in_cb = false;
	free(text);
	if (c->dead)
		rt_free(c);
}

static void
conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct rt_client *c = w->data;
	char errbuf[256];
	ssize_t n;

	if (c->connecting && (revents & EV_WRITE)) {
		int e = 0;
		socklen_t el = sizeof(e);

		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &el) == -1)
			e = errno;
		if (e != 0) {
			snprintf(errbuf, sizeof(errbuf), "connect %s: %s", c->path, strerror(e));
			conn_done(c, false, errbuf);
			return;
		}
		c->connecting = false;
	}
	if ((revents & EV_WRITE) && c->outoff < c->outlen) {
		n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
		if (n == -1 && errno != EAGAIN && errno != EINTR) {
			snprintf(errbuf, sizeof(errbuf), "write %s: %s", c->path, strerror(errno));
			conn_done(c, false, errbuf);
			return;
		}
		if (n > 0)
			c->outoff += (size_t)n;
		if (c->outoff == c->outlen) {
			/* The master CLI answers only once it sees the end of our input. */
			(void)shutdown(c->fd, SHUT_WR);
			ev_io_stop(loop, w);
			ev_io_set(w, c->fd, EV_READ);
			ev_io_start(loop, w);
		}
		return;
	}
	if (revents & EV_READ) {
		if (c->incap - c->inlen < 4096 + 1) {
			size_t ncap = c->incap ? c->incap * 2 : 16384;
			char *ni;

			if (ncap > RT_MAX_ANSWER + 1)
				ncap = RT_MAX_ANSWER + 1;
			if (ncap - c->inlen < 2) {
				conn_done(c, false, "answer too large");
				return;
			}
			if ((ni = realloc(c->in, ncap)) == NULL) {
				conn_done(c, false, "out of memory");
				return;
			}
			c->in = ni;
			c->incap = ncap;
		}
		n = recv(c->fd, c->in + c->inlen, c->incap - c->inlen - 1, 0);
		if (n == -1) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			/* A reset after a complete answer still counts as the answer. */
			if (errno == ECONNRESET && c->inlen > 0) {
				c->in[c->inlen] = '\0';
				conn_done(c, true, NULL);
				return;
			}
			snprintf(errbuf, sizeof(errbuf), "read %s: %s", c->path, strerror(errno));
			conn_done(c, false, errbuf);
			return;
		}
		if (n == 0) {
			if (c->in != NULL)
				c->in[c->inlen] = '\0';
			conn_done(c, true, NULL);
			return;
		}
		c->inlen += (size_t)n;
		c->in[c->inlen] = '\0';
		if (c->inlen >= RT_MAX_ANSWER)
			conn_done(c, false, "answer too large");
	}
}

static void
conn_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct rt_client *c = w->data;
	char err[256];

	if (c->pending_err[0] != '\0') {
		memcpy(err, c->pending_err, sizeof(err));
		c->pending_err[0] = '\0';
		conn_done(c, false, err);
		return;
	}
	conn_done(c, false, "timeout waiting for HAProxy's runtime API");
}

/* rt_send never calls back synchronously: a failure is delivered from the loop. */
static void
send_fail(struct rt_client *c, const char *err)
{
	snprintf(c->pending_err, sizeof(c->pending_err), "%s", err);
	if (c->fd != -1) {
		close(c->fd);
		c->fd = -1;
	}
	ev_io_stop(c->loop, &c->io);
	ev_timer_stop(c->loop, &c->tm);
	ev_timer_set(&c->tm, 0.0, 0.0);
	ev_timer_start(c->loop, &c->tm);
}

/* Sends one command for the head operation; its answer goes to op_answer. */
static void
rt_send(struct rt_client *c, const char *cmd, const char *payload, size_t plen)
{
	struct sockaddr_un sun;
	size_t clen = strlen(cmd), need;
	char errbuf[256];

	need = clen + 1 + (payload != NULL ? 3 + plen + 1 : 0);
	if ((c->out = malloc(need + 1)) == NULL) {
		c->outlen = 0;
		send_fail(c, "out of memory");
		return;
	}
	memcpy(c->out, cmd, clen);
	c->outlen = clen;
	if (payload != NULL) {
		memcpy(c->out + c->outlen, " <<\n", 4);
		c->outlen += 4;
		memcpy(c->out + c->outlen, payload, plen);
		c->outlen += plen;
		c->out[c->outlen++] = '\n';	/* the blank line that ends the payload */
	} else
		c->out[c->outlen++] = '\n';
	c->outoff = 0;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(c->path) >= sizeof(sun.sun_path)) {
		send_fail(c, "runtime socket path too long");
		return;
	}
	memcpy(sun.sun_path, c->path, strlen(c->path) + 1);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd == -1) {
		snprintf(errbuf, sizeof(errbuf), "socket: %s", strerror(errno));
		send_fail(c, errbuf);
		return;
	}
	c->connecting = false;
	if (connect(c->fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		if (errno != EINPROGRESS && errno != EAGAIN) {
			snprintf(errbuf, sizeof(errbuf), "connect %s: %s", c->path, strerror(errno));
			send_fail(c, errbuf);
			return;
		}
		c->connecting = true;
	}
	ev_io_set(&c->io, c->fd, EV_WRITE);
	ev_io_start(c->loop, &c->io);
	ev_timer_set(&c->tm, c->timeout, 0.0);
	ev_timer_start(c->loop, &c->tm);
}

/* ---------------------------------------------------------------- operations */

static void
first_line(const char *text, size_t len, char *out, size_t outlen)
{
	size_t n = 0;

	while (len > 0 && (*text == '\n' || *text == ' ')) {
		text++;
		len--;
	}
	for (size_t i = 0; i < len && n + 1 < outlen; i++) {
		if (text[i] == '\n')
			break;
		out[n++] = isprint((unsigned char)text[i]) ? text[i] : '?';
	}
	out[n] = '\0';
	if (n == 0)
		snprintf(out, outlen, "(empty answer)");
}

static void
op_start(struct rt_client *c, struct rt_op *op)
{
	char cmd[2300];

	switch (op->kind) {
	case RT_RAW:
		rt_send(c, op->cmd, op->payload, op->payload_len);
		break;
	case RT_CERT:
		op->step = ST_CERT_SET;
		snprintf(cmd, sizeof(cmd), "set ssl cert %s", op->file);
		rt_send(c, cmd, op->payload, op->payload_len);
		break;
	case RT_SERIAL:
		snprintf(cmd, sizeof(cmd), "show ssl cert %s", op->file);
		rt_send(c, cmd, NULL, 0);
		break;
	case RT_SERVER:
		if (op->ready) {
			op->step = ST_SRV_ADDR;
			snprintf(cmd, sizeof(cmd), "set server %s/%s addr %s port %d", op->backend, op->server,
			    op->addr, op->port);
		} else {
			op->step = ST_SRV_STATE;
			snprintf(cmd, sizeof(cmd), "set server %s/%s state maint", op->backend, op->server);
		}
		rt_send(c, cmd, NULL, 0);
		break;
	case RT_SERVERS:
		snprintf(cmd, sizeof(cmd), "show servers state %s", op->backend);
		rt_send(c, cmd, NULL, 0);
		break;
	}
}

static void
op_done(struct rt_client *c, struct rt_op *op, int rc, const char *err)
{
	if (op->done_cb != NULL)
		op->done_cb(op->arg, rc, rc == 0 ? "" : err);
	if (!c->dead)
		op_finish(c);
}

static void
cert_fail(struct rt_client *c, struct rt_op *op, const char *what, const char *detail)
{
	char cmd[1200];

	snprintf(op->failure, sizeof(op->failure), "%s %s: %s", what, op->file, detail);
	op->step = ST_CERT_ABORT;
	snprintf(cmd, sizeof(cmd), "abort ssl cert %s", op->file);
	rt_send(c, cmd, NULL, 0);
}

static void
op_cert(struct rt_client *c, struct rt_op *op, bool ok, const char *text, size_t len, const char *err)
{
	char line[300], cmd[1200], got[128], e2[256];
	const char *st;
	size_t stlen;

	if (op->step == ST_CERT_ABORT) {
		/* Whatever abort said, the update failed with the error kept. */
		op_done(c, op, -1, op->failure);
		return;
	}
	if (!ok) {
		if (op->step == ST_CERT_SHOW) {
			snprintf(op->failure, sizeof(op->failure), "show ssl cert %s: %s", op->file, err);
			op_done(c, op, -1, op->failure);
		} else
			cert_fail(c, op, "set ssl cert", err);
		return;
	}
	first_line(text, len, line, sizeof(line));
	switch (op->step) {
	case ST_CERT_SET:
		if (!has_ci(text, len, "Transaction created") && !has_ci(text, len, "Transaction updated")) {
			cert_fail(c, op, "set ssl cert", line);
			return;
		}
		op->step = ST_CERT_COMMIT;
		snprintf(cmd, sizeof(cmd), "commit ssl cert %s", op->file);
		rt_send(c, cmd, NULL, 0);
		return;
	case ST_CERT_COMMIT:
		if (!rt_answer_success(text, len)) {
			/* The last line says why ("Failed!" alone says nothing). */
			cert_fail(c, op, "commit ssl cert", line);
			return;
		}
		op->step = ST_CERT_SHOW;
		snprintf(cmd, sizeof(cmd), "show ssl cert %s", op->file);
		rt_send(c, cmd, NULL, 0);
		return;
	case ST_CERT_SHOW:
		if (rt_parse_serial(text, len, got, sizeof(got), e2, sizeof(e2)) == -1) {
			snprintf(op->failure, sizeof(op->failure), "show ssl cert %s: %s (%s)", op->file, e2, line);
			op_done(c, op, -1, op->failure);
			return;
		}
		if (strcmp(got, op->serial) != 0) {
			snprintf(op->failure, sizeof(op->failure),
			    "show ssl cert %s: serial in use is %s, expected %s", op->file, got, op->serial);
			op_done(c, op, -1, op->failure);
			return;
		}
		/* 2.6.12 after a ca-file commit: new serial shown but "Unused" and the old one served. */
		if (find_line_value(text, len, "Status:", &st, &stlen) == 0 &&
		    !(stlen == 4 && memcmp(st, "Used", 4) == 0)) {
			snprintf(op->failure, sizeof(op->failure),
			    "show ssl cert %s: certificate committed but not in use (Status: %.*s)", op->file,
			    (int)(stlen > 40 ? 40 : stlen), st);
			op_done(c, op, -1, op->failure);
			return;
		}
		op_done(c, op, 0, "");
		return;
	default:
		op_done(c, op, -1, "internal error: bad certificate step");
	}
}

static void
op_server(struct rt_client *c, struct rt_op *op, bool ok, const char *text, size_t len, const char *err)
{
	char line[300], cmd[1200], msg[2048], e2[256];
	struct rt_server *srv;
	size_t n, i;

	if (!ok) {
		snprintf(msg, sizeof(msg), "server %s/%s: %s", op->backend, op->server, err);
		op_done(c, op, -1, msg);
		return;
	}
	first_line(text, len, line, sizeof(line));
	switch (op->step) {
	case ST_SRV_ADDR:
	case ST_SRV_STATE:
		if (answer_is_error(text, len)) {
			snprintf(msg, sizeof(msg), "set server %s/%s: %s", op->backend, op->server, line);
			op_done(c, op, -1, msg);
			return;
		}
		if (op->step == ST_SRV_ADDR) {
			op->step = ST_SRV_STATE;
			snprintf(cmd, sizeof(cmd), "set server %s/%s state ready", op->backend, op->server);
		} else {
			op->step = ST_SRV_READ;
			snprintf(cmd, sizeof(cmd), "show servers state %s", op->backend);
		}
		rt_send(c, cmd, NULL, 0);
		return;
	case ST_SRV_READ:
		if (rt_parse_servers_state(text, len, op->backend, &srv, &n, e2, sizeof(e2)) == -1) {
			snprintf(msg, sizeof(msg), "server %s/%s: read back: %s", op->backend, op->server, e2);
			op_done(c, op, -1, msg);
			return;
		}
		for (i = 0; i < n; i++)
			if (strcmp(srv[i].name, op->server) == 0)
				break;
		if (i == n)
			snprintf(msg, sizeof(msg), "server %s/%s: not in show servers state", op->backend, op->server);
		else if (op->ready && (srv[i].maint || !addr_equal(srv[i].addr, op->addr) || srv[i].port != op->port))
			snprintf(msg, sizeof(msg), "server %s/%s: read back %s:%d%s, expected %s:%d ready", op->backend,
			    op->server, srv[i].addr, srv[i].port, srv[i].maint ? " in maintenance" : "", op->addr,
			    op->port);
		else if (!op->ready && !srv[i].maint)
			snprintf(msg, sizeof(msg), "server %s/%s: read back not in maintenance", op->backend, op->server);
		else
			msg[0] = '\0';
		free(srv);
		op_done(c, op, msg[0] == '\0' ? 0 : -1, msg);
		return;
	default:
		op_done(c, op, -1, "internal error: bad server step");
	}
}

static void
op_answer(struct rt_client *c, bool ok, const char *text, size_t len, const char *err)
{
	struct rt_op *op = c->head;
	char got[128], e2[256], msg[2048];
	struct rt_server *srv;
	size_t n;

	switch (op->kind) {
	case RT_RAW:
		op->answer_cb(op->arg, ok, text, len, ok ? NULL : err);
		if (!c->dead)
			op_finish(c);
		return;
	case RT_CERT:
		op_cert(c, op, ok, text, len, err);
		return;
	case RT_SERVER:
		op_server(c, op, ok, text, len, err);
		return;
	case RT_SERIAL:
		if (!ok)
			snprintf(msg, sizeof(msg), "show ssl cert %s: %s", op->file, err);
		else if (rt_parse_serial(text, len, got, sizeof(got), e2, sizeof(e2)) == -1) {
			char line[300];

			first_line(text, len, line, sizeof(line));
			snprintf(msg, sizeof(msg), "show ssl cert %s: %s (%s)", op->file, e2, line);
			ok = false;
		}
		op->serial_cb(op->arg, ok ? 0 : -1, ok ? got : NULL, ok ? "" : msg);
		if (!c->dead)
			op_finish(c);
		return;
	case RT_SERVERS:
		if (!ok) {
			snprintf(msg, sizeof(msg), "show servers state %s: %s", op->backend, err);
			op->servers_cb(op->arg, -1, NULL, 0, msg);
		} else if (rt_parse_servers_state(text, len, op->backend, &srv, &n, e2, sizeof(e2)) == -1) {
			snprintf(msg, sizeof(msg), "show servers state %s: %s", op->backend, e2);
			op->servers_cb(op->arg, -1, NULL, 0, msg);
		} else {
			op->servers_cb(op->arg, 0, srv, n, "");
			free(srv);
		}
		if (!c->dead)
			op_finish(c);
		return;
	}
}

static void
rt_next(struct rt_client *c)
{
	if (c->head != NULL && c->fd == -1 && c->out == NULL)
		op_start(c, c->head);
}

static void
kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct rt_client *c = w->data;

	ev_timer_stop(loop, w);
	rt_next(c);
}

static void
enqueue(struct rt_client *c, struct rt_op *op)
{
	bool was_idle = c->head == NULL;

	if (c->tail != NULL)
		c->tail->next = op;
	else
		c->head = op;
	c->tail = op;
	c->nops++;
	if (was_idle && !ev_is_active(&c->kick)) {
		ev_timer_set(&c->kick, 0.0, 0.0);
		ev_timer_start(c->loop, &c->kick);
	}
}

/* ---------------------------------------------------------------- public API */

struct rt_client *
rt_new(struct ev_loop *loop, const char *sock_path, double timeout, char *err, size_t errlen)
{
	struct rt_client *c;

	if (sock_path == NULL || *sock_path == '\0' || strlen(sock_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		snprintf(err, errlen, "runtime socket path missing or too long");
		return NULL;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL || (c->path = strdup(sock_path)) == NULL) {
		free(c);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->loop = loop;
	c->timeout = timeout > 0 ? timeout : RT_DEFAULT_TIMEOUT;
	c->fd = -1;
	ev_io_init(&c->io, conn_io_cb, 0, EV_WRITE);
	c->io.data = c;
	ev_timer_init(&c->tm, conn_timeout_cb, 0.0, 0.0);
	c->tm.data = c;
	ev_timer_init(&c->kick, kick_cb, 0.0, 0.0);
	c->kick.data = c;
	return c;
}

void
rt_free(struct rt_client *c)
{
	struct rt_op *op, *next;

	if (c == NULL)
		return;
	if (c->in_cb) {
		c->dead = true;
		return;
	}
	conn_close(c);
	ev_timer_stop(c->loop, &c->kick);
	for (op = c->head; op != NULL; op = next) {
		next = op->next;
		op_free(op);
	}
	free(c->path);
	free(c);
}

size_t
rt_pending(const struct rt_client *c)
{
	return c->nops;
}

static struct rt_op *
op_new(enum rt_kind kind, void *arg, char *err, size_t errlen)
{
	struct rt_op *op = calloc(1, sizeof(*op));

	if (op == NULL)
		snprintf(err, errlen, "out of memory");
	else {
		op->kind = kind;
		op->step = ST_ONE;
		op->arg = arg;
	}
	return op;
}

/* Puts a copy of str in *dst (a field of op) and queues op; on out of memory frees op and fails. */
static int
op_queue_dup(struct rt_client *c, struct rt_op *op, char **dst, const char *str, char *err, size_t errlen)
{
	if ((*dst = strdup(str)) == NULL) {
		snprintf(err, errlen, "out of memory");
		op_free(op);
		return -1;
	}
	enqueue(c, op);
	return 0;
}

int
rt_command(struct rt_client *c, const char *cmd, const char *payload, size_t payload_len,
    rt_answer_cb *cb, void *arg, char *err, size_t errlen)
{
	struct rt_op *op;

	if (cmd == NULL || *cmd == '\0' || strpbrk(cmd, "\r\n") != NULL || strlen(cmd) > 2048 || cb == NULL) {
		snprintf(err, errlen, "runtime command empty, too long or with a line break");
		return -1;
	}
	if ((op = op_new(RT_RAW, arg, err, errlen)) == NULL)
		return -1;
	op->answer_cb = cb;
	if ((op->cmd = strdup(cmd)) == NULL) {
		snprintf(err, errlen, "out of memory");
		op_free(op);
		return -1;
	}
	if (payload != NULL &&
	    rt_pem_strip_blank(payload, payload_len, &op->payload, &op->payload_len, err, errlen) == -1) {
		op_free(op);
		return -1;
	}
	enqueue(c, op);
	return 0;
}

int
rt_cert_update(struct rt_client *c, const char *file, const char *pem, size_t pem_len,
    rt_done_cb *cb, void *arg, char *err, size_t errlen)
{
	struct rt_op *op;

	if (!word_ok(file)) {
		snprintf(err, errlen, "certificate file name empty or with spaces: HAProxy's CLI cannot name it");
		return -1;
	}
	if (cb == NULL || pem == NULL) {
		snprintf(err, errlen, "rt_cert_update: missing argument");
		return -1;
	}
	if ((op = op_new(RT_CERT, arg, err, errlen)) == NULL)
		return -1;
	op->done_cb = cb;
	if (rt_pem_serial(pem, pem_len, op->serial, sizeof(op->serial), err, errlen) == -1 ||
	    rt_pem_strip_blank(pem, pem_len, &op->payload, &op->payload_len, err, errlen) == -1) {
		op_free(op);
		return -1;
	}
	return op_queue_dup(c, op, &op->file, file, err, errlen);
}

int
rt_cert_serial(struct rt_client *c, const char *file, rt_serial_cb *cb, void *arg, char *err, size_t errlen)
{
	struct rt_op *op;

	if (!word_ok(file) || cb == NULL) {
		snprintf(err, errlen, "rt_cert_serial: bad file name or no callback");
		return -1;
	}
	if ((op = op_new(RT_SERIAL, arg, err, errlen)) == NULL)
		return -1;
	op->serial_cb = cb;
	return op_queue_dup(c, op, &op->file, file, err, errlen);
}

int
rt_server_set(struct rt_client *c, const char *backend, const char *server, const char *addr,
    int port, bool ready, rt_done_cb *cb, void *arg, char *err, size_t errlen)
{
	struct rt_op *op;
	unsigned char tmp[16];

	if (!word_ok(backend) || !word_ok(server) || strchr(backend, '/') != NULL || cb == NULL) {
		snprintf(err, errlen, "rt_server_set: bad backend or server name");
		return -1;
	}
	if (ready) {
		if (addr == NULL || strlen(addr) >= 64 ||
		    (inet_pton(AF_INET, addr, tmp) != 1 && inet_pton(AF_INET6, addr, tmp) != 1)) {
			snprintf(err, errlen, "server %s/%s: %s is not an IP address", backend, server,
			    addr != NULL ? addr : "(null)");
			return -1;
		}
		if (port < 1 || port > 65535) {
			snprintf(err, errlen, "server %s/%s: %d is not a port", backend, server, port);
			return -1;
		}
	}
	if ((op = op_new(RT_SERVER, arg, err, errlen)) == NULL)
		return -1;
	op->done_cb = cb;
	op->ready = ready;
	op->port = port;
	if (ready)
		snprintf(op->addr, sizeof(op->addr), "%s", addr);
	if ((op->backend = strdup(backend)) == NULL || (op->server = strdup(server)) == NULL) {
		snprintf(err, errlen, "out of memory");
		op_free(op);
		return -1;
	}
	enqueue(c, op);
	return 0;
}

int
rt_servers_read(struct rt_client *c, const char *backend, rt_servers_cb *cb, void *arg, char *err, size_t errlen)
{
	struct rt_op *op;

	if (!word_ok(backend) || cb == NULL) {
		snprintf(err, errlen, "rt_servers_read: bad backend name or no callback");
		return -1;
	}
	if ((op = op_new(RT_SERVERS, arg, err, errlen)) == NULL)
		return -1;
	op->servers_cb = cb;
	return op_queue_dup(c, op, &op->backend, backend, err, errlen);
}
