/*
 * main.c - connect-spoa: the SPOE agent HAProxy asks, per inbound Connect connection, whether the
 * caller may reach the target service. Answers allow/deny from the Consul agent's authorize endpoint,
 * with a cache kept consistent by an intentions watch. Fails closed.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "authz.h"
#include "cache_snapshot.h"
#include "consul.h"
#include "log.h"
#include "metrics_http.h"
#include "server.h"
#include "busypoll.h"
#include "duration.h"

#define DEFAULT_LISTEN	"127.0.0.1:12345"
#define DRAIN_TIMEOUT	10.0
#define SNAPSHOT_INTERVAL 1.0	/* seconds between checks whether the decision cache needs writing */

struct options {
	const char	*listen;
	const char	*target;
	const char	*http_addr;
	const char	*token;
	const char	*token_file;
	const char	*log_level;
	const char	*metrics_addr;
	double		 decision_timeout;
	double		 cache_ttl;
	double		 stale_if_error;
	size_t		 cache_size;
	const char	*snapshot;
	double		 busy_poll;
};

struct daemon {
	struct ev_loop		*loop;
	struct consul_cfg	 cfg;
	struct consul_client	*consul;
	struct authz		*authz;
	struct spoa_server	*server;
	struct metrics_http	*metrics;
	struct dcsnap_keeper	*snapshot;
	struct busypoll		*busypoll;
	ev_signal		 sigterm;
	ev_signal		 sigint;
	ev_signal		 sighup;
	ev_timer		 drain_timer;
	int			 draining;
};

static void
usage(FILE *f)
{
	fprintf(f,
"Usage: connect-spoa [options]\n"
"\n"
"  The SPOE agent for haproxy-connect: HAProxy sends each inbound connection's client certificate\n"
"  (message check-intentions, argument cert=ssl_c_der); connect-spoa answers, from the Consul agent's\n"
"  intentions, with session variables auth (1 allow, 0 deny), source_app and reason. It fails closed.\n"
"  Flags take one dash or two, and a value as \"-flag value\" or \"-flag=value\".\n"
"\n"
"  -listen=<addr>           Where HAProxy connects: host:port, [v6]:port or unix:/path.\n"
"                           Default " DEFAULT_LISTEN ".\n"
"  -target=<service>        The destination service whose intentions are checked, unless HAProxy\n"
"                           sends a target argument with the message.\n"
"  -http-addr=<addr>        The Consul agent's HTTP API: host:port, http://..., https://...,\n"
"                           unix:///path. Overrides CONSUL_HTTP_ADDR. Default 127.0.0.1:8500.\n"
"  -token=<token>           ACL token for the agent (needs service:write on the target, and\n"
"                           intention:read for change notifications). Overrides the environment.\n"
"  -token-file=<path>       File holding the ACL token; re-read on SIGHUP (a missing, empty or unreadable\n"
"                           file keeps the token in use). CONSUL_HTTP_TOKEN_FILE is re-read alike.\n"
"  -log-level=<level>       trace, debug, info, warn or err. Default info; debug logs every decision.\n"
"  -metrics-addr=<addr>     Serve Prometheus metrics on http://<addr>/metrics (host:port). Default off.\n"
"  -decision-timeout=<dur>  Every decision is answered within this; an agent slower than it yields a\n"
"                           deny (\"agent timeout\"). Go duration (\"400ms\") or seconds. Default 400ms.\n"
"  -cache-ttl=<dur>         How long a cached decision lasts when the intentions watch is not\n"
"                           available (token without intention:read, agent failing). Default 60s.\n"
"                           With a working watch a decision lasts until the intentions change.\n"
"  -stale-if-error=<dur>    While the agent is unreachable or failing, a cached decision obtained less\n"
"                           than this long ago still answers. 0 disables. Default 5m.\n"
"  -cache-size=<n>          Maximum cached decisions (least recently used are evicted). Default 65536.\n"
"  -snapshot=<path>         Keep the decision cache in this file (msgpack, mode 0600; written within a\n"
"                           second of a change and at exit) and load it at start, so callers allowed\n"
"                           before a restart during an agent outage stay allowed for -stale-if-error.\n"
"                           A missing, corrupt or foreign file is ignored with a warning. Default off.\n"
"  -busy-poll=<dur>         After any activity, keep polling without sleeping for this long before\n"
"                           going back to sleep (as HAProxy's busy-polling, but only while busy).\n"
"                           On virtual machines whose idle vCPUs wake slowly this cuts decision\n"
"                           latency (p50 51-58 -> 9-10 us at 2,000 decisions/s on our CI VM) for a\n"
"                           CPU kept busy while traffic flows. \"1ms\"..\"5ms\" is typical; at most\n"
"                           60s; 0 is off. Default 0.\n"
"  -help                    This text.\n"
"\n"
"Environment (read as Consul's own CLI reads it; flags win):\n"
"  CONSUL_HTTP_ADDR         agent address, as -http-addr\n"
"  CONNECT_PROXY_TOKEN, CONSUL_PROXY_TOKEN, CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE\n"
"                           the ACL token, first non-empty in this order (a managed proxy's own token first)\n"
"  CONSUL_HTTP_SSL          use https (true/false)\n"
"  CONSUL_HTTP_SSL_VERIFY   verify the agent's certificate (default true)\n"
"  CONSUL_CACERT, CONSUL_CAPATH          CA file / directory for the agent's certificate\n"
"  CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY client certificate for the agent\n"
"  CONSUL_TLS_SERVER_NAME   server name expected in the agent's certificate\n"
"\n"
"Signals: SIGTERM/SIGINT stop accepting, answer what is in flight, disconnect and exit 0.\n"
"SIGHUP re-reads the token file (-token-file, CONSUL_HTTP_TOKEN_FILE), drops every cached decision and\n"
"re-reads the intentions.\n");
}

