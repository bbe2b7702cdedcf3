/*
 * render.c - build the template variables from a proxy configuration and render haproxy.cfg and
 * spoe.conf (render.h). Only render_load_templates does I/O.
 *
 * Every value is checked against a strict character set before it reaches a template: the template
 * engine refuses line breaks, and this file refuses blanks, quotes, '#' and anything else that could
 * add an HAProxy keyword to a line.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "errbuf.h"
#include "render.h"
#include "template.h"

#define SPOE_ENGINE	"connect-intentions"
#define NAME_MAX_LEN	64

/* ---- the one place with I/O ---- */

static int
read_capped(const char *dir, const char *name, char **out, size_t *outlen, char *err, size_t errlen)
{
	char path[4096], *data;
	size_t len = 0;
	ssize_t n;
	int fd;

	*out = NULL;
	*outlen = 0;
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return errbuf_set(err, errlen, "%s/%s: path too long", dir, name);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return errbuf_set(err, errlen, "%s: %s", path, strerror(errno));
	if ((data = malloc(RENDER_TEMPLATE_MAX + 1)) == NULL) {
		close(fd);
		return errbuf_set(err, errlen, "%s: out of memory", path);
	}
	/* Read one byte past the cap to tell "exactly at the cap" from "too big". */
	while (len <= RENDER_TEMPLATE_MAX) {
		n = read(fd, data + len, RENDER_TEMPLATE_MAX + 1 - len);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			errbuf_set(err, errlen, "%s: %s", path, strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > RENDER_TEMPLATE_MAX) {
		errbuf_set(err, errlen, "%s: larger than %d bytes", path, RENDER_TEMPLATE_MAX);
		goto fail;
	}
	close(fd);
	data[len] = '\0';
	*out = data;
	*outlen = len;
	return 0;
fail:
	close(fd);
	free(data);
	return -1;
}

int
render_load_templates(const char *dir, struct render_templates *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	if (dir == NULL)
		return errbuf_set(err, errlen, "no template directory");
	if (read_capped(dir, "haproxy.cfg.tmpl", &t->haproxy_cfg, &t->haproxy_cfg_len, err, errlen) == -1)
		return -1;
	if (read_capped(dir, "spoe.conf.tmpl", &t->spoe_conf, &t->spoe_conf_len, err, errlen) == -1) {
		render_templates_free(t);
		return -1;
	}
	return 0;
}

void
render_templates_free(struct render_templates *t)
{
	if (t == NULL)
		return;
	free(t->haproxy_cfg);
	free(t->spoe_conf);
	memset(t, 0, sizeof(*t));
}

void
render_output_free(struct render_output *out)
{
	if (out == NULL)
		return;
	free(out->haproxy_cfg);
	free(out->spoe_conf);
	memset(out, 0, sizeof(*out));
}

/* ---- validation ---- */

static int
is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Names: [A-Za-z0-9._-], 1..max. */
static int
check_name(const char *what, const char *s, size_t max, char *err, size_t errlen)
{
	size_t i;

	if (s == NULL || s[0] == '\0')
		return errbuf_set(err, errlen, "%s: missing", what);
	for (i = 0; s[i] != '\0'; i++)
		if (!is_alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
			return errbuf_set(err, errlen, "%s: \"%.80s\" has a character other than letters, digits, '.', "
			    "'_', '-'", what, s);
	if (i > max)
		return errbuf_set(err, errlen, "%s: \"%.80s\" is longer than %zu characters", what, s, max);
	return 0;
}

/* A host: an IP literal (v4 or v6, unbracketed) or a DNS name. */
static int
check_host(const char *what, const char *s, char *err, size_t errlen)
{
	size_t i;

	if (s == NULL || s[0] == '\0')
		return errbuf_set(err, errlen, "%s: missing", what);
	for (i = 0; s[i] != '\0'; i++)
		if (!is_alnum(s[i]) && s[i] != '.' && s[i] != '-' && s[i] != ':')
			return errbuf_set(err, errlen, "%s: \"%.80s\" is not an IP address or host name", what, s);
	if (i > 253)
		return errbuf_set(err, errlen, "%s: too long", what);
	return 0;
}

/*
 * An absolute file path HAProxy reads as one word: no blanks, quotes, '#', backslash or control
 * characters (HAProxy's config parser would split, unquote or cut the line there).
 */
static int
check_path(const char *what, const char *s, char *err, size_t errlen)
{
	size_t i;

	if (s == NULL || s[0] == '\0')
		return errbuf_set(err, errlen, "%s: missing", what);
	if (s[0] != '/')
		return errbuf_set(err, errlen, "%s: \"%.200s\" is not an absolute path", what, s);
	for (i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c <= 0x20 || c == 0x7f || c == '"' || c == '\'' || c == '#' || c == '\\' || c == '$')
			return errbuf_set(err, errlen, "%s: \"%.200s\" has a character HAProxy's configuration cannot "
			    "hold as is (blank, quote, '#', '\\', '$' or control)", what, s);
	}
	if (i > 1024)
		return errbuf_set(err, errlen, "%s: too long", what);
	return 0;
}

/* "host:port" or "[v6]:port": the parts are checked, the string is kept as is. */
static int
check_endpoint(const char *what, const char *s, char *err, size_t errlen)
{
	char host[256];
	const char *colon, *p;
	size_t hlen;
	long port = 0;

	if (s == NULL || s[0] == '\0')
		return errbuf_set(err, errlen, "%s: missing", what);
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');

		if (rb == NULL || rb[1] != ':')
			goto bad;
		hlen = (size_t)(rb - s - 1);
		if (hlen == 0 || hlen >= sizeof(host))
			goto bad;
		memcpy(host, s + 1, hlen);
		p = rb + 2;
	} else {
		if ((colon = strrchr(s, ':')) == NULL)
			goto bad;
		hlen = (size_t)(colon - s);
		if (hlen == 0 || hlen >= sizeof(host) || memchr(s, ':', hlen) != NULL)
			goto bad;
		memcpy(host, s, hlen);
		p = colon + 1;
	}
	host[hlen] = '\0';
	if (check_host(what, host, err, errlen) == -1)
		return -1;
	if (*p == '\0' || strlen(p) > 5)
		goto bad;
	for (; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			goto bad;
		port = port * 10 + (*p - '0');
	}
	if (port < 1 || port > 65535)
		goto bad;
	return 0;
bad:
	return errbuf_set(err, errlen, "%s: \"%.80s\" is not host:port", what, s);
}

