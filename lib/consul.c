/*
 * consul.c - the Consul agent HTTP client: libcurl multi on a libev loop.
 *
 * The glue is curl's evhiperfifo.c pattern: curl tells us through CURLMOPT_SOCKETFUNCTION which sockets
 * to watch (one ev_io per socket, found again through curl_multi_assign) and through
 * CURLMOPT_TIMERFUNCTION when to call it back (one ev_timer). Its slips are fixed here: the timeout is
 * timeout_ms / 1000.0, the flags given to curl_multi_socket_action are CURL_CSELECT_*, a watcher is never
 * touched after curl_multi_socket_action (curl may have removed and freed it), and an error fails one
 * request rather than the process.
 *
 * Callbacks run only from check_multi_info(), i.e. from a loop callback, never from inside an API call.
 * A callback may cancel requests, stop watches or free the client: completion state is unlinked before
 * the callback runs, and the client's destruction is deferred until the dispatch loop unwinds.
 */
#include <sys/queue.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <ev.h>

#include "buf.h"
#include "consul.h"

#define CONNECT_TIMEOUT_MS	5000L
#define HDR_VALUE_MAX		128	/* X-Consul-ContentHash is 16 hex digits */
#define QUICK_ANSWER		0.05	/* an unchanged answer faster than this is throttled */
#define BLOCKING_MARGIN		10.0	/* seconds on top of wait + wait/16 for a blocking GET */
#define NONBLOCKING_TIMEOUT	60.0

struct consul_sock {
	ev_io			 io;
	curl_socket_t		 fd;
	struct consul_client	*c;
	LIST_ENTRY(consul_sock)	 entry;
};

/*
 * The request headers ("Expect:", X-Consul-Token). CURLOPT_HTTPHEADER does not copy the list, so each
 * request holds a reference to the one it was started with: a token swapped meanwhile frees the old list
 * only when the last request using it is done.
 */
struct consul_hdrs {
	struct curl_slist	*list;
	unsigned		 refs;
};

struct consul_req {
	struct consul_client	*c;
	CURL			*easy;
	struct consul_hdrs	*hdrs;
	struct buf		 body;
	uint64_t		 index;
	char			 hash[HDR_VALUE_MAX];
	char			 cache[HDR_VALUE_MAX];
	bool			 too_big;
	bool			 in_cb;
	double			 start;
	consul_cb		*cb;
	void			*arg;
	char			 errbuf[CURL_ERROR_SIZE];
	TAILQ_ENTRY(consul_req)	 entry;
};

struct consul_watch {
	struct consul_client	*c;		/* NULL once unlinked by consul_client_free */
	char			*path;
	enum consul_watch_kind	 kind;
	char			*wait;
	double			 timeout;
	double			 poll_interval;
	double			 min_backoff;
	double			 max_backoff;
	consul_cb		*cb;
	void			*arg;
	struct consul_req	*req;
	ev_timer		 timer;
	uint64_t		 index;			/* index= of the next request */
	char			 hash[HDR_VALUE_MAX];	/* hash= of the next request */
	bool			 delivered;		/* a 2xx was delivered since start/refresh */
	uint64_t		 last_index;
	char			 last_hash[HDR_VALUE_MAX];
	uint64_t		 last_fp;		/* poll mode: fingerprint of the last body */
	unsigned		 failures;
	unsigned		 quick;
	bool			 in_cb;
	bool			 stopped;
	bool			 refresh;
	TAILQ_ENTRY(consul_watch) entry;
};

struct consul_client {
	struct ev_loop		*loop;
	CURLM			*multi;
	ev_timer		 timer;
	char			*base_url;
	char			*unix_path;
	char			*cacert;
	char			*capath;
	char			*client_cert;
	char			*client_key;
	bool			 ssl_verify;
	size_t			 max_body;
	struct consul_hdrs	*hdrs;		/* what new requests send */
	struct curl_slist	*connect_to;
	int			 dispatching;
	bool			 free_pending;
	TAILQ_HEAD(, consul_req) reqs;
	TAILQ_HEAD(, consul_watch) watches;
	LIST_HEAD(, consul_sock) socks;
};