static int
parse_size(const char *s, size_t *out)
{
	unsigned long long v;
	char *end;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v == 0 || v > 100000000ULL)
		return -1;
	*out = (size_t)v;
	return 0;
}

static void bad_usage(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void
bad_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "connect-spoa: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n\n");
	usage(stderr);
	exit(2);
}

static void
parse_flags(int argc, char **argv, struct options *o)
{
	static const char *const names[] = {
		"listen", "target", "http-addr", "token", "token-file", "log-level", "metrics-addr",
		"decision-timeout", "cache-ttl", "stale-if-error", "cache-size", "snapshot", "busy-poll", NULL,
	};
	int i, k;

	for (i = 1; i < argc; i++) {
		const char *arg = argv[i], *name, *eq, *val;
		char flag[32];
		size_t nlen;

		if (arg[0] != '-' || arg[1] == '\0')
			bad_usage("unexpected argument \"%s\"", arg);
		name = arg + 1;
		if (*name == '-')
			name++;
		eq = strchr(name, '=');
		nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
		if (nlen == 0 || nlen >= sizeof(flag))
			bad_usage("flag provided but not defined: %s", arg);
		memcpy(flag, name, nlen);
		flag[nlen] = '\0';
		if (strcmp(flag, "help") == 0 || strcmp(flag, "h") == 0) {
			usage(stdout);
			exit(0);
		}
		for (k = 0; names[k] != NULL; k++)
			if (strcmp(flag, names[k]) == 0)
				break;
		if (names[k] == NULL)
			bad_usage("flag provided but not defined: -%s", flag);
		if (eq != NULL)
			val = eq + 1;
		else if (i + 1 < argc)
			val = argv[++i];
		else
			bad_usage("flag needs an argument: -%s", flag);

		if (strcmp(flag, "listen") == 0)
			o->listen = val;
		else if (strcmp(flag, "target") == 0)
			o->target = val;
		else if (strcmp(flag, "http-addr") == 0)
			o->http_addr = val;
		else if (strcmp(flag, "token") == 0)
			o->token = val;
		else if (strcmp(flag, "token-file") == 0)
			o->token_file = val;
		else if (strcmp(flag, "log-level") == 0) {
			enum log_level ll;

			if (log_level_parse(val, &ll) == -1)
				bad_usage("invalid -log-level \"%s\"", val);
			o->log_level = val;
		} else if (strcmp(flag, "metrics-addr") == 0)
			o->metrics_addr = val;
		else if (strcmp(flag, "decision-timeout") == 0) {
			if (duration_parse(val, &o->decision_timeout) == -1 || o->decision_timeout <= 0)
				bad_usage("invalid -decision-timeout \"%s\" (want a duration like 400ms)", val);
		} else if (strcmp(flag, "cache-ttl") == 0) {
			if (duration_parse(val, &o->cache_ttl) == -1 || o->cache_ttl <= 0)
				bad_usage("invalid -cache-ttl \"%s\" (want a duration like 60s)", val);
		} else if (strcmp(flag, "stale-if-error") == 0) {
			if (duration_parse(val, &o->stale_if_error) == -1)
				bad_usage("invalid -stale-if-error \"%s\" (want a duration like 5m)", val);
		} else if (strcmp(flag, "cache-size") == 0) {
			if (parse_size(val, &o->cache_size) == -1)
				bad_usage("invalid -cache-size \"%s\" (want a positive integer)", val);
		} else if (strcmp(flag, "snapshot") == 0) {
			if (*val == '\0')
				bad_usage("invalid -snapshot \"\" (want a file path)");
			o->snapshot = val;
		} else if (strcmp(flag, "busy-poll") == 0) {
			if (duration_parse(val, &o->busy_poll) == -1 || o->busy_poll > 60)
				bad_usage("invalid -busy-poll \"%s\" (want a duration like 1ms, at most 60s; 0 is off)", val);
		}
	}
}

