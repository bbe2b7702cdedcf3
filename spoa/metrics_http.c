/*
 * metrics_http.c - see metrics_http.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "metrics.h"
#include "metrics_http.h"

#define MH_REQ_MAX	4096
#define MH_MAX_CONNS	64
#define MH_IDLE		10.0
#define MH_BODY_MAX	(64 * 1024)

struct mh_conn {
	struct metrics_http	*m;
	struct mh_conn		*next;
	struct mh_conn		*prev;
	ev_io			 io;
	ev_timer		 timer;
	int			 fd;
	size_t			 inlen;
	char			 in[MH_REQ_MAX];
	char			*out;
	size_t			 outlen;
	size_t			 outoff;
};

struct metrics_http {
	struct ev_loop	*loop;
	int		 fd;
	ev_io		 accept_io;
	struct mh_conn	*conns;
	size_t		 nconns;
};

int
hostport_split(const char *addr, char *host, size_t hostlen, char *port, size_t portlen,
    char *err, size_t errlen)
{
	const char *colon, *h;
	size_t hl;

	if (addr == NULL || *addr == '\0') {
		snprintf(err, errlen, "empty address");
		return -1;
	}
	if (addr[0] == '[') {
		const char *rb = strchr(addr, ']');

		if (rb == NULL || rb[1] != ':') {
			snprintf(err, errlen, "bad address \"%s\": want [v6]:port", addr);
			return -1;
		}
		h = addr + 1;
		hl = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(addr, ':');
		if (colon == NULL || memchr(addr, ':', (size_t)(colon - addr)) != NULL) {
			snprintf(err, errlen, "bad address \"%s\": want host:port", addr);
			return -1;
		}
		h = addr;
		hl = (size_t)(colon - addr);
	}
	if (hl == 0 || hl >= hostlen || strlen(colon + 1) == 0 || strlen(colon + 1) >= portlen ||
	    strspn(colon + 1, "0123456789") != strlen(colon + 1)) {
		snprintf(err, errlen, "bad address \"%s\": want host:port", addr);
		return -1;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	snprintf(port, portlen, "%s", colon + 1);
	if (strtol(port, NULL, 10) > 65535) {
		snprintf(err, errlen, "bad port in \"%s\"", addr);
		return -1;
	}
	return 0;
}

static void
conn_close(struct mh_conn *c)
{
	struct metrics_http *m = c->m;

	ev_io_stop(m->loop, &c->io);
	ev_timer_stop(m->loop, &c->timer);
	close(c->fd);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		m->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	m->nconns--;
	free(c->out);
	free(c);
	if (m->nconns < MH_MAX_CONNS)
		ev_io_start(m->loop, &m->accept_io);
}

static void
conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct mh_conn *c = w->data;
	ssize_t n;

	while (c->outoff < c->outlen) {
		n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EINTR)
				continue;
			conn_close(c);
			return;
		}
		c->outoff += (size_t)n;
	}
	shutdown(c->fd, SHUT_WR);
	conn_close(c);
}

static void
respond(struct mh_conn *c, int status, const char *text, const char *ctype, const char *body, size_t blen)
{
	char head[256];
	int hn;

	hn = snprintf(head, sizeof(head), "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
	    "Connection: close\r\n\r\n", status, text, ctype, blen);
	if (hn < 0 || (size_t)hn >= sizeof(head) || (c->out = malloc((size_t)hn + blen)) == NULL) {
		conn_close(c);
		return;
	}
	memcpy(c->out, head, (size_t)hn);
	if (blen > 0)
		memcpy(c->out + hn, body, blen);
	c->outlen = (size_t)hn + blen;
	ev_io_stop(c->m->loop, &c->io);
	ev_io_set(&c->io, c->fd, EV_WRITE);
	ev_set_cb(&c->io, conn_write_cb);
	ev_io_start(c->m->loop, &c->io);
}

static void
respond_text(struct mh_conn *c, int status, const char *text)
{
	char body[64];
	int n = snprintf(body, sizeof(body), "%d %s\n", status, text);

	respond(c, status, text, "text/plain; charset=utf-8", body, (size_t)n);
}

/* The request head is complete in c->in: route it. */
static void
handle(struct mh_conn *c)
{
	const char *p = c->in, *sp1, *sp2, *eol;
	char *body;
	size_t plen;
	int n;

	eol = memchr(p, '\n', c->inlen);
	sp1 = memchr(p, ' ', (size_t)(eol - p));
	if (sp1 == NULL) {
		respond_text(c, 400, "Bad Request");
		return;
	}
	sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
	plen = (size_t)((sp2 != NULL ? sp2 : eol) - (sp1 + 1));
	if (plen > 0 && sp2 == NULL && sp1[plen] == '\r')
		plen--;
	if (!((size_t)(sp1 - p) == 3 && memcmp(p, "GET", 3) == 0) &&
	    !((size_t)(sp1 - p) == 4 && memcmp(p, "HEAD", 4) == 0)) {
		respond_text(c, 405, "Method Not Allowed");
		return;
	}
	if (!((plen == 8 && memcmp(sp1 + 1, "/metrics", 8) == 0) ||
	    (plen > 8 && memcmp(sp1 + 1, "/metrics?", 9) == 0))) {
		respond_text(c, 404, "Not Found");
		return;
	}
	if ((body = malloc(MH_BODY_MAX)) == NULL) {
		conn_close(c);
		return;
	}
	n = metrics_render(body, MH_BODY_MAX);
	if (n < 0) {
		free(body);
		respond_text(c, 500, "Internal Server Error");
		return;
	}
	respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body,
	    memcmp(p, "HEAD", 4) == 0 ? 0 : (size_t)n);
	free(body);
}