static void	check_multi_info(struct consul_client *);
static void	client_destroy(struct consul_client *);
static void	watch_issue(struct consul_watch *);

static double
mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- libcurl <-> libev glue ---- */

static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct consul_sock *s = w->data;
	struct consul_client *c = s->c;
	curl_socket_t fd = s->fd;
	int action = 0, running;

	if (revents & EV_READ)
		action |= CURL_CSELECT_IN;
	if (revents & EV_WRITE)
		action |= CURL_CSELECT_OUT;
	if (revents & EV_ERROR)
		action |= CURL_CSELECT_ERR;
	/* s and w may be freed inside this call: use only the copies taken above. */
	curl_multi_socket_action(c->multi, fd, action, &running);
	check_multi_info(c);
}

static int
sock_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *sockp)
{
	struct consul_client *c = userp;
	struct consul_sock *s = sockp;
	int events = 0;

	if (what == CURL_POLL_REMOVE) {
		if (s != NULL) {
			ev_io_stop(c->loop, &s->io);
			LIST_REMOVE(s, entry);
			free(s);
		}
		return 0;
	}
	if (s == NULL) {
		if ((s = calloc(1, sizeof(*s))) == NULL)
			return -1;	/* curl fails the transfer */
		s->fd = fd;
		s->c = c;
		ev_init(&s->io, io_cb);
		s->io.data = s;
		LIST_INSERT_HEAD(&c->socks, s, entry);
		if (curl_multi_assign(c->multi, fd, s) != CURLM_OK) {
			LIST_REMOVE(s, entry);
			free(s);
			return -1;
		}
	}
	if (what & CURL_POLL_IN)
		events |= EV_READ;
	if (what & CURL_POLL_OUT)
		events |= EV_WRITE;
	ev_io_stop(c->loop, &s->io);
	ev_io_set(&s->io, fd, events);
	ev_io_start(c->loop, &s->io);
	return 0;
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct consul_client *c = w->data;
	int running;

	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_multi_info(c);
}

/* curl asks for one timer: -1 removes it; 0 means "as soon as possible", which runs from the loop. */
static int
multi_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct consul_client *c = userp;

	ev_timer_stop(c->loop, &c->timer);
	if (timeout_ms >= 0) {
		ev_timer_set(&c->timer, (double)timeout_ms / 1000.0, 0.);
		ev_timer_start(c->loop, &c->timer);
	}
	return 0;
}

/* ---- requests ---- */

static void
hdrs_unref(struct consul_hdrs *h)
{
	if (h == NULL || --h->refs > 0)
		return;
	curl_slist_free_all(h->list);
	free(h);
}

/* A new header list for token (NULL or "": none), one reference held. NULL with err filled on failure. */
static struct consul_hdrs *
hdrs_new(const char *token, char *err, size_t errlen)
{
	struct consul_hdrs *h;
	struct curl_slist *l;
	struct buf tok;

	if (token != NULL && strpbrk(token, "\r\n") != NULL) {
		snprintf(err, errlen, "the Consul token holds a line break");
		return NULL;
	}
	if ((h = calloc(1, sizeof(*h))) == NULL)
		goto oom;
	h->refs = 1;
	/* "Expect:" off: a small POST must not wait a second for "100 Continue". */
	if ((h->list = curl_slist_append(NULL, "Expect:")) == NULL)
		goto oom;
	if (token != NULL && *token != '\0') {
		buf_init(&tok, 64 * 1024);
		if (buf_printf(&tok, "X-Consul-Token: %s", token) == -1) {
			buf_free(&tok);
			goto oom;
		}
		l = curl_slist_append(h->list, tok.data);
		buf_free(&tok);
		if (l == NULL)
			goto oom;
		h->list = l;
	}
	return h;
oom:
	hdrs_unref(h);
	snprintf(err, errlen, "out of memory");
	return NULL;
}

static void
req_free(struct consul_req *req)
{
	if (req->easy != NULL)
		curl_easy_cleanup(req->easy);
	hdrs_unref(req->hdrs);
	buf_free(&req->body);
	free(req);
}

/* Parses a decimal uint64 that makes up all of s[0..n). 0 on success. */
static int
parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (n == 0 || n > 20)
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		if (v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return 0;
}