/*
 * The filled slots of one upstream: each slot in range and used once, each address numeric (a name
 * would make HAProxy resolve it at start, and a failed resolution would refuse the whole config).
 */
static int
check_servers(const struct render_upstream *r, char *err, size_t errlen)
{
	unsigned char a[sizeof(struct in6_addr)];
	bool *used;
	size_t k;
	int rc = -1;

	if (r->nservers == 0)
		return 0;
	if (r->servers == NULL)
		return errbuf_set(err, errlen, "upstream %s: %zu servers announced but none given", r->backend_name,
		    r->nservers);
	if (r->nservers > r->slots)
		return errbuf_set(err, errlen, "upstream %s: %zu servers for %u slots", r->backend_name, r->nservers,
		    r->slots);
	if ((used = calloc(r->slots, sizeof(*used))) == NULL)
		return errbuf_set(err, errlen, "out of memory");
	for (k = 0; k < r->nservers; k++) {
		const struct render_server *sv = &r->servers[k];

		if (sv->slot >= r->slots) {
			errbuf_set(err, errlen, "upstream %s: server slot %u is out of range (0..%u)", r->backend_name,
			    sv->slot, r->slots - 1);
			goto done;
		}
		if (used[sv->slot]) {
			errbuf_set(err, errlen, "upstream %s: server slot %u is filled twice", r->backend_name,
			    sv->slot);
			goto done;
		}
		used[sv->slot] = true;
		if (sv->addr == NULL || strlen(sv->addr) >= INET6_ADDRSTRLEN ||
		    (inet_pton(AF_INET, sv->addr, a) != 1 && inet_pton(AF_INET6, sv->addr, a) != 1)) {
			errbuf_set(err, errlen, "upstream %s: server slot %u: \"%.80s\" is not a numeric IP address",
			    r->backend_name, sv->slot, sv->addr != NULL ? sv->addr : "(null)");
			goto done;
		}
		if (sv->port < 1 || sv->port > 65535) {
			errbuf_set(err, errlen, "upstream %s: server slot %u: %d is not a port", r->backend_name,
			    sv->slot, sv->port);
			goto done;
		}
	}
	rc = 0;
done:
	free(used);
	return rc;
}

