/*
 * main.c - connect-certsync: flags, environment, data directory, signals, and the daemon's lifecycle.
 *
 * Runs in the foreground (no double fork: the Consul agent or a service manager supervises us), logs on
 * stderr. Signals are loop events: SIGTERM/SIGINT stop the children gracefully and exit 0, SIGHUP
 * re-reads the token file, refreshes every watch and re-renders.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ev.h>

#include "atomicfile.h"
#include "consul.h"
#include "daemon.h"
#include "log.h"
#include "snapshot.h"
#include "duration.h"

#define PROG		"connect-certsync"
#define SHARE_SUFFIX	"share/haproxy-connect/templates"

struct options {
	const char	*proxy_id;
	const char	*sidecar_for;
	const char	*http_addr;
	const char	*token;
	const char	*token_file;
	const char	*data_dir;
	const char	*haproxy_bin;
	const char	*spoa_bin;
	const char	*template_dir;
	const char	*log_level;
	const char	*stats_addr;
	const char	*spoa_metrics_addr;
	const char	*spoa_busy_poll;
	const char	*nbthread;
	const char	*snapshot;
	int		 once;
	int		 help;
};

static void
usage(FILE *f)
{
	fprintf(f,
"Usage: " PROG " [options]\n"
"\n"
"  The control plane of haproxy-connect: watches the local Consul agent for one Connect proxy's\n"
"  configuration, its leaf certificate, the CA roots and its upstreams' instances; writes the certificate\n"
"  files atomically; renders haproxy.cfg and spoe.conf; runs HAProxy (master-worker) and connect-spoa and\n"
"  keeps them in step: leaf rotations, CA rotations and instance changes through HAProxy's runtime API\n"
"  (no reload); listener changes and a removed CA root through a checked, seamless reload. Runs in the\n"
"  foreground, logs on stderr.\n"
"  Flags take one dash or two, and a value as \"-flag value\" or \"-flag=value\".\n"
"\n"
"  Which proxy (exactly one):\n"
"  (managed)                Consul starts us with CONNECT_PROXY_ID (or CONSUL_PROXY_ID, 1.2 docs) and\n"
"                           CONNECT_PROXY_TOKEN in the environment: /v1/agent/connect/proxy/<id> is watched.\n"
"  -proxy-id=<id>           An unmanaged connect-proxy service registered with the agent: watches\n"
"                           /v1/agent/service/<id> (Consul 1.3+), else /v1/agent/services (1.2).\n"
"  -sidecar-for=<id>        Finds the one connect-proxy whose destination is the service <id>.\n"
"\n"
"  -http-addr=<addr>        The agent's HTTP API: host:port, http://, https://, unix:///path. Overrides\n"
"                           CONSUL_HTTP_ADDR. Default 127.0.0.1:8500. Also handed to connect-spoa.\n"
"  -token=<token>           ACL token (overrides the environment). Handed to connect-spoa in a 0600 file.\n"
"  -token-file=<path>       A file holding the ACL token; re-read on SIGHUP (CONSUL_HTTP_TOKEN_FILE too),\n"
"                           then connect-spoa is sent SIGHUP to re-read it. A missing, empty or\n"
"                           unreadable file keeps the token in use.\n"
"  -data-dir=<dir>          Where the certificate files, haproxy.cfg, spoe.conf and the sockets live.\n"
"                           Created with mode 0700. Default $TMPDIR/haproxy-connect-<proxy id> (TMPDIR\n"
"                           defaults to /tmp). At most 88 characters (unix socket paths).\n"
"  -haproxy-bin=<path>      HAProxy binary. Default \"haproxy\" (PATH).\n"
"  -spoa-bin=<path>         connect-spoa binary. Default: connect-spoa next to this executable, else PATH.\n"
"  -template-dir=<dir>      haproxy.cfg.tmpl and spoe.conf.tmpl. Default: <prefix>/" SHARE_SUFFIX "\n"
"                           next to this executable's prefix, /usr/local/..., /usr/..., else the source\n"
"                           tree's haproxy-templates/.\n"
"  -stats-addr=<host:port>  Optional HAProxy stats/Prometheus listener (/metrics).\n"
"  -spoa-metrics-addr=<host:port>\n"
"                           Optional: connect-spoa serves its Prometheus metrics there (its -metrics-addr).\n"
"  -spoa-busy-poll=<dur>    connect-spoa's -busy-poll: after any event its loop polls without sleeping\n"
"                           for this long (lower decision latency on VMs, a CPU busy while traffic\n"
"                           flows). Go duration, at most 60s; 0 is off. Default 0.\n"
"  -nbthread=<n>            HAProxy threads, 1..64. Default: the number of CPUs, at most 4.\n"
"  -log-level=<level>       trace, debug, info, warn, err. Default info. debug shows discovery,\n"
"                           certificate and runtime API events.\n"
"  -once                    Fetch once (no blocking), write the certificates and render the configs\n"
"                           into -data-dir, then exit 0 (nonzero with an error), for operators running\n"
"                           HAProxy themselves. Server slots are left for the runtime API to fill.\n"
"  -snapshot=<path>         The last-known-good state (proxy config, certificate file fingerprints,\n"
"                           upstream instances; msgpack, mode 0600), written whenever it changes. When\n"
"                           the agent cannot be reached at start, certsync serves from it (if the\n"
"                           certificate files still match and are not expired) until the agent answers;\n"
"                           connect-spoa keeps its decisions in <data dir>/decisions.snapshot alike.\n"
"                           Default <data dir>/" SNAPSHOT_FILENAME "; \"none\" turns both off.\n"
"  -help                    This text.\n"
"\n"
"  Environment: CONNECT_PROXY_ID / CONSUL_PROXY_ID (managed mode), CONNECT_PROXY_TOKEN,\n"
"  CONSUL_PROXY_TOKEN, CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE (token, first non-empty wins),\n"
"  CONSUL_HTTP_ADDR, CONSUL_HTTP_SSL, CONSUL_HTTP_SSL_VERIFY, CONSUL_CACERT, CONSUL_CAPATH,\n"
"  CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME (as Consul's CLI), TMPDIR.\n"
"  connect-spoa inherits the environment.\n"
"\n"
"  Signals: SIGTERM/SIGINT stop HAProxy and connect-spoa gracefully, then exit 0; SIGHUP re-reads the\n"
"  token file (forwarding SIGHUP to connect-spoa when the token changed), refreshes every watch and\n"
"  re-reads the templates. Exit 0 also when the proxy is deregistered from the agent.\n");
}

/* One flag "-name", "--name", with "=value" or the next argument. */
static int
parse_flags(int argc, char **argv, struct options *o)
{
	static const struct {
		const char *name;
		size_t off;
	} strs[] = {
		{ "proxy-id", offsetof(struct options, proxy_id) },
		{ "sidecar-for", offsetof(struct options, sidecar_for) },
		{ "http-addr", offsetof(struct options, http_addr) },
		{ "token", offsetof(struct options, token) },
		{ "token-file", offsetof(struct options, token_file) },
		{ "data-dir", offsetof(struct options, data_dir) },
		{ "haproxy-bin", offsetof(struct options, haproxy_bin) },
		{ "spoa-bin", offsetof(struct options, spoa_bin) },
		{ "template-dir", offsetof(struct options, template_dir) },
		{ "log-level", offsetof(struct options, log_level) },
		{ "stats-addr", offsetof(struct options, stats_addr) },
		{ "spoa-metrics-addr", offsetof(struct options, spoa_metrics_addr) },
		{ "spoa-busy-poll", offsetof(struct options, spoa_busy_poll) },
		{ "nbthread", offsetof(struct options, nbthread) },
		{ "snapshot", offsetof(struct options, snapshot) },
	};
	int i;
	size_t k;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *eq, *val = NULL;
		size_t nlen;
		int found = 0;

		if (a[0] != '-') {
			fprintf(stderr, PROG ": unexpected argument \"%s\"\n", a);
			return -1;
		}
		a += (a[1] == '-') ? 2 : 1;
		eq = strchr(a, '=');
		nlen = eq != NULL ? (size_t)(eq - a) : strlen(a);
		if ((nlen == 4 && strncmp(a, "help", 4) == 0) || (nlen == 1 && a[0] == 'h')) {
			o->help = 1;
			continue;
		}
		if (nlen == 4 && strncmp(a, "once", 4) == 0) {
			if (eq != NULL && strcmp(eq + 1, "true") != 0 && strcmp(eq + 1, "false") != 0) {
				fprintf(stderr, PROG ": -once takes no value (or =true/=false)\n");
				return -1;
			}
			o->once = eq == NULL || strcmp(eq + 1, "true") == 0;
			continue;
		}
		for (k = 0; k < sizeof(strs) / sizeof(strs[0]); k++) {
			if (strlen(strs[k].name) != nlen || strncmp(a, strs[k].name, nlen) != 0)
				continue;
			if (eq != NULL)
				val = eq + 1;
			else if (i + 1 < argc)
				val = argv[++i];
			else {
				fprintf(stderr, PROG ": flag -%s needs a value\n", strs[k].name);
				return -1;
			}
			*(const char **)(void *)((char *)o + strs[k].off) = val;
			found = 1;
			break;
		}
		if (!found) {
			fprintf(stderr, PROG ": unknown flag \"%s\"\n", argv[i]);
			return -1;
		}
	}
	return 0;
}