/* If the header line data[0..len) is "name: value", points *val at the trimmed value. */
static bool
header_is(const char *data, size_t len, const char *name, const char **val, size_t *vlen)
{
	size_t n = strlen(name);
	const char *v, *end;

	if (len <= n || strncasecmp(data, name, n) != 0 || data[n] != ':')
		return false;
	v = data + n + 1;
	end = data + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*val = v;
	*vlen = (size_t)(end - v);
	return true;
}

static void
copy_value(char *dst, size_t dstlen, const char *v, size_t n)
{
	/* A value too long for its slot is dropped rather than truncated: a cut hash would be wrong. */
	if (n >= dstlen || memchr(v, '\0', n) != NULL) {
		dst[0] = '\0';
		return;
	}
	memcpy(dst, v, n);
	dst[n] = '\0';
}

static size_t
header_cb(char *data, size_t size, size_t nitems, void *userp)
{
	struct consul_req *req = userp;
	size_t len = size * nitems, vlen;
	const char *v;
	uint64_t u;

	if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		/* A new response (after a 1xx): forget headers of the previous one. */
		req->index = 0;
		req->hash[0] = '\0';
		req->cache[0] = '\0';
	} else if (header_is(data, len, "X-Consul-Index", &v, &vlen)) {
		if (parse_u64(v, vlen, &u) == 0)
			req->index = u;
	} else if (header_is(data, len, "X-Consul-ContentHash", &v, &vlen)) {
		copy_value(req->hash, sizeof(req->hash), v, vlen);
	} else if (header_is(data, len, "X-Cache", &v, &vlen)) {
		copy_value(req->cache, sizeof(req->cache), v, vlen);
	} else if (header_is(data, len, "Content-Length", &v, &vlen)) {
		/* Refuse a body announced too big before reading any of it. */
		if (parse_u64(v, vlen, &u) == 0 && u > req->body.max) {
			req->too_big = true;
			return 0;
		}
	}
	return len;
}

static size_t
write_cb(char *data, size_t size, size_t nitems, void *userp)
{
	struct consul_req *req = userp;
	size_t len = size * nitems;

	if (buf_append(&req->body, data, len) == -1) {
		if (len > req->body.max - req->body.len)
			req->too_big = true;
		return 0;
	}
	return len;
}

/* Finishes one transfer: unlinks it, calls its callback, frees it. Does not touch c after the callback. */
static void
req_complete(struct consul_req *req, CURLcode result)
{
	struct consul_client *c = req->c;
	struct consul_resp resp;
	long code = 0;

	curl_multi_remove_handle(c->multi, req->easy);
	TAILQ_REMOVE(&c->reqs, req, entry);

	memset(&resp, 0, sizeof(resp));
	resp.elapsed = mono_now() - req->start;
	if (result == CURLE_OK)
		curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &code);
	if (result != CURLE_OK || code == 0) {
		resp.status = 0;
		if (req->too_big)
			snprintf(req->errbuf, sizeof(req->errbuf), "response body exceeds %zu bytes",
			    req->body.max);
		else if (req->errbuf[0] == '\0')
			snprintf(req->errbuf, sizeof(req->errbuf), "%s", curl_easy_strerror(result));
		resp.error = req->errbuf;
		resp.body = "";
		resp.len = 0;
	} else {
		resp.status = (int)code;
		resp.body = buf_str(&req->body);
		resp.len = req->body.len;
		resp.index = req->index;
		resp.content_hash = req->hash[0] != '\0' ? req->hash : NULL;
		resp.cache = req->cache[0] != '\0' ? req->cache : NULL;
	}
	req->in_cb = true;
	req->cb(req->arg, &resp);
	req_free(req);
}

static void
check_multi_info(struct consul_client *c)
{
	struct consul_req *req;
	CURLMsg *msg;
	int left;

	c->dispatching++;
	while (!c->free_pending && (msg = curl_multi_info_read(c->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		req = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)(void *)&req);
		if (req == NULL)
			continue;
		req_complete(req, msg->data.result);
	}
	c->dispatching--;
	if (c->dispatching == 0 && c->free_pending)
		client_destroy(c);
}

