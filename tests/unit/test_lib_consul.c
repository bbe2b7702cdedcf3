/*
 * test_lib_consul.c - the Consul client against the agent simulator (tests/consul_sim/consul_sim.py,
 * or $HC_CONSUL_SIM), started with fork/exec per group and stopped in teardown.
 *
 * Nothing here asserts on wall time. Loops run until a condition holds, with a generous guard against
 * hanging; the only timing check is a lower bound (retries are spaced by at least min_backoff), which
 * a slow machine cannot break.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <ev.h>

#include "atomicfile.h"
#include "consul.h"
#include "json.h"

#define GUARD		60.0	/* seconds before a wait is declared hung */
#define MASTER_TOKEN	"3f7a1b2c-master-token"

struct sim {
	pid_t	 pid;
	int	 http, https, control;
	char	 dir[64];
	char	 portfile[128];
	char	 sock[128];
	char	 cert[128], key[128], ca[128];
};

static struct ev_loop *loop;
static struct sim sim;			/* the group's simulator */
static struct sim sim2;			/* a test's own, restartable simulator */
static struct consul_client *ctl;	/* control API client of the current sim */

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
}

/* Runs the loop until *flag becomes true (or pred(arg)), at most GUARD seconds. */
static bool
run_until(bool (*pred)(void *), void *arg)
{
	double deadline = now() + GUARD;
	ev_timer tick;
	bool ok;

	ev_timer_init(&tick, tick_cb, 0.02, 0.02);
	ev_timer_start(loop, &tick);
	while (!(ok = pred(arg)) && now() < deadline)
		ev_run(loop, EVRUN_ONCE);
	ev_timer_stop(loop, &tick);
	return ok;
}

static bool
flag_set(void *arg)
{
	return *(bool *)arg;
}

/* ---- simulator process ---- */

static int
free_port(void)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int fd, port;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static const char *
sim_script(void)
{
	const char *s = getenv("HC_CONSUL_SIM");

	return s != NULL && *s != '\0' ? s : TOP_SRCDIR "/tests/consul_sim/consul_sim.py";
}

static const char *
python(void)
{
	const char *p = getenv("HC_PYTHON");

	return p != NULL && *p != '\0' ? p : "/usr/bin/python3";
}

static int
run_cmd(const char *cmd)
{
	int rc = system(cmd);

	return rc == -1 || !WIFEXITED(rc) ? -1 : WEXITSTATUS(rc);
}

/* A CA and a server certificate for DNS name consul.test only (no IP SAN). */
static int
make_certs(struct sim *s)
{
	char cmd[2048];

	snprintf(s->ca, sizeof(s->ca), "%s/ca.pem", s->dir);
	snprintf(s->cert, sizeof(s->cert), "%s/server.pem", s->dir);
	snprintf(s->key, sizeof(s->key), "%s/server.key", s->dir);
	snprintf(cmd, sizeof(cmd),
	    "cd '%s' && "
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
	    "-out ca.pem -days 2 -subj /CN=test-ca >/dev/null 2>&1 && "
	    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key "
	    "-out server.csr -subj /CN=consul.test >/dev/null 2>&1 && "
	    "printf 'subjectAltName=DNS:consul.test\\n' > ext.cnf && "
	    "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
	    "-extfile ext.cnf -out server.pem >/dev/null 2>&1", s->dir);
	return run_cmd(cmd);
}