/* host + port as HAProxy writes an address: IPv6 literals in brackets. */
static void
endpoint(char *out, size_t outlen, const char *host, int port)
{
	if (strchr(host, ':') != NULL)
		snprintf(out, outlen, "[%s]:%d", host, port);
	else
		snprintf(out, outlen, "%s:%d", host, port);
}

static int
check_port(const char *what, int port, char *err, size_t errlen)
{
	if (port < 1 || port > 65535)
		return errbuf_set(err, errlen, "%s: %d is not a port", what, port);
	return 0;
}

static int
check_timeout(const char *what, int ms, char *err, size_t errlen)
{
	if (ms < 1 || ms > 86400000)
		return errbuf_set(err, errlen, "%s: %d ms is out of range (1..86400000)", what, ms);
	return 0;
}

static const char *
haproxy_level(enum log_level l)
{
	switch (l) {
	case LL_TRACE:
	case LL_DEBUG:
		return "debug";
	case LL_INFO:
		return "info";
	case LL_WARN:
		return "warning";
	case LL_ERR:
		return "err";
	}
	return "info";
}

static int
is_reserved(const char *name)
{
	static const char *const reserved[] = { RENDER_INBOUND_FRONTEND, RENDER_LOCAL_BACKEND,
	    RENDER_SPOE_BACKEND, "stats", NULL };
	size_t i;

	for (i = 0; reserved[i] != NULL; i++)
		if (strcmp(name, reserved[i]) == 0)
			return 1;
	return 0;
}

static int
validate(const struct render_input *in, char *err, size_t errlen)
{
	const struct proxy_cfg *c = in->cfg;
	char what[96];
	size_t i, j;

	if (c == NULL)
		return errbuf_set(err, errlen, "no proxy configuration");
	if (check_path("data_dir", in->data_dir, err, errlen) == -1 ||
	    check_path("leaf_pem", in->leaf_pem, err, errlen) == -1 ||
	    check_path("ca_pem", in->ca_pem, err, errlen) == -1 ||
	    check_path("spoe_conf_path", in->spoe_conf_path, err, errlen) == -1 ||
	    check_path("runtime_sock", in->runtime_sock, err, errlen) == -1)
		return -1;
	if (in->spoa_addr == NULL)
		return errbuf_set(err, errlen, "spoa_addr: missing");
	if (strncmp(in->spoa_addr, "unix@", 5) == 0) {
		if (check_path("spoa_addr", in->spoa_addr + 5, err, errlen) == -1)
			return -1;
	} else if (check_endpoint("spoa_addr", in->spoa_addr, err, errlen) == -1)
		return -1;
	if (in->stats_addr != NULL && check_endpoint("stats_addr", in->stats_addr, err, errlen) == -1)
		return -1;
	if (in->nbthread < 1 || in->nbthread > 64)
		return errbuf_set(err, errlen, "nbthread: %d is out of range (1..64)", in->nbthread);
	if (check_name("service name", c->target_service_name, 256, err, errlen) == -1 ||
	    check_host("bind address", c->bind_address, err, errlen) == -1 ||
	    check_port("bind port", c->bind_port, err, errlen) == -1 ||
	    check_host("local service host", c->local_service_host, err, errlen) == -1 ||
	    check_port("local service port", c->local_service_port, err, errlen) == -1 ||
	    check_timeout("local_connect_timeout_ms", c->local_connect_timeout_ms, err, errlen) == -1 ||
	    check_timeout("handshake_timeout_ms", c->handshake_timeout_ms, err, errlen) == -1)
		return -1;
	if (c->nupstreams > 0 && (c->upstreams == NULL || in->upstreams == NULL))
		return errbuf_set(err, errlen, "upstreams: %zu configured but none given", c->nupstreams);
	for (i = 0; i < c->nupstreams; i++) {
		const struct upstream_cfg *u = &c->upstreams[i];
		const struct render_upstream *r = &in->upstreams[i];

		snprintf(what, sizeof(what), "upstream %zu backend name", i);
		if (check_name(what, r->backend_name, NAME_MAX_LEN, err, errlen) == -1)
			return -1;
		if (is_reserved(r->backend_name))
			return errbuf_set(err, errlen, "%s: \"%s\" is reserved", what, r->backend_name);
		for (j = 0; j < i; j++)
			if (strcmp(in->upstreams[j].backend_name, r->backend_name) == 0)
				return errbuf_set(err, errlen, "%s: \"%s\" is used twice", what, r->backend_name);
		if (r->slots < 1 || r->slots > RENDER_SLOTS_MAX)
			return errbuf_set(err, errlen, "upstream %s: %u slots is out of range (1..%d)", r->backend_name,
			    r->slots, RENDER_SLOTS_MAX);
		if (check_servers(r, err, errlen) == -1)
			return -1;
		snprintf(what, sizeof(what), "upstream %s server identity", r->backend_name);
		if (check_name(what, r->server_identity, 256, err, errlen) == -1)
			return -1;
		snprintf(what, sizeof(what), "upstream %s destination", r->backend_name);
		if (check_name(what, u->dest_name, 256, err, errlen) == -1)
			return -1;
		snprintf(what, sizeof(what), "upstream %s local bind address", r->backend_name);
		if (check_host(what, u->local_bind_address, err, errlen) == -1)
			return -1;
		snprintf(what, sizeof(what), "upstream %s local bind port", r->backend_name);
		if (check_port(what, u->local_bind_port, err, errlen) == -1)
			return -1;
		snprintf(what, sizeof(what), "upstream %s connect_timeout_ms", r->backend_name);
		if (check_timeout(what, u->connect_timeout_ms, err, errlen) == -1)
			return -1;
		if (u->datacenter != NULL && u->datacenter[0] != '\0') {
			snprintf(what, sizeof(what), "upstream %s datacenter", r->backend_name);
			if (check_name(what, u->datacenter, 256, err, errlen) == -1)
				return -1;
		}
	}
	return 0;
}