struct consul_req *
consul_request(struct consul_client *c, const char *method, const char *path, const char *body,
    size_t bodylen, double timeout, consul_cb *cb, void *arg)
{
	struct consul_req *req;
	struct buf url;
	CURL *e;
	CURLcode rc = CURLE_OK;

	if (c == NULL || c->free_pending || method == NULL || path == NULL || cb == NULL)
		return NULL;
	if ((req = calloc(1, sizeof(*req))) == NULL)
		return NULL;
	req->c = c;
	req->cb = cb;
	req->arg = arg;
	buf_init(&req->body, c->max_body);
	buf_init(&url, 64 * 1024);
	if (buf_printf(&url, "%s%s%s", c->base_url, path[0] == '/' ? "" : "/", path) == -1 ||
	    (e = req->easy = curl_easy_init()) == NULL) {
		buf_free(&url);
		req_free(req);
		return NULL;
	}
	/* curl copies every string option except POSTFIELDS, which we do not use. */
	rc |= curl_easy_setopt(e, CURLOPT_URL, url.data);
	buf_free(&url);
	rc |= curl_easy_setopt(e, CURLOPT_PRIVATE, req);
	rc |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	rc |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	rc |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->errbuf);
	rc |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	rc |= curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
	rc |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	rc |= curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
	req->hdrs = c->hdrs;
	req->hdrs->refs++;
	rc |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->hdrs->list);
	rc |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	rc |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
	    timeout > 0 && timeout * 1000.0 < (double)CONNECT_TIMEOUT_MS ?
	    (long)(timeout * 1000.0) + 1 : CONNECT_TIMEOUT_MS);
	if (timeout > 0)
		rc |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000.0) + 1);
	if (c->unix_path != NULL)
		rc |= curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, c->unix_path);
	if (c->connect_to != NULL)
		rc |= curl_easy_setopt(e, CURLOPT_CONNECT_TO, c->connect_to);
	if (c->cacert != NULL)
		rc |= curl_easy_setopt(e, CURLOPT_CAINFO, c->cacert);
	if (c->capath != NULL)
		rc |= curl_easy_setopt(e, CURLOPT_CAPATH, c->capath);
	if (c->client_cert != NULL)
		rc |= curl_easy_setopt(e, CURLOPT_SSLCERT, c->client_cert);
	if (c->client_key != NULL)
		rc |= curl_easy_setopt(e, CURLOPT_SSLKEY, c->client_key);
	if (!c->ssl_verify) {
		rc |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		rc |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (strcmp(method, "GET") == 0 && body == NULL) {
		rc |= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	} else if (strcmp(method, "HEAD") == 0) {
		rc |= curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	} else {
		if (body != NULL || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
			rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
			    (curl_off_t)(body != NULL ? bodylen : 0));
			rc |= curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body != NULL ? body : "");
		}
		if (strcmp(method, "POST") != 0)
			rc |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	}
	if (rc != CURLE_OK) {
		req_free(req);
		return NULL;
	}
	req->start = mono_now();
	/* Adding only arms curl's timer (run from the loop): no callback can happen in here. */
	if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
		req_free(req);
		return NULL;
	}
	TAILQ_INSERT_TAIL(&c->reqs, req, entry);
	return req;
}

void
consul_cancel(struct consul_req *req)
{
	struct consul_client *c;

	/* A request whose callback is running is freed when the callback returns. */
	if (req == NULL || req->in_cb)
		return;
	c = req->c;
	curl_multi_remove_handle(c->multi, req->easy);
	TAILQ_REMOVE(&c->reqs, req, entry);
	req_free(req);
}

/* ---- client ---- */

static int
dup_opt(char **dst, const char *src)
{
	*dst = NULL;
	if (src == NULL || *src == '\0')
		return 0;
	return (*dst = strdup(src)) == NULL ? -1 : 0;
}

/*
 * CONSUL_TLS_SERVER_NAME: libcurl verifies the certificate against the URL's host name, so the URL
 * carries the server name and CURLOPT_CONNECT_TO sends the connection to the real address.
 */