/* Starts a simulator; http_port 0 picks one. Returns 0 when its port file is written. */
static int
sim_start(struct sim *s, int http_port, bool extras)
{
	char httpaddr[64], json_err[256], *data;
	const char *argv[20];
	double deadline;
	json_t *root;
	int64_t v;
	size_t len;
	int i = 0, status;

	snprintf(s->portfile, sizeof(s->portfile), "%s/ports.%d.json", s->dir, http_port);
	unlink(s->portfile);
	snprintf(httpaddr, sizeof(httpaddr), "127.0.0.1:%d", http_port);
	argv[i++] = python();
	argv[i++] = sim_script();
	argv[i++] = "--http-addr";
	argv[i++] = httpaddr;
	argv[i++] = "--control-addr";
	argv[i++] = "127.0.0.1:0";
	argv[i++] = "--port-file";
	argv[i++] = s->portfile;
	argv[i++] = "--acl-master-token";
	argv[i++] = MASTER_TOKEN;
	if (extras) {
		snprintf(s->sock, sizeof(s->sock), "%s/agent.sock", s->dir);
		argv[i++] = "--unix-socket";
		argv[i++] = s->sock;
		argv[i++] = "--https-addr";
		argv[i++] = "127.0.0.1:0";
		argv[i++] = "--tls-cert";
		argv[i++] = s->cert;
		argv[i++] = "--tls-key";
		argv[i++] = s->key;
	}
	argv[i] = NULL;
	if ((s->pid = fork()) == -1)
		return -1;
	if (s->pid == 0) {
		char log[160];
		int fd;

		setpgid(0, 0);
		/* Dies with the test even when the test is killed before its teardown. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		snprintf(log, sizeof(log), "%s/sim.log", s->dir);
		if ((fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600)) != -1) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		execv(argv[0], (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	deadline = now() + GUARD;
	while (now() < deadline) {
		if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
			s->pid = 0;
			fprintf(stderr, "simulator exited early, see %s/sim.log\n", s->dir);
			return -1;
		}
		if (access(s->portfile, R_OK) == 0 &&
		    read_file_capped(s->portfile, 4096, &data, &len, json_err, sizeof(json_err)) == 0) {
			if (json_parse(data, len, &root, json_err, sizeof(json_err)) == 0) {
				free(data);
				s->http = json_get_int(root, "", "http", JSON_REQ, 1, 65535, &v, json_err,
				    sizeof(json_err)) == 1 ? (int)v : 0;
				s->control = json_get_int(root, "", "control", JSON_REQ, 1, 65535, &v,
				    json_err, sizeof(json_err)) == 1 ? (int)v : 0;
				s->https = json_get_int(root, "", "https", JSON_OPT, 1, 65535, &v,
				    json_err, sizeof(json_err)) == 1 ? (int)v : 0;
				json_decref(root);
				return s->http != 0 && s->control != 0 ? 0 : -1;
			}
			free(data);
		}
		usleep(20000);
	}
	return -1;
}

static void
sim_stop(struct sim *s)
{
	int i, status;

	if (s->pid <= 0)
		return;
	kill(-s->pid, SIGTERM);
	for (i = 0; i < 250; i++) {
		if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
			s->pid = 0;
			return;
		}
		usleep(20000);
	}
	kill(-s->pid, SIGKILL);
	waitpid(s->pid, &status, 0);
	s->pid = 0;
}

/* ---- clients and synchronous helpers ---- */

/*
 * Every client a test makes is tracked so that teardown frees what a failed test left behind: its
 * callbacks point into that test's dead stack frame and must never run again.
 */
static struct consul_client *tracked[32];

static struct consul_client *
track(struct consul_client *c)
{
	size_t i;

	for (i = 0; i < sizeof(tracked) / sizeof(tracked[0]); i++) {
		if (tracked[i] == NULL) {
			tracked[i] = c;
			return c;
		}
	}
	fail_msg("too many clients");
	return c;
}

static void
untrack(struct consul_client *c)
{
	size_t i;

	for (i = 0; i < sizeof(tracked) / sizeof(tracked[0]); i++)
		if (tracked[i] == c)
			tracked[i] = NULL;
}

static void
cfree(struct consul_client *c)
{
	untrack(c);
	consul_client_free(c);
}

static struct consul_client *
client_for(const char *addr, const char *token, size_t max_body)
{
	struct consul_client *c;
	struct consul_cfg cfg;
	char err[256];

	memset(&cfg, 0, sizeof(cfg));
	cfg.ssl_verify = true;
	assert_int_equal(consul_cfg_set_addr(&cfg, addr, err, sizeof(err)), 0);
	if (token != NULL)
		assert_int_equal(consul_cfg_set_token(&cfg, token), 0);
	cfg.max_body = max_body;
	c = consul_client_new(loop, &cfg, err, sizeof(err));
	consul_cfg_free(&cfg);
	assert_non_null(c);
	return track(c);
}

static struct consul_client *
agent_client(const struct sim *s)
{
	char addr[64];

	snprintf(addr, sizeof(addr), "127.0.0.1:%d", s->http);
	return client_for(addr, MASTER_TOKEN, 0);
}

struct result {
	bool	 done;
	int	 status;
	char	*body;
	size_t	 len;
	uint64_t index;
	char	 hash[128];
	char	 error[256];
	double	 at;
};

static bool in_request;		/* set around consul_request: a callback must never see it */
static bool cb_inside_request;

static void
result_reset(struct result *r)
{
	free(r->body);
	memset(r, 0, sizeof(*r));
}

static void
result_fill(struct result *r, const struct consul_resp *resp)
{
	if (in_request)
		cb_inside_request = true;
	free(r->body);
	r->done = true;
	r->status = resp->status;
	r->body = strndup(resp->body, resp->len);
	r->len = resp->len;
	r->index = resp->index;
	snprintf(r->hash, sizeof(r->hash), "%s", resp->content_hash != NULL ? resp->content_hash : "");
	snprintf(r->error, sizeof(r->error), "%s", resp->error != NULL ? resp->error : "");
	r->at = now();
}

static void
result_cb(void *arg, const struct consul_resp *resp)
{
	result_fill(arg, resp);
}

static struct consul_req *
start_req(struct consul_client *c, const char *method, const char *path, const char *body,
    double timeout, struct result *r)
{
	struct consul_req *req;

	result_reset(r);
	in_request = true;
	req = consul_request(c, method, path, body, body != NULL ? strlen(body) : 0, timeout, result_cb,
	    r);
	in_request = false;
	assert_non_null(req);
	assert_false(r->done);
	return req;
}

static void
do_req(struct consul_client *c, const char *method, const char *path, const char *body,
    struct result *r)
{
	start_req(c, method, path, body, 30, r);
	assert_true(run_until(flag_set, &r->done));
}

/* The simulator's log of agent requests on path: a JSON array of {Method, Path, Query, Token}. */
static json_t *
sim_requests(const char *path)
{
	struct result r = { 0 };
	char q[512], enc[256], err[256];
	json_t *v;

	assert_int_equal(consul_urlencode(path, enc, sizeof(enc)), 0);
	snprintf(q, sizeof(q), "/_sim/requests?path=%s", enc);
	do_req(ctl, "GET", q, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(json_parse(r.body, r.len, &v, err, sizeof(err)), 0);
	assert_true(json_is_array(v));
	result_reset(&r);
	return v;
}

/* Requests on exactly path whose query holds needle (NULL: any). */
static size_t
count_requests(const char *path, const char *needle)
{
	json_t *all = sim_requests(path), *e;
	const char *p, *q;
	char err[64];
	size_t i, n = 0;

	json_array_foreach(all, i, e) {
		if (json_get_str(e, "", "Path", JSON_REQ, &p, err, sizeof(err)) != 1 ||
		    strcmp(p, path) != 0)
			continue;
		q = "";
		json_get_str(e, "", "Query", JSON_OPT, &q, err, sizeof(err));
		if (needle == NULL || strstr(q, needle) != NULL)
			n++;
	}
	json_decref(all);
	return n;
}

/* Requests on exactly path whose query holds needle (NULL: any) and that carried token ("" : none). */
static size_t
count_token(const char *path, const char *needle, const char *token)
{
	json_t *all = sim_requests(path), *e;
	const char *p, *q, *t;
	char err[64];
	size_t i, n = 0;

	json_array_foreach(all, i, e) {
		if (json_get_str(e, "", "Path", JSON_REQ, &p, err, sizeof(err)) != 1 ||
		    strcmp(p, path) != 0)
			continue;
		q = t = "";
		json_get_str(e, "", "Query", JSON_OPT, &q, err, sizeof(err));
		json_get_str(e, "", "Token", JSON_OPT, &t, err, sizeof(err));
		if ((needle == NULL || strstr(q, needle) != NULL) && strcmp(t, token) == 0)
			n++;
	}
	json_decref(all);
	return n;
}

static void
sim_ctl(const char *method, const char *path, const char *body)
{
	struct result r = { 0 };

	do_req(ctl, method, path, body, &r);
	assert_int_equal(r.status, 200);
	result_reset(&r);
}

static char *
create_intention(struct consul_client *c, const char *src, const char *dst)
{
	struct result r = { 0 };
	char body[256], err[256];
	const char *id;
	json_t *v;
	char *out;

	snprintf(body, sizeof(body), "{\"SourceName\":\"%s\",\"DestinationName\":\"%s\","
	    "\"SourceType\":\"consul\",\"Action\":\"allow\"}", src, dst);
	do_req(c, "POST", "/v1/connect/intentions", body, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(json_parse(r.body, r.len, &v, err, sizeof(err)), 0);
	assert_int_equal(json_get_str(v, "", "ID", JSON_REQ, &id, err, sizeof(err)), 1);
	out = strdup(id);
	json_decref(v);
	result_reset(&r);
	return out;
}

/* ---- fixtures ---- */

static int
group_setup(void **state)
{
	snprintf(sim.dir, sizeof(sim.dir), "/tmp/test_lib_consul.XXXXXX");
	if (mkdtemp(sim.dir) == NULL || make_certs(&sim) != 0)
		return -1;
	if (sim_start(&sim, 0, true) == -1)
		return -1;
	return 0;
}

static int
group_teardown(void **state)
{
	char cmd[128];

	sim_stop(&sim);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", sim.dir);
	run_cmd(cmd);
	return 0;
}

static int
setup(void **state)
{
	char addr[64];

	if ((loop = ev_loop_new(EVFLAG_AUTO)) == NULL)
		return -1;
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", sim.control);
	ctl = client_for(addr, NULL, 0);
	sim_ctl("DELETE", "/_sim/fault", NULL);
	return 0;
}

static int
teardown(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(tracked) / sizeof(tracked[0]); i++) {
		if (tracked[i] != NULL)
			consul_client_free(tracked[i]);
		tracked[i] = NULL;
	}
	ctl = NULL;
	sim_stop(&sim2);
	ev_loop_destroy(loop);
	loop = NULL;
	return 0;
}

/* ---- tests ---- */

static void
test_get_post_and_token(void **state)
{
	struct consul_client *c = agent_client(&sim);
	struct result r = { 0 };
	char path[128], err[256];
	const char *s, *tok, *q;
	json_t *v, *log, *e;
	char *id;
	size_t i, seen = 0;

	id = create_intention(c, "web", "db");
	snprintf(path, sizeof(path), "/v1/connect/intentions/%s", id);
	do_req(c, "GET", path, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(json_parse(r.body, r.len, &v, err, sizeof(err)), 0);
	assert_int_equal(json_get_str(v, "", "SourceName", JSON_REQ, &s, err, sizeof(err)), 1);
	assert_string_equal(s, "web");
	assert_int_equal(json_get_str(v, "", "DestinationName", JSON_REQ, &s, err, sizeof(err)), 1);
	assert_string_equal(s, "db");
	json_decref(v);
	assert_false(cb_inside_request);

	/* The token travels as X-Consul-Token, never in the query string. */
	log = sim_requests(path);
	json_array_foreach(log, i, e) {
		assert_int_equal(json_get_str(e, "", "Token", JSON_REQ, &tok, err, sizeof(err)), 1);
		assert_string_equal(tok, MASTER_TOKEN);
		q = "";
		json_get_str(e, "", "Query", JSON_OPT, &q, err, sizeof(err));
		assert_null(strstr(q, "token"));
		seen++;
	}
	assert_int_equal(seen, 1);
	json_decref(log);

	/* Without a token the agent refuses (ACLs on): the client reports the status as is. */
	{
		char addr[64];
		struct consul_client *anon;

		snprintf(addr, sizeof(addr), "127.0.0.1:%d", sim.http);
		anon = client_for(addr, NULL, 0);
		do_req(anon, "POST", "/v1/connect/intentions",
		    "{\"SourceName\":\"a\",\"DestinationName\":\"b\",\"SourceType\":\"consul\","
		    "\"Action\":\"deny\"}", &r);
		assert_int_equal(r.status, 403);
		assert_string_equal(r.error, "");
		cfree(anon);
	}
	result_reset(&r);
	free(id);
	cfree(c);
}

struct wstate {
	int		 calls;
	int		 failures;
	struct result	 last;
	uint64_t	 indexes[64];
	double		 fail_at[64];
	bool		 stop_in_cb;
	bool		 free_in_cb;
	struct consul_watch *w;
	struct consul_client *c;
};

static void
watch_cb(void *arg, const struct consul_resp *resp)
{
	struct wstate *ws = arg;

	result_fill(&ws->last, resp);
	if (resp->status < 200 || resp->status > 299) {
		if (ws->failures < 64)
			ws->fail_at[ws->failures] = now();
		ws->failures++;
	} else if (ws->calls - ws->failures < 64)
		ws->indexes[ws->calls - ws->failures] = resp->index;
	ws->calls++;
	if (ws->stop_in_cb)
		consul_watch_stop(ws->w);
	if (ws->free_in_cb)
		cfree(ws->c);
}

struct until_calls {
	struct wstate	*ws;
	int		 n;
};

static bool
calls_reached(void *arg)
{
	struct until_calls *u = arg;

	return u->ws->calls >= u->n;
}

static void
wait_calls(struct wstate *ws, int n)
{
	struct until_calls u = { ws, n };

	assert_true(run_until(calls_reached, &u));
}

struct until_reqs {
	const char	*path;
	const char	*needle;
	size_t		 n;
	double		 next;
};

static bool
reqs_reached(void *arg)
{
	struct until_reqs *u = arg;

	/* Ask the simulator at most every 100 ms. */
	if (now() < u->next)
		return false;
	u->next = now() + 0.1;
	return count_requests(u->path, u->needle) >= u->n;
}

static void
wait_requests(const char *path, const char *needle, size_t n)
{
	struct until_reqs u = { path, needle, n, 0 };

	assert_true(run_until(reqs_reached, &u));
}

static void
test_watch_index_blocking(void **state)
{
	struct consul_watch_opts o = { .kind = CONSUL_WATCH_INDEX, .wait = "1s" };
	struct consul_client *c = agent_client(&sim);
	struct wstate ws = { 0 };
	char needle[64], *id;
	uint64_t first;

	ws.w = consul_watch_start(c, "/v1/connect/intentions", &o, watch_cb, &ws);
	assert_non_null(ws.w);
	wait_calls(&ws, 1);
	assert_int_equal(ws.last.status, 200);
	first = ws.last.index;
	assert_true(first > 0);
	/* The next requests block on that index; when one times out unchanged there is no callback. */
	snprintf(needle, sizeof(needle), "index=%" PRIu64 "&wait=1s", first);
	wait_requests("/v1/connect/intentions", needle, 2);
	assert_int_equal(ws.calls, 1);
	/* A change wakes the blocked request: a callback with a bigger index and the new data. */
	id = create_intention(c, "api", "billing");
	wait_calls(&ws, 2);
	assert_int_equal(ws.last.status, 200);
	assert_true(ws.last.index > first);
	assert_non_null(strstr(ws.last.body, id));
	free(id);
	/* Refresh: asks again at once without an index, and delivers even an unchanged index. */
	consul_watch_refresh(ws.w);
	wait_calls(&ws, 3);
	assert_int_equal(ws.last.index, ws.indexes[1]);
	consul_watch_stop(ws.w);
	result_reset(&ws.last);
	cfree(c);
}

static void
test_watch_hash_blocking(void **state)
{
	struct consul_watch_opts o = { .kind = CONSUL_WATCH_HASH, .wait = "1s" };
	struct consul_client *c = agent_client(&sim);
	struct wstate ws = { 0 };
	struct result r = { 0 };
	char needle[160], first[128];

	do_req(c, "PUT", "/v1/agent/service/register",
	    "{\"ID\":\"hashweb\",\"Name\":\"hashweb\",\"Port\":8080}", &r);
	assert_int_equal(r.status, 200);
	ws.w = consul_watch_start(c, "/v1/agent/service/hashweb", &o, watch_cb, &ws);
	wait_calls(&ws, 1);
	assert_int_equal(ws.last.status, 200);
	assert_true(strlen(ws.last.hash) > 0);
	snprintf(first, sizeof(first), "%s", ws.last.hash);
	snprintf(needle, sizeof(needle), "hash=%s&wait=1s", first);
	wait_requests("/v1/agent/service/hashweb", needle, 2);
	assert_int_equal(ws.calls, 1);
	do_req(c, "PUT", "/v1/agent/service/register",
	    "{\"ID\":\"hashweb\",\"Name\":\"hashweb\",\"Port\":8081}", &r);
	assert_int_equal(r.status, 200);
	wait_calls(&ws, 2);
	assert_int_equal(ws.last.status, 200);
	assert_string_not_equal(ws.last.hash, first);
	assert_non_null(strstr(ws.last.body, "8081"));
	consul_watch_stop(ws.w);
	result_reset(&ws.last);
	result_reset(&r);
	cfree(c);
}

/*
 * The agent comes back with fresh state (a restart or snapshot restore): its index is below ours. The
 * watch must deliver that and then ask without an index instead of blocking on a future index.
 */
static void
test_watch_index_backwards(void **state)
{
	struct consul_watch_opts o = { .kind = CONSUL_WATCH_INDEX, .wait = "1s",
	    .min_backoff = 0.05, .max_backoff = 0.2 };
	struct sim *s2 = &sim2;
	struct consul_client *c, *saved_ctl = ctl;
	struct wstate ws = { 0 };
	char addr[64], err[64];
	uint64_t high, old = 0;
	const char *q;
	json_t *log;
	int port = free_port(), n;

	snprintf(s2->dir, sizeof(s2->dir), "%s", sim.dir);
	assert_int_equal(sim_start(s2, port, false), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", s2->control);
	ctl = client_for(addr, NULL, 0);
	c = agent_client(s2);
	ws.w = consul_watch_start(c, "/v1/connect/intentions", &o, watch_cb, &ws);
	wait_calls(&ws, 1);
	for (n = 0; n < 5; n++) {
		char src[32];

		snprintf(src, sizeof(src), "back%d", n);
		free(create_intention(c, src, "dst"));
	}
	/* Wait until the watch has seen the last change. */
	wait_calls(&ws, 2);
	while (ws.calls - ws.failures < 6 && ws.last.index < ws.indexes[0] + 5)
		wait_calls(&ws, ws.calls + 1);
	high = ws.last.index;
	assert_true(high >= ws.indexes[0] + 5);

	cfree(ctl);
	sim_stop(s2);
	assert_int_equal(sim_start(s2, port, false), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", s2->control);
	ctl = client_for(addr, NULL, 0);
	/*
	 * Fresh agent: its index is low. The watch's first request to it still carries the old index;
	 * the answer's index is lower: delivered, and the next request has no index (reset to 0).
	 */
	for (;;) {
		wait_calls(&ws, ws.calls + 1);
		if (ws.last.status == 200 && ws.last.index < high)
			break;
	}
	wait_requests("/v1/connect/intentions", NULL, 2);
	log = sim_requests("/v1/connect/intentions");
	assert_true(json_array_size(log) >= 2);
	q = "";
	json_get_str(json_array_get(log, 0), "", "Query", JSON_OPT, &q, err, sizeof(err));
	assert_true(sscanf(q, "index=%" SCNu64, &old) == 1);
	assert_true(old >= high);
	assert_true(ws.last.index < old);
	q = "";
	json_get_str(json_array_get(log, 1), "", "Query", JSON_OPT, &q, err, sizeof(err));
	assert_null(strstr(q, "index="));
	json_decref(log);
	consul_watch_stop(ws.w);
	result_reset(&ws.last);
	cfree(c);
	cfree(ctl);
	ctl = saved_ctl;
	sim_stop(s2);
}

/* Failures are delivered and retried with back-off: spaced by at least min_backoff, never a hot loop. */
static void
test_watch_backoff(void **state)
{
	struct consul_watch_opts o = { .kind = CONSUL_WATCH_INDEX, .wait = "1s",
	    .min_backoff = 0.1, .max_backoff = 0.4 };
	struct consul_client *c = agent_client(&sim);
	struct wstate ws = { 0 };
	size_t before, after;
	int i;

	sim_ctl("PUT", "/_sim/fault", "{\"Path\":\"/v1/connect/intentions\",\"Status\":500,"
	    "\"Body\":\"injected\"}");
	before = count_requests("/v1/connect/intentions", NULL);
	ws.w = consul_watch_start(c, "/v1/connect/intentions", &o, watch_cb, &ws);
	wait_calls(&ws, 6);
	assert_int_equal(ws.failures, 6);
	assert_int_equal(ws.last.status, 500);
	assert_string_equal(ws.last.body, "injected");
	for (i = 1; i < 6; i++)
		assert_true(ws.fail_at[i] - ws.fail_at[i - 1] >= 0.1 * 0.9);
	/* Every request the agent saw was reported: none hidden (at most one more in flight). */
	after = count_requests("/v1/connect/intentions", NULL);
	assert_true(after - before >= 6 && after - before <= (size_t)ws.calls + 1);
	/* The agent heals: the next answer is a success, delivered. */
	sim_ctl("DELETE", "/_sim/fault", NULL);
	while (ws.last.status != 200)
		wait_calls(&ws, ws.calls + 1);
	consul_watch_stop(ws.w);
	result_reset(&ws.last);
	cfree(c);
}

/* An outage (listeners closed: connection refused) is reported with status 0, and retried. */
static void
test_outage_status0(void **state)
{
	struct consul_watch_opts o = { .kind = CONSUL_WATCH_INDEX, .wait = "1s",
	    .min_backoff = 0.05, .max_backoff = 0.2 };
	struct consul_client *c = agent_client(&sim);
	struct wstate ws = { 0 };
	struct result r = { 0 };
	char addr[64];
	struct consul_client *dead;

	/* Nothing listens on a fresh free port: a transport error, status 0 and a text. */
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", free_port());
	dead = client_for(addr, NULL, 0);
	do_req(dead, "GET", "/v1/agent/self", NULL, &r);
	assert_int_equal(r.status, 0);
	assert_true(strlen(r.error) > 0);
	assert_int_equal(r.len, 0);
	cfree(dead);

	ws.w = consul_watch_start(c, "/v1/connect/intentions", &o, watch_cb, &ws);
	wait_calls(&ws, 1);
	assert_int_equal(ws.last.status, 200);
	sim_ctl("PUT", "/_sim/outage", "{\"Seconds\":1}");
	while (ws.last.status != 0)
		wait_calls(&ws, ws.calls + 1);
	assert_true(strlen(ws.last.error) > 0);
	/* When the outage ends the watch blocks again (no callback while nothing changes) and a change
	 * comes through. */
	wait_requests("/v1/connect/intentions", "wait=1s", count_requests("/v1/connect/intentions",
	    "wait=1s") + 1);
	free(create_intention(c, "after", "outage"));
	while (ws.last.status != 200)
		wait_calls(&ws, ws.calls + 1);
	assert_non_null(strstr(ws.last.body, "outage"));
	consul_watch_stop(ws.w);
	result_reset(&ws.last);
	result_reset(&r);
	cfree(c);
}

static void
test_unix_socket(void **state)
{
	struct result r = { 0 };
	struct consul_client *c;
	char addr[160];

	snprintf(addr, sizeof(addr), "unix://%s", sim.sock);
	c = client_for(addr, MASTER_TOKEN, 0);
	do_req(c, "GET", "/v1/agent/self", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "Config"));
	result_reset(&r);
	cfree(c);
}

static int
https_get(const char *cacert, const char *server_name, bool verify, struct result *r)
{
	struct consul_client *c;
	struct consul_cfg cfg;
	char addr[64], err[256];

	memset(&cfg, 0, sizeof(cfg));
	cfg.ssl_verify = verify;
	snprintf(addr, sizeof(addr), "https://127.0.0.1:%d", sim.https);
	assert_int_equal(consul_cfg_set_addr(&cfg, addr, err, sizeof(err)), 0);
	assert_true(cfg.ssl);
	consul_cfg_set_token(&cfg, MASTER_TOKEN);
	cfg.cacert = cacert != NULL ? strdup(cacert) : NULL;
	cfg.tls_server_name = server_name != NULL ? strdup(server_name) : NULL;
	c = consul_client_new(loop, &cfg, err, sizeof(err));
	consul_cfg_free(&cfg);
	assert_non_null(c);
	track(c);
	do_req(c, "GET", "/v1/agent/self", NULL, r);
	cfree(c);
	return r->status;
}

static void
test_https(void **state)
{
	struct result r = { 0 };

	if (sim.https == 0)
		skip();
	/* The certificate names consul.test only: verified through CONSUL_TLS_SERVER_NAME. */
	assert_int_equal(https_get(sim.ca, "consul.test", true, &r), 200);
	assert_non_null(strstr(r.body, "Config"));
	/* Without the server name, 127.0.0.1 does not match the certificate. */
	assert_int_equal(https_get(sim.ca, NULL, true, &r), 0);
	assert_true(strlen(r.error) > 0);
	/* Another name than the certificate's fails too. */
	assert_int_equal(https_get(sim.ca, "other.test", true, &r), 0);
	/* Without our CA the chain is unknown. */
	assert_int_equal(https_get(NULL, "consul.test", true, &r), 0);
	/* CONSUL_HTTP_SSL_VERIFY=false turns the checks off. */
	assert_int_equal(https_get(NULL, NULL, false, &r), 200);
	result_reset(&r);
}

static void
test_body_cap(void **state)
{
	struct consul_client *c = agent_client(&sim), *small;
	struct result r = { 0 };
	char addr[64], want[64];
	size_t full;

	free(create_intention(c, "cap1", "cap2"));
	do_req(c, "GET", "/v1/connect/intentions", NULL, &r);
	assert_int_equal(r.status, 200);
	full = r.len;
	assert_true(full > 100);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", sim.http);
	/* Exactly the size: fine. */
	small = client_for(addr, MASTER_TOKEN, full);
	do_req(small, "GET", "/v1/connect/intentions", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.len, full);
	cfree(small);
	/* One byte less: the request fails, nothing of the body is handed over. */
	small = client_for(addr, MASTER_TOKEN, full - 1);
	do_req(small, "GET", "/v1/connect/intentions", NULL, &r);
	assert_int_equal(r.status, 0);
	snprintf(want, sizeof(want), "response body exceeds %zu bytes", full - 1);
	assert_string_equal(r.error, want);
	assert_int_equal(r.len, 0);
	/* The client stays usable. */
	do_req(small, "GET", "/v1/agent/service/nonexistent", NULL, &r);
	assert_int_equal(r.status, 404);
	cfree(small);
	result_reset(&r);
	cfree(c);
}

static void
never_cb(void *arg, const struct consul_resp *resp)
{
	fail_msg("callback of a cancelled request called (status %d)", resp->status);
}

static void
test_cancel(void **state)
{
	struct consul_client *c = agent_client(&sim);
	struct result r = { 0 }, probe = { 0 };
	struct consul_req *req;
	char path[128];

	/* Cancelled before the loop ever ran. */
	req = consul_request(c, "GET", "/v1/agent/self", NULL, 0, 10, never_cb, NULL);
	assert_non_null(req);
	consul_cancel(req);
	/* Cancelled while blocked in the agent. */
	do_req(c, "GET", "/v1/connect/intentions", NULL, &r);
	snprintf(path, sizeof(path), "/v1/connect/intentions?index=%" PRIu64 "&wait=30s", r.index);
	req = consul_request(c, "GET", path, NULL, 0, 60, never_cb, NULL);
	assert_non_null(req);
	wait_requests("/v1/connect/intentions", "wait=30s", 1);
	consul_cancel(req);
	/* The loop keeps running other requests; the cancelled callbacks never come. */
	do_req(c, "GET", "/v1/agent/self", NULL, &probe);
	assert_int_equal(probe.status, 200);
	free(create_intention(c, "cancel", "me"));
	do_req(c, "GET", "/v1/agent/self", NULL, &probe);
	result_reset(&r);
	result_reset(&probe);
	cfree(c);
}

static void
test_free_in_flight(void **state)
{
	struct consul_watch_opts o = { .kind = CONSUL_WATCH_INDEX, .wait = "30s" };
	struct consul_client *c = agent_client(&sim);
	struct wstate ws = { 0 };
	int i;

	ws.w = consul_watch_start(c, "/v1/connect/intentions", &o, watch_cb, &ws);
	wait_calls(&ws, 1);
	wait_requests("/v1/connect/intentions", "wait=30s", 1);
	for (i = 0; i < 5; i++)
		assert_non_null(consul_request(c, "GET", "/v1/agent/self", NULL, 0, 10, never_cb,
		    NULL));
	assert_non_null(consul_request(c, "POST", "/v1/connect/intentions", "{}", 2, 10, never_cb,
	    NULL));
	/* One blocked in the agent, six not yet sent: all dropped, no callback, no leak (ASan). */
	cfree(c);
	assert_int_equal(ws.calls, 1);
	result_reset(&ws.last);
}

static void
test_stop_and_free_in_callback(void **state)
{
	struct consul_watch_opts o = { .kind = CONSUL_WATCH_INDEX, .wait = "1s" };
	struct consul_client *c = agent_client(&sim);
	struct wstate ws = { 0 }, ws2 = { 0 };
	struct result probe = { 0 };
	char path[128];

	sim_ctl("DELETE", "/_sim/requests", NULL);
	ws.stop_in_cb = true;
	ws.w = consul_watch_start(c, "/v1/agent/services", &o, watch_cb, &ws);
	wait_calls(&ws, 1);
	/* Let the loop run a few more round trips: the stopped watch never asks again. */
	do_req(c, "GET", "/v1/agent/self", NULL, &probe);
	do_req(c, "GET", "/v1/agent/self", NULL, &probe);
	assert_int_equal(ws.calls, 1);
	assert_int_equal(count_requests("/v1/agent/services", NULL), 1);

	/* Freeing the whole client from a watch callback, with other requests in flight. */
	do_req(c, "GET", "/v1/connect/intentions", NULL, &probe);
	snprintf(path, sizeof(path), "/v1/connect/intentions?index=%" PRIu64 "&wait=30s", probe.index);
	ws2.free_in_cb = true;
	ws2.c = c;
	ws2.w = consul_watch_start(c, "/v1/agent/services", &o, watch_cb, &ws2);
	assert_non_null(consul_request(c, "GET", path, NULL, 0, 60, never_cb, NULL));
	wait_calls(&ws2, 1);
	/* The client is gone; the loop still runs other things cleanly. */
	do_req(ctl, "GET", "/_sim/requests", NULL, &probe);
	assert_int_equal(ws2.calls, 1);
	result_reset(&probe);
	result_reset(&ws.last);
	result_reset(&ws2.last);
}

/* Many requests at once over a few kept-alive connections: all complete. */
struct until_token {
	const char	*path;
	const char	*needle;
	const char	*token;
	size_t		 n;
	double		 next;
};

static bool
token_reached(void *arg)
{
	struct until_token *u = arg;

	if (now() < u->next)
		return false;
	u->next = now() + 0.1;
	return count_token(u->path, u->needle, u->token) >= u->n;
}

/*
 * A token rotation (SIGHUP): requests started after consul_client_set_token carry the new token, the
 * next round of a blocking watch too; a request in flight finishes with the old one (its header list
 * must outlive the swap); a token with a line break is refused and the old one stays.
 */
static void
test_set_token(void **state)
{
	struct consul_watch_opts o = { .kind = CONSUL_WATCH_INDEX, .wait = "1s" };
	struct consul_client *c = agent_client(&sim);
	struct until_token u = { "/v1/connect/intentions", "index=", "token-b-unit", 1, 0 };
	struct result r = { 0 }, slow = { 0 };
	struct wstate ws = { 0 };
	char err[256];
	int calls;

	sim_ctl("POST", "/_sim/acl/token",
	    "{\"SecretID\":\"token-b-unit\",\"Rules\":{\"intention_prefix\":{\"\":\"read\"},"
	    "\"agent_prefix\":{\"\":\"read\"}}}");
	sim_ctl("DELETE", "/_sim/requests", NULL);
	ws.w = consul_watch_start(c, "/v1/connect/intentions", &o, watch_cb, &ws);
	assert_non_null(ws.w);
	wait_calls(&ws, 1);
	assert_int_equal(ws.last.status, 200);
	/* (its next, blocking round may already be in flight with the old token) */
	assert_true(count_token("/v1/connect/intentions", NULL, MASTER_TOKEN) >= 1);
	assert_int_equal(count_token("/v1/connect/intentions", NULL, "token-b-unit"), 0);

	/* Started (not yet sent: the loop has not run) before the swap, answered after it. */
	sim_ctl("PUT", "/_sim/fault", "{\"Path\":\"/v1/agent/self\",\"LatencyMs\":300}");
	start_req(c, "GET", "/v1/agent/self", NULL, 30, &slow);
	assert_int_equal(consul_client_set_token(c, "token-b-unit", err, sizeof(err)), 0);
	err[0] = '\0';
	assert_int_equal(consul_client_set_token(c, "token-c\r\nX-Evil: 1", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "line break"));
	assert_true(run_until(flag_set, &slow.done));
	assert_int_equal(slow.status, 200);
	assert_int_equal(count_token("/v1/agent/self", NULL, MASTER_TOKEN), 1);
	assert_int_equal(count_token("/v1/agent/self", NULL, "token-b-unit"), 0);

	/* New requests carry B, and so does the watch's next blocking round; no round carries C. */
	do_req(c, "GET", "/v1/agent/self", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(count_token("/v1/agent/self", NULL, "token-b-unit"), 1);
	assert_true(run_until(token_reached, &u));
	calls = ws.calls;
	/* The watch did not see the swap as a change, nor fail with B. */
	assert_int_equal(ws.failures, 0);
	assert_int_equal(calls, 1);
	consul_watch_refresh(ws.w);
	wait_calls(&ws, 2);
	assert_int_equal(ws.last.status, 200);
	assert_int_equal(ws.failures, 0);
	assert_int_equal(count_token("/v1/connect/intentions", NULL, "token-c\r\nX-Evil: 1"), 0);

	/* NULL: no token at all from now on. */
	assert_int_equal(consul_client_set_token(c, NULL, err, sizeof(err)), 0);
	do_req(c, "GET", "/v1/agent/self", NULL, &r);
	assert_int_equal(r.status, 403);
	assert_int_equal(count_token("/v1/agent/self", NULL, ""), 1);

	consul_watch_stop(ws.w);
	sim_ctl("DELETE", "/_sim/fault", NULL);
	result_reset(&ws.last);
	result_reset(&r);
	result_reset(&slow);
	cfree(c);
}

static void
test_many_parallel(void **state)
{
	struct consul_client *c = agent_client(&sim);
	struct result r[40];
	int i, done;

	memset(r, 0, sizeof(r));
	for (i = 0; i < 40; i++)
		start_req(c, i % 2 ? "GET" : "PUT", i % 2 ? "/v1/agent/self" :
		    "/v1/agent/service/register", i % 2 ? NULL :
		    "{\"Name\":\"par\",\"ID\":\"par\",\"Port\":1}", 30, &r[i]);
	for (;;) {
		for (i = 0, done = 0; i < 40; i++)
			done += r[i].done;
		if (done == 40)
			break;
		ev_run(loop, EVRUN_ONCE);
	}
	for (i = 0; i < 40; i++) {
		assert_int_equal(r[i].status, 200);
		result_reset(&r[i]);
	}
	assert_false(cb_inside_request);
	cfree(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_get_post_and_token, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_index_blocking, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_hash_blocking, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_index_backwards, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_backoff, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outage_status0, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unix_socket, setup, teardown),
		cmocka_unit_test_setup_teardown(test_https, setup, teardown),
		cmocka_unit_test_setup_teardown(test_body_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop_and_free_in_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_parallel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_token, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	if (getenv("TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("lib_consul", tests, group_setup, group_teardown);
}