/* ---- variables ---- */

/*
 * The list "servers" of one upstream item: one entry per slot, in slot order, enabled at the instance's
 * address when r fills it, else disabled at 0.0.0.0:0. 0, or -1 on allocation failure.
 */
static int
add_servers(struct tscope *u, const struct render_upstream *r)
{
	const struct render_server **at;
	struct tscope *sv;
	char buf[96];
	unsigned k;
	size_t j;

	if ((at = calloc(r->slots, sizeof(*at))) == NULL)
		return -1;
	for (j = 0; j < r->nservers; j++)
		at[r->servers[j].slot] = &r->servers[j];
	tscope_set_list(u, "servers");
	for (k = 0; k < r->slots; k++) {
		if ((sv = tscope_list_add(u, "servers")) == NULL) {
			free(at);
			return -1;
		}
		snprintf(buf, sizeof(buf), "%s%u", RENDER_SLOT_PREFIX, k + 1);
		tscope_set_str(sv, "name", buf);
		if (at[k] != NULL)
			endpoint(buf, sizeof(buf), at[k]->addr, at[k]->port);
		else
			snprintf(buf, sizeof(buf), "0.0.0.0:0");
		tscope_set_str(sv, "address", buf);
		tscope_set_bool(sv, "enabled", at[k] != NULL);
	}
	free(at);
	return 0;
}