static int
setup_server_name(struct consul_client *c, const char *name, char *err, size_t errlen)
{
	const char *auth, *end, *host_end, *port;
	struct buf b;
	size_t hostlen, portlen;

	if (strncmp(c->base_url, "https://", 8) != 0 || c->unix_path != NULL)
		return 0;
	if (strpbrk(name, ":/[]@ ") != NULL) {
		snprintf(err, errlen, "invalid TLS server name \"%s\"", name);
		return -1;
	}
	auth = c->base_url + 8;
	end = auth + strcspn(auth, "/?#");
	if (memchr(auth, '@', (size_t)(end - auth)) != NULL) {
		snprintf(err, errlen, "Consul address with user info is not supported");
		return -1;
	}
	if (*auth == '[') {
		host_end = memchr(auth, ']', (size_t)(end - auth));
		if (host_end == NULL) {
			snprintf(err, errlen, "bad IPv6 address in %s", c->base_url);
			return -1;
		}
		host_end++;
	} else {
		host_end = memchr(auth, ':', (size_t)(end - auth));
		if (host_end == NULL)
			host_end = end;
	}
	hostlen = (size_t)(host_end - auth);
	if (host_end < end && *host_end == ':') {
		port = host_end + 1;
		portlen = (size_t)(end - port);
	} else {
		port = "443";
		portlen = 3;
	}
	if (hostlen == 0 || portlen == 0) {
		snprintf(err, errlen, "bad Consul address %s", c->base_url);
		return -1;
	}
	/* "name:port:host:port": connections for name:port go to host:port. */
	buf_init(&b, 4096);
	if (buf_printf(&b, "%s:%.*s:%.*s:%.*s", name, (int)portlen, port, (int)hostlen, auth,
	    (int)portlen, port) == -1 ||
	    (c->connect_to = curl_slist_append(NULL, b.data)) == NULL) {
		buf_free(&b);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	buf_reset(&b);
	if (buf_printf(&b, "https://%s:%.*s%s", name, (int)portlen, port, end) == -1) {
		buf_free(&b);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	free(c->base_url);
	c->base_url = buf_detach(&b, NULL);
	return c->base_url == NULL ? -1 : 0;
}

struct consul_client *
consul_client_new(struct ev_loop *loop, const struct consul_cfg *cfg, char *err, size_t errlen)
{
	struct consul_client *c;
	CURLMcode mrc = CURLM_OK;

	if (cfg->base_url == NULL || *cfg->base_url == '\0') {
		snprintf(err, errlen, "no Consul address configured");
		return NULL;
	}
	if (cfg->token != NULL && strpbrk(cfg->token, "\r\n") != NULL) {
		snprintf(err, errlen, "the Consul token holds a line break");
		return NULL;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "curl_global_init failed");
		return NULL;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		curl_global_cleanup();
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->loop = loop;
	c->ssl_verify = cfg->ssl_verify;
	c->max_body = cfg->max_body != 0 ? cfg->max_body : CONSUL_DEFAULT_MAX_BODY;
	TAILQ_INIT(&c->reqs);
	TAILQ_INIT(&c->watches);
	LIST_INIT(&c->socks);
	ev_init(&c->timer, timer_cb);
	c->timer.data = c;
	if (dup_opt(&c->base_url, cfg->base_url) == -1 || dup_opt(&c->unix_path, cfg->unix_path) == -1 ||
	    dup_opt(&c->cacert, cfg->cacert) == -1 || dup_opt(&c->capath, cfg->capath) == -1 ||
	    dup_opt(&c->client_cert, cfg->client_cert) == -1 ||
	    dup_opt(&c->client_key, cfg->client_key) == -1) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	/* The path given to consul_request starts with '/'. */
	while (strlen(c->base_url) > 8 && c->base_url[strlen(c->base_url) - 1] == '/')
		c->base_url[strlen(c->base_url) - 1] = '\0';
	if (cfg->tls_server_name != NULL && *cfg->tls_server_name != '\0' &&
	    setup_server_name(c, cfg->tls_server_name, err, errlen) == -1)
		goto fail;

	if ((c->hdrs = hdrs_new(cfg->token, err, errlen)) == NULL)
		goto fail;

	if ((c->multi = curl_multi_init()) == NULL)
		goto oom;
	mrc |= curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	mrc |= curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	mrc |= curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, multi_timer_cb);
	mrc |= curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	if (mrc != CURLM_OK) {
		snprintf(err, errlen, "curl_multi_setopt failed");
		goto fail;
	}
	return c;
oom:
	snprintf(err, errlen, "out of memory");
fail:
	client_destroy(c);
	return NULL;
}

int
consul_client_set_token(struct consul_client *c, const char *token, char *err, size_t errlen)
{
	struct consul_hdrs *h;

	if ((h = hdrs_new(token, err, errlen)) == NULL)
		return -1;
	hdrs_unref(c->hdrs);
	c->hdrs = h;
	return 0;
}

int
consul_client_reread_token(struct consul_client *c, struct consul_cfg *cfg, bool *changed, char *err,
    size_t errlen)
{
	int rc;

	if ((rc = consul_cfg_reread_token(cfg, changed, err, errlen)) != 1)
		return rc;
	return consul_client_set_token(c, cfg->token, err, errlen) == -1 ? -1 : 1;
}

static void
watch_free(struct consul_watch *w)
{
	if (w->c != NULL) {
		ev_timer_stop(w->c->loop, &w->timer);
		consul_cancel(w->req);
		TAILQ_REMOVE(&w->c->watches, w, entry);
	}
	free(w->path);
	free(w->wait);
	free(w);
}

/* Cancels everything of c now, so that no callback can follow. */
static void
client_cancel_all(struct consul_client *c)
{
	struct consul_watch *w;
	struct consul_req *req;

	while ((w = TAILQ_FIRST(&c->watches)) != NULL) {
		if (w->in_cb) {
			/* Its callback is on the stack: unlink it; watch_resp_cb frees it. */
			ev_timer_stop(c->loop, &w->timer);
			consul_cancel(w->req);
			w->req = NULL;
			TAILQ_REMOVE(&c->watches, w, entry);
			w->c = NULL;
			w->stopped = true;
		} else
			watch_free(w);
	}
	while ((req = TAILQ_FIRST(&c->reqs)) != NULL)
		consul_cancel(req);
}

static void
client_destroy(struct consul_client *c)
{
	struct consul_sock *s;

	client_cancel_all(c);
	/* Before the loop goes away: curl may still call sock_cb to drop cached connections. */
	if (c->multi != NULL)
		curl_multi_cleanup(c->multi);
	while ((s = LIST_FIRST(&c->socks)) != NULL) {
		ev_io_stop(c->loop, &s->io);
		LIST_REMOVE(s, entry);
		free(s);
	}
	ev_timer_stop(c->loop, &c->timer);
	hdrs_unref(c->hdrs);
	curl_slist_free_all(c->connect_to);
	free(c->base_url);
	free(c->unix_path);
	free(c->cacert);
	free(c->capath);
	free(c->client_cert);
	free(c->client_key);
	free(c);
	curl_global_cleanup();
}

void
consul_client_free(struct consul_client *c)
{
	if (c == NULL)
		return;
	if (c->dispatching > 0) {
		/* Called from a callback: cancel now, free when check_multi_info unwinds. */
		client_cancel_all(c);
		c->free_pending = true;
		return;
	}
	client_destroy(c);
}

/* ---- watches ---- */

/* Go's time.ParseDuration for what a wait= may hold ("5m", "90s", "1m30s", "500ms"). -1 when invalid. */
static int
parse_go_duration(const char *s, double *out)
{
	static const struct {
		const char *unit;
		double secs;
	} units[] = {
		{ "ns", 1e-9 }, { "us", 1e-6 }, { "ms", 1e-3 }, { "s", 1 }, { "m", 60 }, { "h", 3600 },
	};
	double total = 0, v, frac, scale;
	size_t i, n;

	if (s == NULL || *s == '\0')
		return -1;
	if (strcmp(s, "0") == 0) {
		*out = 0;
		return 0;
	}
	while (*s != '\0') {
		if ((*s < '0' || *s > '9') && *s != '.')
			return -1;
		v = 0;
		n = 0;
		while (*s >= '0' && *s <= '9' && n < 12) {
			v = v * 10 + (*s++ - '0');
			n++;
		}
		if (*s == '.') {
			s++;
			for (frac = 0, scale = 0.1; *s >= '0' && *s <= '9'; s++, scale /= 10, n++)
				frac += (*s - '0') * scale;
			v += frac;
		}
		if (n == 0)
			return -1;
		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
			size_t ul = strlen(units[i].unit);

			/* "ms" must not be read as "m" followed by garbage: the longest unit is tried first
			 * by requiring the next char not to be a letter. */
			if (strncmp(s, units[i].unit, ul) == 0 &&
			    !(s[ul] >= 'a' && s[ul] <= 'z')) {
				total += v * units[i].secs;
				s += ul;
				break;
			}
		}
		if (i == sizeof(units) / sizeof(units[0]))
			return -1;
	}
	*out = total;
	return 0;
}