static void
drain_done(void *arg)
{
	struct daemon *d = arg;

	log_info("drained, exiting");
	ev_break(d->loop, EVBREAK_ALL);
}

static void
drain_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	log_warnx("drain did not finish within %.0f s, exiting anyway", DRAIN_TIMEOUT);
	ev_break(loop, EVBREAK_ALL);
}

static void
stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct daemon *d = w->data;

	if (d->draining) {
		log_info("second stop signal, exiting now");
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	d->draining = 1;
	log_info("signal %d: draining: no new connections, answering what is in flight", w->signum);
	ev_timer_init(&d->drain_timer, drain_timeout_cb, DRAIN_TIMEOUT, 0);
	ev_timer_start(loop, &d->drain_timer);
	spoa_server_drain(d->server, drain_done, d);
}

static void
hup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct daemon *d = w->data;
	char err[512];
	bool changed;

	/* The token first: the intentions are re-read with the new one. */
	switch (consul_client_reread_token(d->consul, &d->cfg, &changed, err, sizeof(err))) {
	case 1:
		log_info("ACL token re-read from %s%s", d->cfg.token_file, changed ? "" : " (unchanged)");
		break;
	case -1:
		log_warnx("SIGHUP: keeping the ACL token in use: %s", err);
		break;
	}
	log_info("SIGHUP: dropping cached decisions and re-reading intentions");
	authz_flush(d->authz);
}