static void
conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct mh_conn *c = w->data;
	ssize_t n;

	n = recv(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen, 0);
	if (n == -1) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			conn_close(c);
		return;
	}
	if (n == 0) {
		conn_close(c);
		return;
	}
	c->inlen += (size_t)n;
	if (memmem(c->in, c->inlen, "\r\n\r\n", 4) != NULL || memmem(c->in, c->inlen, "\n\n", 2) != NULL) {
		handle(c);
		return;
	}
	if (c->inlen == sizeof(c->in))
		respond_text(c, 431, "Request Header Fields Too Large");
}

static void
conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	conn_close(w->data);
}

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct metrics_http *m = w->data;
	struct mh_conn *c;
	int fd;

	while (m->nconns < MH_MAX_CONNS) {
		fd = accept4(m->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1)
			return;	/* EAGAIN, or a transient error: try again on the next event */
		if ((c = calloc(1, sizeof(*c))) == NULL) {
			close(fd);
			return;
		}
		c->m = m;
		c->fd = fd;
		c->next = m->conns;
		if (m->conns != NULL)
			m->conns->prev = c;
		m->conns = c;
		m->nconns++;
		ev_io_init(&c->io, conn_read_cb, fd, EV_READ);
		c->io.data = c;
		ev_io_start(loop, &c->io);
		ev_timer_init(&c->timer, conn_timer_cb, MH_IDLE, 0);
		c->timer.data = c;
		ev_timer_start(loop, &c->timer);
	}
	/* Full: stop accepting until a connection ends (conn_close restarts us). */
	ev_io_stop(loop, &m->accept_io);
}

struct metrics_http *
metrics_http_new(struct ev_loop *loop, const char *addr, char *err, size_t errlen)
{
	struct addrinfo hints, *res = NULL;
	struct metrics_http *m;
	char host[256], port[16];
	int fd = -1, one = 1, rc;

	if (hostport_split(addr, host, sizeof(host), port, sizeof(port), err, errlen) == -1)
		return NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
		snprintf(err, errlen, "metrics address %s: %s", addr, gai_strerror(rc));
		return NULL;
	}
	fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) == -1 || listen(fd, 64) == -1) {
		snprintf(err, errlen, "metrics address %s: %s", addr, strerror(errno));
		if (fd != -1)
			close(fd);
		freeaddrinfo(res);
		return NULL;
	}
	freeaddrinfo(res);
	if ((m = calloc(1, sizeof(*m))) == NULL) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	m->loop = loop;
	m->fd = fd;
	ev_io_init(&m->accept_io, accept_cb, fd, EV_READ);
	m->accept_io.data = m;
	ev_io_start(loop, &m->accept_io);
	return m;
}

void
metrics_http_free(struct metrics_http *m)
{
	if (m == NULL)
		return;
	while (m->conns != NULL)
		conn_close(m->conns);
	ev_io_stop(m->loop, &m->accept_io);
	close(m->fd);
	free(m);
}