/* Directory of our own executable into out ("" when unknown). */
static void
self_dir(char *out, size_t outlen)
{
	char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
	char *slash;

	out[0] = '\0';
	if (n <= 0)
		return;
	buf[n] = '\0';
	if ((slash = strrchr(buf, '/')) == NULL)
		return;
	*slash = '\0';
	snprintf(out, outlen, "%s", buf);
}

static int
has_templates(const char *dir)
{
	char p[PATH_MAX];

	if (snprintf(p, sizeof(p), "%s/haproxy.cfg.tmpl", dir) >= (int)sizeof(p))
		return 0;
	return access(p, R_OK) == 0;
}

static const char *
default_template_dir(const char *self, char *out, size_t outlen)
{
	const char *cands[] = { "%s/../" SHARE_SUFFIX, "/usr/local/" SHARE_SUFFIX, "/usr/" SHARE_SUFFIX,
	    "%s/../haproxy-templates", "%s/../../haproxy-templates" };
	size_t i;

	for (i = 0; i < sizeof(cands) / sizeof(cands[0]); i++) {
		if (strstr(cands[i], "%s") != NULL && self[0] == '\0')
			continue;
		/* the candidates are constant formats with at most one %s */
		if (strstr(cands[i], "%s") != NULL)
			snprintf(out, outlen, "%s%s", self, cands[i] + 2);
		else
			snprintf(out, outlen, "%s", cands[i]);
		if (has_templates(out))
			return out;
	}
	return NULL;
}