static double
rand01(void)
{
	return (double)arc4random() / 4294967296.0;
}

/* Exponential back-off with full jitter, never below min_backoff. */
static double
backoff_delay(const struct consul_watch *w, unsigned n)
{
	double cap = w->min_backoff;
	unsigned i;

	for (i = 1; i < n && cap < w->max_backoff; i++)
		cap *= 2;
	if (cap > w->max_backoff)
		cap = w->max_backoff;
	cap *= rand01();
	return cap < w->min_backoff ? w->min_backoff : cap;
}

static void
watch_schedule(struct consul_watch *w, double delay)
{
	ev_timer_stop(w->c->loop, &w->timer);
	ev_timer_set(&w->timer, delay, 0.);
	ev_timer_start(w->c->loop, &w->timer);
}

static void
watch_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	watch_issue(t->data);
}

/* 64-bit FNV-1a, to notice a changed body in poll mode without keeping it. */
static uint64_t
fingerprint(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;

	while (n-- > 0) {
		h ^= (unsigned char)*p++;
		h *= 1099511628211ULL;
	}
	return h;
}

static void
watch_resp_cb(void *arg, const struct consul_resp *resp)
{
	struct consul_watch *w = arg;
	bool ok = resp->status >= 200 && resp->status < 300, changed = true;
	const char *hash = resp->content_hash != NULL ? resp->content_hash : "";
	uint64_t fp = 0;
	double delay = 0;

	w->req = NULL;
	if (ok) {
		w->failures = 0;
		switch (w->kind) {
		case CONSUL_WATCH_INDEX:
			changed = !w->delivered || resp->index != w->last_index;
			/* Consul's rules: an index going backwards resets to 0; below 1 is 1. */
			if (resp->index < w->index)
				w->index = 0;
			else
				w->index = resp->index < 1 ? 1 : resp->index;
			w->last_index = resp->index;
			break;
		case CONSUL_WATCH_HASH:
			changed = !w->delivered || strcmp(hash, w->last_hash) != 0;
			copy_value(w->hash, sizeof(w->hash), hash, strlen(hash));
			copy_value(w->last_hash, sizeof(w->last_hash), hash, strlen(hash));
			break;
		case CONSUL_WATCH_POLL:
			fp = fingerprint(resp->body, resp->len);
			changed = !w->delivered || resp->index != w->last_index || fp != w->last_fp;
			w->last_index = resp->index;
			w->last_fp = fp;
			break;
		}
		if (changed)
			w->delivered = true;
	} else
		w->failures++;

	if (!ok || changed) {
		w->in_cb = true;
		w->cb(w->arg, resp);
		w->in_cb = false;
	}
	if (w->stopped) {
		watch_free(w);
		return;
	}
	if (w->refresh) {
		w->refresh = false;
		watch_issue(w);
		return;
	}
	if (!ok)
		delay = backoff_delay(w, w->failures);
	else if (w->kind == CONSUL_WATCH_POLL)
		delay = w->poll_interval;
	else if (!changed && resp->elapsed < QUICK_ANSWER)
		delay = backoff_delay(w, ++w->quick);
	else {
		w->quick = 0;
		watch_issue(w);
		return;
	}
	watch_schedule(w, delay);
}