static struct tscope *
build_vars(const struct render_input *in)
{
	const struct proxy_cfg *c = in->cfg;
	struct tscope *s, *u;
	char buf[320];
	size_t i;

	if ((s = tscope_new()) == NULL)
		return NULL;
	tscope_set_str(s, "proxy_id", c->proxy_id != NULL ? c->proxy_id : "");
	tscope_set_str(s, "service_name", c->target_service_name);
	tscope_set_str(s, "service_id", c->target_service_id != NULL ? c->target_service_id : "");
	tscope_set_str(s, "target", c->target_service_name);
	tscope_set_str(s, "data_dir", in->data_dir);
	tscope_set_str(s, "leaf_pem", in->leaf_pem);
	tscope_set_str(s, "ca_pem", in->ca_pem);
	tscope_set_str(s, "spoe_conf", in->spoe_conf_path);
	tscope_set_str(s, "runtime_socket", in->runtime_sock);
	tscope_set_int(s, "nbthread", in->nbthread);
	tscope_set_str(s, "log_level", haproxy_level(in->log_level));
	endpoint(buf, sizeof(buf), c->bind_address, c->bind_port);
	tscope_set_str(s, "bind", buf);
	tscope_set_str(s, "bind_address", c->bind_address);
	tscope_set_int(s, "bind_port", c->bind_port);
	endpoint(buf, sizeof(buf), c->local_service_host, c->local_service_port);
	tscope_set_str(s, "local_service", buf);
	tscope_set_int(s, "local_connect_timeout_ms", c->local_connect_timeout_ms);
	tscope_set_int(s, "handshake_timeout_ms", c->handshake_timeout_ms);
	tscope_set_bool(s, "http", c->protocol_http);
	tscope_set_str(s, "source_header", RENDER_SOURCE_HEADER);
	tscope_set_str(s, "inbound_frontend", RENDER_INBOUND_FRONTEND);
	tscope_set_str(s, "local_backend", RENDER_LOCAL_BACKEND);
	tscope_set_str(s, "local_server", RENDER_LOCAL_SERVER);
	tscope_set_str(s, "spoe_backend", RENDER_SPOE_BACKEND);
	tscope_set_str(s, "spoe_engine", SPOE_ENGINE);
	tscope_set_str(s, "spoa_address", in->spoa_addr);
	tscope_set_str(s, "slot_prefix", RENDER_SLOT_PREFIX);
	tscope_set_bool(s, "stats", in->stats_addr != NULL);
	tscope_set_str(s, "stats_bind", in->stats_addr != NULL ? in->stats_addr : "");
	tscope_set_list(s, "upstreams");
	for (i = 0; i < c->nupstreams; i++) {
		const struct upstream_cfg *uc = &c->upstreams[i];
		const struct render_upstream *r = &in->upstreams[i];

		if ((u = tscope_list_add(s, "upstreams")) == NULL)
			break;
		tscope_set_str(u, "name", r->backend_name);
		snprintf(buf, sizeof(buf), "up_%s", r->backend_name);
		tscope_set_str(u, "frontend", buf);
		endpoint(buf, sizeof(buf), uc->local_bind_address, uc->local_bind_port);
		tscope_set_str(u, "bind", buf);
		tscope_set_int(u, "slots", r->slots);
		tscope_set_int(u, "filled", (long long)r->nservers);
		if (add_servers(u, r) == -1) {
			tscope_free(s);
			return NULL;
		}
		tscope_set_str(u, "server_identity", r->server_identity);
		tscope_set_int(u, "connect_timeout_ms", uc->connect_timeout_ms);
		tscope_set_str(u, "destination", uc->dest_name);
		tscope_set_str(u, "destination_type",
		    uc->dest_type == DEST_PREPARED_QUERY ? "prepared_query" : "service");
		tscope_set_str(u, "datacenter", uc->datacenter != NULL ? uc->datacenter : "");
	}
	return s;
}

int
render_files(const struct render_templates *t, const struct render_input *in, struct render_output *out,
    char *err, size_t errlen)
{
	struct tscope *vars;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	if (t == NULL || t->haproxy_cfg == NULL || t->spoe_conf == NULL)
		return errbuf_set(err, errlen, "templates not loaded");
	if (in == NULL)
		return errbuf_set(err, errlen, "no render input");
	if (validate(in, err, errlen) == -1)
		return -1;
	if ((vars = build_vars(in)) == NULL)
		return errbuf_set(err, errlen, "out of memory");
	if (template_render("haproxy.cfg.tmpl", t->haproxy_cfg, t->haproxy_cfg_len, vars, RENDER_OUTPUT_MAX,
	    &out->haproxy_cfg, &out->haproxy_cfg_len, err, errlen) == -1)
		goto done;
	if (template_render("spoe.conf.tmpl", t->spoe_conf, t->spoe_conf_len, vars, RENDER_OUTPUT_MAX,
	    &out->spoe_conf, &out->spoe_conf_len, err, errlen) == -1)
		goto done;
	rc = 0;
done:
	tscope_free(vars);
	if (rc == -1)
		render_output_free(out);
	return rc;
}

int
render_from_dir(const char *dir, const struct render_input *in, struct render_output *out, char *err,
    size_t errlen)
{
	struct render_templates t;
	int rc;

	memset(out, 0, sizeof(*out));
	if (render_load_templates(dir, &t, err, errlen) == -1)
		return -1;
	rc = render_files(&t, in, out, err, errlen);
	render_templates_free(&t);
	return rc;
}