int
main(int argc, char **argv)
{
	struct options o;
	struct daemon d;
	struct authz_opts ao;
	struct spoa_server_opts so;
	enum log_level ll = LL_INFO;
	char err[512];

	memset(&o, 0, sizeof(o));
	memset(&d, 0, sizeof(d));
	o.listen = DEFAULT_LISTEN;
	o.decision_timeout = 0.4;
	o.cache_ttl = 60;
	o.stale_if_error = 300;
	o.cache_size = 65536;
	parse_flags(argc, argv, &o);
	if (o.log_level != NULL)
		(void)log_level_parse(o.log_level, &ll);
	log_init("connect-spoa", ll);
	signal(SIGPIPE, SIG_IGN);

	if (consul_cfg_from_env(&d.cfg, err, sizeof(err)) == -1)
		fatalx("environment: %s", err);
	if (o.http_addr != NULL && consul_cfg_set_addr(&d.cfg, o.http_addr, err, sizeof(err)) == -1)
		fatalx("-http-addr: %s", err);
	if (o.token_file != NULL && consul_cfg_set_token_file(&d.cfg, o.token_file, err, sizeof(err)) == -1)
		fatalx("-token-file: %s", err);
	if (o.token != NULL && consul_cfg_set_token(&d.cfg, o.token) == -1)
		fatalx("-token: out of memory");
	if (o.target == NULL)
		log_warnx("no -target: every check-intentions message must carry a target argument");

	d.loop = EV_DEFAULT;
	if (d.loop == NULL)
		fatalx("cannot initialise the event loop");
	if (o.busy_poll > 0 && (d.busypoll = busypoll_new(d.loop, o.busy_poll)) == NULL)
		fatalx("busy polling: out of memory");
	if ((d.consul = consul_client_new(d.loop, &d.cfg, err, sizeof(err))) == NULL)
		fatalx("consul client: %s", err);

	memset(&ao, 0, sizeof(ao));
	ao.default_target = o.target;
	ao.deadline = o.decision_timeout;
	ao.ttl = o.cache_ttl;
	ao.stale_if_error = o.stale_if_error;
	ao.max_entries = o.cache_size;
	if ((d.authz = authz_new(d.loop, d.consul, &ao, err, sizeof(err))) == NULL)
		fatalx("authz: %s", err);
	/* Decision snapshot (spoa/cache_snapshot.h): load now, then save on change and at exit. */
	if (o.snapshot != NULL && (d.snapshot = dcsnap_keeper_new(d.loop, authz_cache(d.authz), o.snapshot,
	    o.target, o.stale_if_error, SNAPSHOT_INTERVAL)) == NULL)
		fatalx("decision snapshot: out of memory");

	memset(&so, 0, sizeof(so));
	so.listen = o.listen;
	so.check = authz_check;
	so.cancel = authz_cancel;
	so.ctx = d.authz;
	if ((d.server = spoa_server_new(d.loop, &so, err, sizeof(err))) == NULL)
		fatalx("cannot listen on %s: %s", o.listen, err);
	if (o.metrics_addr != NULL &&
	    (d.metrics = metrics_http_new(d.loop, o.metrics_addr, err, sizeof(err))) == NULL)
		fatalx("cannot serve metrics: %s", err);

	ev_signal_init(&d.sigterm, stop_cb, SIGTERM);
	ev_signal_init(&d.sigint, stop_cb, SIGINT);
	ev_signal_init(&d.sighup, hup_cb, SIGHUP);
	d.sigterm.data = d.sigint.data = d.sighup.data = &d;
	ev_signal_start(d.loop, &d.sigterm);
	ev_signal_start(d.loop, &d.sigint);
	ev_signal_start(d.loop, &d.sighup);

	log_info("listening on %s; agent %s; target %s; decision timeout %g s, cache ttl %g s, "
	    "stale-if-error %g s, cache size %zu%s%s%s", o.listen, d.cfg.base_url != NULL ? d.cfg.base_url : "?",
	    o.target != NULL ? o.target : "(from message)", o.decision_timeout, o.cache_ttl,
	    o.stale_if_error, o.cache_size, o.metrics_addr != NULL ? "; metrics on " : "",
	    o.metrics_addr != NULL ? o.metrics_addr : "", d.busypoll != NULL ? "; busy polling" : "");

	ev_run(d.loop, 0);

	metrics_http_free(d.metrics);
	spoa_server_free(d.server);
	dcsnap_keeper_free(d.snapshot);	/* the last save, after the drain */
	busypoll_free(d.busypoll);
	authz_free(d.authz);
	consul_client_free(d.consul);
	consul_cfg_free(&d.cfg);
	ev_loop_destroy(d.loop);
	log_info("stopped");
	return 0;
}