static void
watch_issue(struct consul_watch *w)
{
	struct buf path;
	const char *sep = strchr(w->path, '?') != NULL ? "&" : "?";
	char enc[3 * HDR_VALUE_MAX];
	double timeout = NONBLOCKING_TIMEOUT;
	int rc = 0;

	ev_timer_stop(w->c->loop, &w->timer);
	buf_init(&path, 64 * 1024);
	rc = buf_append_str(&path, w->path);
	if (w->kind == CONSUL_WATCH_INDEX && w->index > 0) {
		rc |= buf_printf(&path, "%sindex=%" PRIu64 "&wait=%s", sep, w->index, w->wait);
		timeout = w->timeout;
	} else if (w->kind == CONSUL_WATCH_HASH && w->hash[0] != '\0' &&
	    consul_urlencode(w->hash, enc, sizeof(enc)) == 0) {
		rc |= buf_printf(&path, "%shash=%s&wait=%s", sep, enc, w->wait);
		timeout = w->timeout;
	}
	if (rc == 0)
		w->req = consul_request(w->c, "GET", path.data, NULL, 0, timeout, watch_resp_cb, w);
	buf_free(&path);
	if (w->req == NULL) {
		/* Out of memory or curl refused: try again later rather than spin. */
		w->failures++;
		watch_schedule(w, backoff_delay(w, w->failures));
	}
}