/* Creates dir (mode 0700) if missing; an existing one must be ours and becomes 0700. */
static void
make_data_dir(const char *dir)
{
	struct stat st;

	if (mkdir(dir, 0700) == -1 && errno != EEXIST)
		fatal("-data-dir: cannot create %s", dir);
	if (lstat(dir, &st) == -1)
		fatal("-data-dir: %s", dir);
	if (!S_ISDIR(st.st_mode))
		fatalx("-data-dir: %s is not a directory", dir);
	if (st.st_uid != geteuid())
		fatalx("-data-dir: %s belongs to another user (uid %u)", dir, (unsigned)st.st_uid);
	if ((st.st_mode & 0777) != 0700 && chmod(dir, 0700) == -1)
		fatal("-data-dir: chmod %s", dir);
}

static void
on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct daemon *d = w->data;

	log_info("%s: stopping", w->signum == SIGINT ? "SIGINT" : "SIGTERM");
	daemon_shutdown(d, 0);
}

struct hup_ctx {
	struct daemon		*d;
	struct consul_cfg	*cfg;
};

static void
on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct hup_ctx *h = w->data;
	char err[1024];
	bool changed;

	/* The token first, so that the watches daemon_hup refreshes ask with the new one. */
	switch (daemon_reread_token(h->d, h->cfg, &changed, err, sizeof(err))) {
	case 1:
		log_info("ACL token re-read from %s%s", h->cfg->token_file, changed ? "" : " (unchanged)");
		break;
	case -1:
		log_warnx("SIGHUP: keeping the ACL token in use: %s", err);
		break;
	}
	daemon_hup(h->d);
}