struct consul_watch *
consul_watch_start(struct consul_client *c, const char *path, const struct consul_watch_opts *opts,
    consul_cb *cb, void *arg)
{
	struct consul_watch *w;
	double wait_s;
	const char *wait;

	if (c == NULL || c->free_pending || path == NULL || cb == NULL)
		return NULL;
	wait = opts != NULL && opts->wait != NULL ? opts->wait : "5m";
	if (parse_go_duration(wait, &wait_s) == -1 || strpbrk(wait, "&#? ") != NULL)
		return NULL;
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return NULL;
	w->c = c;
	w->kind = opts != NULL ? opts->kind : CONSUL_WATCH_INDEX;
	w->timeout = wait_s + wait_s / 16 + BLOCKING_MARGIN;
	w->poll_interval = opts != NULL && opts->poll_interval > 0 ? opts->poll_interval : 30;
	w->min_backoff = opts != NULL && opts->min_backoff > 0 ? opts->min_backoff : 0.1;
	w->max_backoff = opts != NULL && opts->max_backoff > 0 ? opts->max_backoff : 10;
	if (w->max_backoff < w->min_backoff)
		w->max_backoff = w->min_backoff;
	w->cb = cb;
	w->arg = arg;
	ev_init(&w->timer, watch_timer_cb);
	w->timer.data = w;
	if ((w->path = strdup(path)) == NULL || (w->wait = strdup(wait)) == NULL) {
		free(w->path);
		free(w);
		return NULL;
	}
	TAILQ_INSERT_TAIL(&c->watches, w, entry);
	watch_issue(w);
	return w;
}

void
consul_watch_stop(struct consul_watch *w)
{
	if (w == NULL)
		return;
	if (w->in_cb) {
		w->stopped = true;
		return;
	}
	watch_free(w);
}

void
consul_watch_refresh(struct consul_watch *w)
{
	if (w == NULL || w->stopped || w->c == NULL)
		return;
	w->index = 0;
	w->hash[0] = '\0';
	w->delivered = false;
	w->failures = 0;
	w->quick = 0;
	if (w->in_cb) {
		w->refresh = true;
		return;
	}
	consul_cancel(w->req);
	w->req = NULL;
	watch_issue(w);
}

int
consul_urlencode(const char *s, char *out, size_t outlen)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	unsigned char ch;

	for (; *s != '\0'; s++) {
		ch = (unsigned char)*s;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		    ch == '-' || ch == '.' || ch == '_' || ch == '~') {
			if (outlen - o < 2)
				return -1;
			out[o++] = (char)ch;
		} else {
			if (outlen - o < 4)
				return -1;
			out[o++] = '%';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 15];
		}
	}
	if (outlen - o < 1)
		return -1;
	out[o] = '\0';
	return 0;
}