int
main(int argc, char **argv)
{
	struct options o;
	struct daemon_opts dopt;
	struct consul_cfg cfg;
	struct hup_ctx hctx;
	struct daemon *d;
	struct ev_loop *loop;
	ev_signal sterm, sint, shup;
	enum log_level level = LL_INFO;
	const char *env_id, *tmp;
	char err[1024], self[PATH_MAX], tdir[PATH_MAX], spoa[PATH_MAX], ddir[PATH_MAX], real[PATH_MAX];
	char tokfile[PATH_MAX + 16], idbuf[256], snap[PATH_MAX + 32];
	long ncpu;
	int nmodes, rc;
	size_t k;

	memset(&o, 0, sizeof(o));
	if (parse_flags(argc, argv, &o) == -1) {
		fprintf(stderr, "Run \"" PROG " -help\" for the flags.\n");
		return 2;
	}
	if (o.help) {
		usage(stdout);
		return 0;
	}
	if (o.log_level != NULL && log_level_parse(o.log_level, &level) == -1) {
		fprintf(stderr, PROG ": -log-level: unknown level \"%s\" (trace, debug, info, warn, err)\n",
		    o.log_level);
		return 2;
	}
	log_init(PROG, level);
	signal(SIGPIPE, SIG_IGN);

	env_id = getenv("CONNECT_PROXY_ID");
	if (env_id == NULL || env_id[0] == '\0')
		env_id = getenv("CONSUL_PROXY_ID");
	if (env_id != NULL && env_id[0] == '\0')
		env_id = NULL;
	nmodes = (o.proxy_id != NULL) + (o.sidecar_for != NULL);
	if (nmodes > 1)
		fatalx("-proxy-id and -sidecar-for exclude each other");
	if (nmodes == 0 && env_id == NULL)
		fatalx("which proxy? give -proxy-id or -sidecar-for (or run as a managed proxy with "
		    "CONNECT_PROXY_ID set); see -help");
	if ((o.proxy_id != NULL && o.proxy_id[0] == '\0') || (o.sidecar_for != NULL && o.sidecar_for[0] == '\0'))
		fatalx("-proxy-id / -sidecar-for must not be empty");

	memset(&cfg, 0, sizeof(cfg));
	if (consul_cfg_from_env(&cfg, err, sizeof(err)) == -1)
		fatalx("environment: %s", err);
	if (o.http_addr != NULL && consul_cfg_set_addr(&cfg, o.http_addr, err, sizeof(err)) == -1)
		fatalx("-http-addr: %s", err);
	if (o.token_file != NULL && consul_cfg_set_token_file(&cfg, o.token_file, err, sizeof(err)) == -1)
		fatalx("-token-file: %s", err);
	if (o.token != NULL && consul_cfg_set_token(&cfg, o.token) == -1)
		fatalx("-token: out of memory");

	memset(&dopt, 0, sizeof(dopt));
	dopt.managed = nmodes == 0;
	dopt.proxy_id = nmodes == 0 ? env_id : o.proxy_id;
	dopt.sidecar_for = o.sidecar_for;
	if (nmodes == 0)
		log_info("managed proxy %s (from the environment)", env_id);

	/* data dir */
	if (o.data_dir == NULL) {
		const char *id = dopt.proxy_id != NULL ? dopt.proxy_id : o.sidecar_for;

		snprintf(idbuf, sizeof(idbuf), "%s%s", dopt.proxy_id != NULL ? "" : "sidecar-", id);
		for (k = 0; idbuf[k] != '\0'; k++) {
			if (idbuf[k] == '/' || idbuf[k] == '\\' || (unsigned char)idbuf[k] < 0x20)
				idbuf[k] = '_';
		}
		tmp = getenv("TMPDIR");
		if (tmp == NULL || tmp[0] == '\0')
			tmp = "/tmp";
		if (snprintf(ddir, sizeof(ddir), "%s/haproxy-connect-%s", tmp, idbuf) >= (int)sizeof(ddir))
			fatalx("data dir path too long");
	} else if (snprintf(ddir, sizeof(ddir), "%s", o.data_dir) >= (int)sizeof(ddir))
		fatalx("-data-dir too long");
	make_data_dir(ddir);
	if (realpath(ddir, real) == NULL)
		fatal("-data-dir: %s", ddir);
	dopt.data_dir = real;

	self_dir(self, sizeof(self));
	if (o.template_dir != NULL) {
		if (!has_templates(o.template_dir))
			fatalx("-template-dir: no readable haproxy.cfg.tmpl in %s", o.template_dir);
		dopt.template_dir = o.template_dir;
	} else if ((dopt.template_dir = default_template_dir(self, tdir, sizeof(tdir))) == NULL)
		fatalx("no template directory found (looked next to %s, in /usr/local and /usr); give "
		    "-template-dir", self[0] != '\0' ? self : "this executable");
	if (o.spoa_bin != NULL)
		dopt.spoa_bin = o.spoa_bin;
	else {
		snprintf(spoa, sizeof(spoa), "%s/connect-spoa", self);
		dopt.spoa_bin = (self[0] != '\0' && access(spoa, X_OK) == 0) ? spoa : "connect-spoa";
	}
	dopt.haproxy_bin = o.haproxy_bin != NULL ? o.haproxy_bin : "haproxy";
	dopt.stats_addr = o.stats_addr;
	dopt.once = o.once;
	if (o.snapshot == NULL) {
		snprintf(snap, sizeof(snap), "%s/" SNAPSHOT_FILENAME, real);
		dopt.snapshot_path = snap;
	} else if (o.snapshot[0] == '\0')
		fatalx("-snapshot: empty path (\"none\" turns snapshots off)");
	else if (strcmp(o.snapshot, "none") != 0)
		dopt.snapshot_path = o.snapshot;
	dopt.log_level = level;
	dopt.consul = &cfg;
	if (o.nbthread != NULL) {
		char *end;

		errno = 0;
		ncpu = strtol(o.nbthread, &end, 10);
		if (errno != 0 || *end != '\0' || end == o.nbthread || ncpu < 1 || ncpu > 64)
			fatalx("-nbthread: \"%s\" is not a number from 1 to 64", o.nbthread);
	} else {
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		if (ncpu < 1)
			ncpu = 1;
		if (ncpu > 4)
			ncpu = 4;
	}
	dopt.nbthread = (int)ncpu;
	/* connect-spoa reads the same agent: same address, same token (in a file, not on its command line) */
	dopt.spoa_http_addr = o.http_addr;
	dopt.spoa_metrics_addr = o.spoa_metrics_addr;
	if (o.spoa_busy_poll != NULL) {
		double bp;

		if (duration_parse(o.spoa_busy_poll, &bp) == -1 || bp > 60)
			fatalx("-spoa-busy-poll: \"%s\" is not a duration up to 60s (like 1ms; 0 is off)",
			    o.spoa_busy_poll);
		if (bp > 0)
			dopt.spoa_busy_poll = o.spoa_busy_poll;
	}
	if (o.token != NULL) {
		snprintf(tokfile, sizeof(tokfile), "%s/spoa.token", real);
		if (atomic_write_file(tokfile, o.token, strlen(o.token), 0600, err, sizeof(err)) == -1)
			fatalx("cannot write the token file for connect-spoa: %s", err);
		dopt.spoa_token_file = tokfile;
	} else
		dopt.spoa_token_file = o.token_file;

	log_info("data dir %s, templates %s, haproxy %s, connect-spoa %s", dopt.data_dir, dopt.template_dir,
	    dopt.haproxy_bin, dopt.spoa_bin);

	if ((loop = ev_default_loop(EVFLAG_AUTO)) == NULL)
		fatalx("cannot initialize libev");
	if ((d = daemon_new(loop, &dopt, err, sizeof(err))) == NULL)
		fatalx("%s", err);
	ev_signal_init(&sterm, on_stop_signal, SIGTERM);
	ev_signal_init(&sint, on_stop_signal, SIGINT);
	ev_signal_init(&shup, on_hup, SIGHUP);
	hctx.d = d;
	hctx.cfg = &cfg;
	sterm.data = sint.data = d;
	shup.data = &hctx;
	ev_signal_start(loop, &sterm);
	ev_signal_start(loop, &sint);
	ev_signal_start(loop, &shup);
	if (daemon_start(d, err, sizeof(err)) == -1)
		fatalx("%s", err);
	ev_run(loop, 0);
	rc = daemon_exit_code(d);
	ev_signal_stop(loop, &sterm);
	ev_signal_stop(loop, &sint);
	ev_signal_stop(loop, &shup);
	daemon_free(d);
	consul_cfg_free(&cfg);
	ev_loop_destroy(loop);
	log_info("exit %d", rc);
	return rc;
}
