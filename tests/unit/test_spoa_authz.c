/*
 * test_spoa_authz.c - decisions against the Consul agent simulator (tests/consul_sim), started here.
 *
 * Needs HC_TOP (the source tree, default TOP_SRCDIR) and HC_PYTHON (default /usr/bin/python3).
 * Control calls (intentions, faults, outage, request log) are blocking libcurl easy calls; the code
 * under test runs on a libev loop that the tests turn until an answer arrives.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <ev.h>
#include <jansson.h>
#include <malloc.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "authz.h"
#include "consul.h"
#include "metrics.h"

static pid_t sim_pid = -1;
static int http_port, control_port;
static char tmpdir[128];
static char trust_domain[128];
static struct ev_loop *loop;

/* ---- blocking HTTP to the simulator ---- */

struct body {
	char	*p;
	size_t	 n;
};

static size_t
body_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct body *b = arg;
	size_t n = size * nmemb;
	char *q = realloc(b->p, b->n + n + 1);

	if (q == NULL)
		return 0;
	memcpy(q + b->n, ptr, n);
	b->p = q;
	b->n += n;
	b->p[b->n] = '\0';
	return n;
}

/* Returns the HTTP status; *out gets the parsed JSON body (or NULL). */
static long
http(int port, const char *method, const char *path, const char *data, json_t **out)
{
	CURL *c = curl_easy_init();
	struct body b = { NULL, 0 };
	char url[1024];
	long status = 0;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	if (data != NULL)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, data);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	if (out != NULL)
		*out = b.p != NULL ? json_loads(b.p, JSON_DECODE_ANY, NULL) : NULL;
	free(b.p);
	return status;
}

static void
control(const char *method, const char *path, const char *data)
{
	long st = http(control_port, method, path, data, NULL);

	if (st < 200 || st >= 300)
		fail_msg("sim control %s %s -> %ld", method, path, st);
}

/* Number of requests the agent saw whose path starts with prefix. */
static size_t
agent_requests(const char *prefix)
{
	char path[256];
	json_t *j = NULL;
	size_t n;

	snprintf(path, sizeof(path), "/_sim/requests?path=%s", prefix);
	assert_int_equal(http(control_port, "GET", path, NULL, &j), 200);
	assert_true(json_is_array(j));
	n = json_array_size(j);
	json_decref(j);
	return n;
}

/* Creates an intention src -> dst; returns its ID (caller frees). */
static char *
intention(const char *src, const char *dst, const char *action)
{
	char data[256];
	json_t *j = NULL;
	char *id;

	snprintf(data, sizeof(data), "{\"SourceName\":\"%s\",\"DestinationName\":\"%s\",\"Action\":\"%s\","
	    "\"SourceType\":\"consul\"}", src, dst, action);
	assert_int_equal(http(http_port, "POST", "/v1/connect/intentions", data, &j), 200);
	assert_true(json_is_string(json_object_get(j, "ID")));
	id = strdup(json_string_value(json_object_get(j, "ID")));
	json_decref(j);
	return id;
}

static void
intention_delete(char *id)
{
	char path[256];

	snprintf(path, sizeof(path), "/v1/connect/intentions/%s", id);
	assert_int_equal(http(http_port, "DELETE", path, NULL, NULL), 200);
	free(id);
}

static void
uri_of(const char *svc, char *out, size_t outlen)
{
	snprintf(out, outlen, "spiffe://%s/ns/default/dc/dc1/svc/%s", trust_domain, svc);
}

/* ---- simulator lifecycle ---- */

static int
read_ports(const char *file)
{
	json_t *j = json_load_file(file, 0, NULL);

	if (j == NULL)
		return -1;
	http_port = (int)json_integer_value(json_object_get(j, "http"));
	control_port = (int)json_integer_value(json_object_get(j, "control"));
	json_decref(j);
	return http_port > 0 && control_port > 0 ? 0 : -1;
}

static int
sim_start(void **state)
{
	const char *top = getenv("HC_TOP") != NULL ? getenv("HC_TOP") : TOP_SRCDIR;
	const char *py = getenv("HC_PYTHON") != NULL ? getenv("HC_PYTHON") : "/usr/bin/python3";
	char sim[512], portfile[256], logfile[256];
	json_t *j = NULL;
	int i;

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_spoa_authz.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	snprintf(sim, sizeof(sim), "%s/tests/consul_sim/consul_sim.py", top);
	snprintf(portfile, sizeof(portfile), "%s/ports.json", tmpdir);
	snprintf(logfile, sizeof(logfile), "%s/sim.log", tmpdir);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	sim_pid = fork();
	if (sim_pid == 0) {
		FILE *f = freopen(logfile, "w", stderr);

		(void)f;
		setsid();
		execl(py, py, sim, "--http-addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0",
		    "--port-file", portfile, (char *)NULL);
		_exit(127);
	}
	for (i = 0; i < 400 && read_ports(portfile) == -1; i++) {
		if (waitpid(sim_pid, NULL, WNOHANG) == sim_pid) {
			fprintf(stderr, "simulator exited, see %s\n", logfile);
			sim_pid = -1;
			return -1;
		}
		usleep(50000);
	}
	if (http_port == 0)
		return -1;
	if (http(http_port, "GET", "/v1/agent/connect/ca/roots", NULL, &j) != 200 ||
	    !json_is_string(json_object_get(j, "TrustDomain")))
		return -1;
	snprintf(trust_domain, sizeof(trust_domain), "%s", json_string_value(json_object_get(j, "TrustDomain")));
	json_decref(j);
	loop = ev_loop_new(EVFLAG_AUTO);
	return 0;
}

static int
sim_stop(void **state)
{
	if (sim_pid > 0) {
		kill(-sim_pid, SIGTERM);
		kill(sim_pid, SIGTERM);
		waitpid(sim_pid, NULL, 0);
	}
	if (loop != NULL)
		ev_loop_destroy(loop);
	curl_global_cleanup();
	if (tmpdir[0] != '\0') {
		char path[256];

		snprintf(path, sizeof(path), "%s/ports.json", tmpdir);
		unlink(path);
		snprintf(path, sizeof(path), "%s/sim.log", tmpdir);
		unlink(path);
		rmdir(tmpdir);
	}
	return 0;
}

/* Each test: no faults, empty request log, a fresh metrics struct. */
static int
reset(void **state)
{
	json_t *j = NULL;
	size_t i;

	/* Leftovers of a failed test must not decide the next one. */
	if (http(http_port, "GET", "/v1/connect/intentions", NULL, &j) == 200)
		for (i = 0; i < json_array_size(j); i++) {
			json_t *id = json_object_get(json_array_get(j, i), "ID");

			if (json_is_string(id))
				intention_delete(strdup(json_string_value(id)));
		}
	json_decref(j);
	control("DELETE", "/_sim/fault", NULL);
	http(control_port, "DELETE", "/_sim/outage", NULL, NULL);
	control("DELETE", "/_sim/requests", NULL);
	memset(&spoa_metrics, 0, sizeof(spoa_metrics));
	return 0;
}

/* ---- the code under test ---- */

static void wait_watch(const char *target);

struct harness {
	struct consul_cfg	 cfg;
	struct consul_client	*consul;
	struct authz		*authz;
};

static void
harness_init(struct harness *h, double deadline, double ttl, double stale)
{
	struct authz_opts o;
	char err[256], addr[64];

	memset(h, 0, sizeof(*h));
	assert_int_equal(consul_cfg_from_env(&h->cfg, err, sizeof(err)), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", http_port);
	assert_int_equal(consul_cfg_set_addr(&h->cfg, addr, err, sizeof(err)), 0);
	h->consul = consul_client_new(loop, &h->cfg, err, sizeof(err));
	assert_non_null(h->consul);
	memset(&o, 0, sizeof(o));
	o.default_target = "db";
	o.deadline = deadline;
	o.ttl = ttl;
	o.stale_if_error = stale;
	o.max_entries = 1000;
	h->authz = authz_new(loop, h->consul, &o, err, sizeof(err));
	assert_non_null(h->authz);
	/* The first answer of the watch sets the baseline (and drops the cache once): wait for it. */
	wait_watch("db");
}

static void
harness_free(struct harness *h)
{
	authz_free(h->authz);
	consul_client_free(h->consul);
	consul_cfg_free(&h->cfg);
}

struct result {
	int	 done;
	bool	 allow;
	char	 reason[256];
	char	 source_app[64];
};

static void
done_cb(void *arg, const struct authz_decision *d)
{
	struct result *r = arg;

	r->done++;
	r->allow = d->allow;
	snprintf(r->reason, sizeof(r->reason), "%s", d->reason);
	if (getenv("HC_DEBUG") != NULL)
		fprintf(stderr, "decision: %s \"%s\"\n", d->allow ? "allow" : "deny", d->reason);
	snprintf(r->source_app, sizeof(r->source_app), "%s", d->source_app);
}

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

/* Turns the loop until *flag >= want or max seconds pass; returns whether it got there. */
static bool
run_until(const int *flag, int want, double max)
{
	double end = now() + max;
	ev_timer tick;

	ev_timer_init(&tick, tick_cb, 0.01, 0.01);
	ev_timer_start(loop, &tick);
	while (*flag < want && now() < end)
		ev_run(loop, EVRUN_ONCE);
	ev_timer_stop(loop, &tick);
	return *flag >= want;
}

/* Turns the loop for about secs (to let background work, like a watch, proceed). */
static void
run_for(double secs)
{
	int never = 0;

	(void)run_until(&never, 1, secs);
}

/* Asks one question by URI and waits for the answer; returns whether it was answered synchronously. */
static bool
ask(struct harness *h, const char *svc, const char *target, struct result *r)
{
	struct authz_query q;
	struct authz_pending *p;
	char uri[256];

	uri_of(svc, uri, sizeof(uri));
	memset(&q, 0, sizeof(q));
	memset(r, 0, sizeof(*r));
	q.uri = uri;
	q.uri_len = strlen(uri);
	q.target = target;
	q.target_len = target != NULL ? strlen(target) : 0;
	p = authz_check(h->authz, &q, done_cb, r);
	if (p == NULL) {
		assert_int_equal(r->done, 1);
		return true;
	}
	assert_int_equal(r->done, 0);
	if (!run_until(&r->done, 1, 10))
		fail_msg("no answer within 10 s");
	assert_int_equal(r->done, 1);
	return false;
}

/* Waits until the intentions watch of target is parked in a blocking query (its baseline is known). */
static void
wait_watch(const char *target)
{
	char prefix[128];
	double end = now() + 10;
	json_t *j = NULL;

	snprintf(prefix, sizeof(prefix), "/_sim/requests?path=/v1/connect/intentions/match");
	for (;;) {
		size_t i;
		bool parked = false;

		run_for(0.05);
		assert_int_equal(http(control_port, "GET", prefix, NULL, &j), 200);
		for (i = 0; i < json_array_size(j); i++) {
			json_t *q = json_object_get(json_array_get(j, i), "Query");
			const char *s = json_is_string(q) ? json_string_value(q) : "";
			char *dump = json_is_object(q) ? json_dumps(q, JSON_COMPACT) : NULL;

			if (strstr(s, "index=") != NULL || (dump != NULL && strstr(dump, "index") != NULL))
				if (strstr(s, target) != NULL || (dump != NULL && strstr(dump, target) != NULL))
					parked = true;
			free(dump);
		}
		json_decref(j);
		if (parked)
			return;
		if (now() > end)
			fail_msg("the intentions watch of %s never blocked", target);
	}
}

/* ---- tests ---- */

static void
test_allow_and_deny(void **state)
{
	struct harness h;
	struct result r;
	char *deny = intention("web", "db", "deny");
	char *allow = intention("api", "db", "allow");

	harness_init(&h, 5, 60, 300);
	assert_false(ask(&h, "web", NULL, &r));
	assert_false(r.allow);
	assert_non_null(strstr(r.reason, "Matched intention: DENY"));
	assert_string_equal(r.source_app, "web");
	assert_false(ask(&h, "api", "db", &r));
	assert_true(r.allow);
	assert_string_equal(r.source_app, "api");
	/* No intention, ACLs disabled: the agent allows by default. */
	assert_false(ask(&h, "billing", NULL, &r));
	assert_true(r.allow);
	assert_int_equal(agent_requests("/v1/agent/connect/authorize"), 3);
	/* The same questions again come from the cache: synchronous, no agent call. */
	assert_true(ask(&h, "web", NULL, &r));
	assert_false(r.allow);
	assert_true(ask(&h, "api", "db", &r));
	assert_true(r.allow);
	assert_int_equal(agent_requests("/v1/agent/connect/authorize"), 3);
	assert_int_equal(spoa_metrics.cache_hits, 2);
	assert_int_equal(spoa_metrics.cache_misses, 3);
	assert_int_equal(spoa_metrics.decisions_allow, 3);
	assert_int_equal(spoa_metrics.decisions_deny, 2);
	harness_free(&h);
	intention_delete(deny);
	intention_delete(allow);
}

static void
test_certificate_identity(void **state)
{
	struct harness h;
	struct result r;
	struct authz_query q;
	json_t *j = NULL;
	const char *pem;
	BIO *bio;
	X509 *x;
	unsigned char *der = NULL;
	int len;
	json_t *reqs = NULL;
	char *dump;

	assert_int_equal(http(control_port, "POST", "/_sim/cert", "{\"Service\":\"web\"}", &j), 200);
	pem = json_string_value(json_object_get(j, "CertPEM"));
	assert_non_null(pem);
	bio = BIO_new_mem_buf(pem, -1);
	x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	assert_non_null(x);
	len = i2d_X509(x, &der);
	assert_true(len > 0);
	harness_init(&h, 5, 60, 300);
	memset(&q, 0, sizeof(q));
	memset(&r, 0, sizeof(r));
	q.der = der;
	q.der_len = (size_t)len;
	assert_non_null(authz_check(h.authz, &q, done_cb, &r));
	assert_true(run_until(&r.done, 1, 10));
	assert_true(r.allow);
	assert_string_equal(r.source_app, "web");
	/* The same certificate again: a cache hit, answered at once (the parsed identity is remembered). */
	memset(&r, 0, sizeof(r));
	assert_null(authz_check(h.authz, &q, done_cb, &r));
	assert_int_equal(r.done, 1);
	assert_true(r.allow);
	assert_string_equal(r.source_app, "web");
	/* The agent was asked once. */
	assert_int_equal(http(control_port, "GET", "/_sim/requests?path=/v1/agent/connect/authorize", NULL,
	    &reqs), 200);
	dump = json_dumps(reqs, JSON_COMPACT);
	assert_int_equal(json_array_size(reqs), 1);
	free(dump);
	json_decref(reqs);
	/* No certificate at all: denied at once, without asking. */
	memset(&q, 0, sizeof(q));
	memset(&r, 0, sizeof(r));
	assert_null(authz_check(h.authz, &q, done_cb, &r));
	assert_int_equal(r.done, 1);
	assert_false(r.allow);
	assert_string_equal(r.reason, "no client certificate");
	/* Garbage instead of a certificate. */
	q.der = (const uint8_t *)"\x30\x03\x02\x01";
	q.der_len = 4;
	memset(&r, 0, sizeof(r));
	assert_null(authz_check(h.authz, &q, done_cb, &r));
	assert_false(r.allow);
	assert_non_null(strstr(r.reason, "bad certificate"));
	/* Asked again (remembered as bad): the same answer. */
	memset(&r, 0, sizeof(r));
	assert_null(authz_check(h.authz, &q, done_cb, &r));
	assert_false(r.allow);
	assert_non_null(strstr(r.reason, "bad certificate"));
	assert_int_equal(agent_requests("/v1/agent/connect/authorize"), 1);
	assert_int_equal(spoa_metrics.decisions_error, 3);
	harness_free(&h);
	OPENSSL_free(der);
	X509_free(x);
	BIO_free(bio);
	json_decref(j);
}

#define NFLIGHT 20

static void
test_singleflight(void **state)
{
	struct harness h;
	struct result r[NFLIGHT], other;
	struct authz_query q, q2;
	char uri[256], uri2[256];
	int i, answered = 0;

	/* The agent takes 300 ms: every question below is asked while the first is in flight. */
	control("PUT", "/_sim/fault", "{\"Path\":\"/v1/agent/connect/authorize\",\"LatencyMs\":300}");
	harness_init(&h, 5, 60, 300);
	uri_of("web", uri, sizeof(uri));
	uri_of("api", uri2, sizeof(uri2));
	memset(&q, 0, sizeof(q));
	q.uri = uri;
	q.uri_len = strlen(uri);
	memset(r, 0, sizeof(r));
	for (i = 0; i < NFLIGHT; i++)
		assert_non_null(authz_check(h.authz, &q, done_cb, &r[i]));
	/* A different caller is a different question. */
	memset(&q2, 0, sizeof(q2));
	q2.uri = uri2;
	q2.uri_len = strlen(uri2);
	memset(&other, 0, sizeof(other));
	assert_non_null(authz_check(h.authz, &q2, done_cb, &other));
	assert_true(run_until(&other.done, 1, 10));
	for (i = 0; i < NFLIGHT; i++) {
		assert_true(run_until(&r[i].done, 1, 10));
		assert_int_equal(r[i].done, 1);
		assert_true(r[i].allow);
		answered++;
	}
	assert_int_equal(answered, NFLIGHT);
	assert_int_equal(agent_requests("/v1/agent/connect/authorize"), 2);
	assert_int_equal(spoa_metrics.agent_requests, 2);
	harness_free(&h);
}

static void
test_cancel(void **state)
{
	struct harness h;
	struct result a, b;
	struct authz_query q;
	struct authz_pending *pa;
	char uri[256];

	control("PUT", "/_sim/fault", "{\"Path\":\"/v1/agent/connect/authorize\",\"LatencyMs\":200}");
	harness_init(&h, 5, 60, 300);
	uri_of("web", uri, sizeof(uri));
	memset(&q, 0, sizeof(q));
	q.uri = uri;
	q.uri_len = strlen(uri);
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	pa = authz_check(h.authz, &q, done_cb, &a);
	assert_non_null(pa);
	assert_non_null(authz_check(h.authz, &q, done_cb, &b));
	authz_cancel(h.authz, pa);
	assert_true(run_until(&b.done, 1, 10));
	run_for(0.1);
	assert_int_equal(a.done, 0);
	assert_int_equal(b.done, 1);
	harness_free(&h);
}

static void
test_deadline(void **state)
{
	struct harness h;
	struct result r;
	uint64_t before;

	/* The agent answers after 1.5 s; decisions are due within 0.2 s. */
	control("PUT", "/_sim/fault", "{\"Path\":\"/v1/agent/connect/authorize\",\"LatencyMs\":1500}");
	harness_init(&h, 0.2, 60, 300);
	before = spoa_metrics.agent_latency_count;
	assert_false(ask(&h, "web", NULL, &r));
	assert_false(r.allow);
	assert_non_null(strstr(r.reason, "timeout"));
	assert_int_equal(spoa_metrics.decisions_error, 1);
	/* The late answer still fills the cache: once it arrived, the question is a cache hit. */
	{
		int got = 0;
		double end = now() + 10;

		while (spoa_metrics.agent_latency_count == before && now() < end)
			run_for(0.05);
		got = spoa_metrics.agent_latency_count > before;
		assert_true(got);
	}
	assert_true(ask(&h, "web", NULL, &r));
	assert_true(r.allow);
	assert_int_equal(agent_requests("/v1/agent/connect/authorize"), 1);
	harness_free(&h);
}

/* A done callback that asks the same question again and cancels another waiter of the same flight. */
struct reenter {
	struct harness		*h;
	struct authz_query	*q;
	struct authz_pending	*victim;
	struct result		 again;
	struct authz_pending	*again_p;
	int			 again_done_inside;
	struct result		 self;
};

static void
reenter_cb(void *arg, const struct authz_decision *d)
{
	struct reenter *re = arg;

	done_cb(&re->self, d);
	authz_cancel(re->h->authz, re->victim);
	re->again_p = authz_check(re->h->authz, re->q, done_cb, &re->again);
	re->again_done_inside = re->again.done;
}

static void
test_reentrant_callbacks(void **state)
{
	struct harness h;
	struct authz_query q;
	struct result victim;
	struct reenter re;
	char uri[256];

	/* Slow agent, short deadline: the waiters are answered by the deadline timer. */
	control("PUT", "/_sim/fault", "{\"Path\":\"/v1/agent/connect/authorize\",\"LatencyMs\":1500}");
	harness_init(&h, 0.2, 60, 300);
	uri_of("web", uri, sizeof(uri));
	memset(&q, 0, sizeof(q));
	q.uri = uri;
	q.uri_len = strlen(uri);
	memset(&victim, 0, sizeof(victim));
	memset(&re, 0, sizeof(re));
	re.h = &h;
	re.q = &q;
	/* Waiters are answered newest first: re's callback runs while victim still waits. */
	re.victim = authz_check(h.authz, &q, done_cb, &victim);
	assert_non_null(re.victim);
	assert_non_null(authz_check(h.authz, &q, reenter_cb, &re));
	assert_true(run_until(&re.self.done, 1, 10));
	assert_false(re.self.allow);
	assert_non_null(strstr(re.self.reason, "timeout"));
	/* The question asked from inside the callback joined the flight and was not answered there... */
	assert_non_null(re.again_p);
	assert_int_equal(re.again_done_inside, 0);
	assert_int_equal(re.again.done, 0);	/* not in the same round of answers either */
	/* ...but later, exactly once; the cancelled waiter never. */
	assert_true(run_until(&re.again.done, 1, 10));
	run_for(0.1);
	assert_int_equal(re.again.done, 1);
	assert_int_equal(victim.done, 0);
	assert_int_equal(agent_requests("/v1/agent/connect/authorize"), 1);
	harness_free(&h);
}

static void
test_invalidation(void **state)
{
	struct harness h;
	struct result r;
	char *id;
	double t0;

	harness_init(&h, 5, 60, 300);
	assert_false(ask(&h, "web", NULL, &r));
	assert_true(r.allow);
	wait_watch("db");
	assert_true(ask(&h, "web", NULL, &r));	/* cached */
	assert_true(r.allow);
	id = intention("web", "db", "deny");
	/* Within one second, the new intention decides. */
	t0 = now();
	for (;;) {
		run_for(0.02);
		(void)ask(&h, "web", NULL, &r);
		if (!r.allow)
			break;
		if (now() - t0 > 1.0)
			fail_msg("a new deny intention was not applied within 1 s");
	}
	assert_non_null(strstr(r.reason, "DENY"));
	assert_true(spoa_metrics.cache_invalidations >= 1);
	intention_delete(id);
	t0 = now();
	for (;;) {
		run_for(0.02);
		(void)ask(&h, "web", NULL, &r);
		if (r.allow)
			break;
		if (now() - t0 > 1.0)
			fail_msg("a deleted deny intention still applied after 1 s");
	}
	harness_free(&h);
}

/*
 * A question asked after the intentions changed (here: SIGHUP's flush, which drops the cache as a
 * change does) must not take the answer of an agent call sent before the change. The first call is
 * slow and answers allow with a fixed body, as an agent that had not seen the change would; the
 * second question must reach the agent itself and get the current decision (deny).
 */
static void
test_no_join_across_invalidation(void **state)
{
	struct harness h;
	struct result before, after;
	struct authz_query q;
	char uri[256], *deny;

	harness_init(&h, 5, 60, 300);
	control("PUT", "/_sim/fault", "{\"Path\":\"/v1/agent/connect/authorize\",\"LatencyMs\":1000,"
	    "\"Status\":200,\"Body\":\"{\\\"Authorized\\\":true,\\\"Reason\\\":\\\"old intentions\\\"}\","
	    "\"Count\":1}");
	uri_of("web", uri, sizeof(uri));
	memset(&q, 0, sizeof(q));
	q.uri = uri;
	q.uri_len = strlen(uri);
	memset(&before, 0, sizeof(before));
	memset(&after, 0, sizeof(after));
	assert_non_null(authz_check(h.authz, &q, done_cb, &before));
	/* Let the slow call reach the agent (it is then committed to the old answer). */
	while (agent_requests("/v1/agent/connect/authorize") == 0)
		run_for(0.02);
	deny = intention("web", "db", "deny");
	authz_flush(h.authz);
	assert_non_null(authz_check(h.authz, &q, done_cb, &after));
	assert_true(run_until(&after.done, 1, 10));
	assert_true(run_until(&before.done, 1, 10));
	assert_true(before.allow);	/* asked before the change: the old answer is its answer */
	if (after.allow)
		fail_msg("a question asked after the flush got the answer of an older call: \"%s\"", after.reason);
	assert_non_null(strstr(after.reason, "DENY"));
	assert_int_equal(agent_requests("/v1/agent/connect/authorize"), 2);
	/* And the old answer was not cached either (the watch may drop the new one: ask either way). */
	(void)ask(&h, "web", NULL, &after);
	assert_false(after.allow);
	harness_free(&h);
	intention_delete(deny);
}

/*
 * Consul's agent answers authorize from its own cache of intention matches, refreshed by a blocking
 * query of its own: right after our watch reports a change, the agent can still answer from the old
 * intentions (modelled by a one-shot fixed answer). Such an answer must not stay cached for as long as
 * the watch is quiet; once the agent has caught up the caller is asked about again.
 */
static void
test_agent_lagging_after_change(void **state)
{
	struct harness h;
	struct result r;
	char *deny;
	double t0;

	harness_init(&h, 5, 60, 300);
	assert_false(ask(&h, "web", NULL, &r));
	assert_true(r.allow);
	assert_true(ask(&h, "web", NULL, &r));
	control("PUT", "/_sim/fault", "{\"Path\":\"/v1/agent/connect/authorize\",\"Status\":200,"
	    "\"Body\":\"{\\\"Authorized\\\":true,\\\"Reason\\\":\\\"agent cache not refreshed\\\"}\",\"Count\":1}");
	deny = intention("web", "db", "deny");
	t0 = now();
	while (spoa_metrics.cache_invalidations == 0) {
		run_for(0.02);
		if (now() - t0 > 10)
			fail_msg("the watch never reported the new intention");
	}
	/* The agent has not caught up yet: its answer is what it is. */
	assert_false(ask(&h, "web", NULL, &r));
	assert_true(r.allow);
	assert_string_equal(r.reason, "agent cache not refreshed");
	/* It has now; the old answer must not decide for ever. */
	t0 = now();
	for (;;) {
		run_for(0.1);
		(void)ask(&h, "web", NULL, &r);
		if (!r.allow)
			break;
		if (now() - t0 > 15)
			fail_msg("an answer given while the agent lagged behind a change stayed cached: \"%s\"",
			    r.reason);
	}
	assert_non_null(strstr(r.reason, "DENY"));
	harness_free(&h);
	intention_delete(deny);
}

static void
test_stale_if_error(void **state)
{
	struct harness h;
	struct result r;
	double t0;

	/* Tiny TTL: once the watch fails, entries are no longer fresh and the agent must be asked. */
	harness_init(&h, 2, 0.001, 300);
	assert_false(ask(&h, "web", NULL, &r));
	assert_true(r.allow);
	wait_watch("db");
	control("PUT", "/_sim/outage", "{\"Seconds\":60}");
	t0 = now();
	while (spoa_metrics.cache_stale_hits == 0) {
		run_for(0.05);
		(void)ask(&h, "web", NULL, &r);
		assert_true(r.allow);	/* fresh or stale, never a deny for a known caller */
		if (now() - t0 > 10)
			fail_msg("no stale hit during the outage");
	}
	/* An unknown caller is denied, naming the cause. */
	assert_false(ask(&h, "billing", NULL, &r));
	assert_false(r.allow);
	if (strstr(r.reason, "agent unreachable") == NULL)
		fail_msg("reason \"%s\"", r.reason);
	control("DELETE", "/_sim/outage", NULL);
	harness_free(&h);
	/* stale-if-error 0: no stale answers. */
	harness_init(&h, 2, 0.001, 0);
	assert_false(ask(&h, "web", NULL, &r));
	assert_true(r.allow);
	wait_watch("db");
	control("PUT", "/_sim/outage", "{\"Seconds\":60}");
	t0 = now();
	for (;;) {
		run_for(0.05);
		(void)ask(&h, "web", NULL, &r);
		if (!r.allow)
			break;
		if (now() - t0 > 10)
			fail_msg("still allowed without stale-if-error");
	}
	assert_non_null(strstr(r.reason, "agent unreachable"));
	control("DELETE", "/_sim/outage", NULL);
	harness_free(&h);
}

static void
test_agent_500(void **state)
{
	struct harness h;
	struct result r;

	control("PUT", "/_sim/fault", "{\"Path\":\"/v1/agent/connect/authorize\",\"Status\":500,"
	    "\"Body\":\"rpc error: No cluster leader\"}");
	harness_init(&h, 5, 60, 300);
	assert_false(ask(&h, "web", NULL, &r));
	assert_false(r.allow);
	if (strncmp(r.reason, "agent error 500: rpc error: No cluster leader", 45) != 0)
		fail_msg("reason \"%s\"", r.reason);
	/* Not cached: once the agent recovers the next question asks it. */
	control("DELETE", "/_sim/fault", NULL);
	assert_false(ask(&h, "web", NULL, &r));
	assert_true(r.allow);
	harness_free(&h);
}

static void
test_odd_json(void **state)
{
	static const char *const bodies[] = {
		"not json", "[]", "null", "{}", "{\\\"Authorized\\\":\\\"yes\\\"}", "{\\\"Authorized\\\":1}",
		"{\\\"Authorized\\\":true,\\\"Reason\\\":5}", "{\\\"Authorized\\\":true,\\\"Authorized\\\":true}",
		"{\\\"Authorized\\\":true", "",
	};
	struct harness h;
	struct result r;
	char fault[256];
	size_t i;

	harness_init(&h, 5, 60, 300);
	for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		snprintf(fault, sizeof(fault), "{\"Path\":\"/v1/agent/connect/authorize\",\"Status\":200,"
		    "\"Body\":\"%s\"}", bodies[i]);
		control("PUT", "/_sim/fault", fault);
		assert_false(ask(&h, "web", NULL, &r));
		if (r.allow || strstr(r.reason, "agent sent a bad answer") == NULL)
			fail_msg("body %s: allow %d reason \"%s\"", bodies[i], r.allow, r.reason);
	}
	control("DELETE", "/_sim/fault", NULL);
	assert_false(ask(&h, "web", NULL, &r));
	assert_true(r.allow);
	harness_free(&h);
}

/*
 * What a peer sends as "cert" is remembered (parsed-identity memo) only when it can be a certificate:
 * 32 distinct 1 MiB blobs must not stay allocated (they did: up to 1 GiB over the memo's slots).
 * glibc's counters see it; under ASan (its own allocator) they stay near zero and the test is moot.
 */
static void
test_oversized_der_not_retained(void **state)
{
	struct harness h;
	struct result r;
	struct authz_query q;
	struct mallinfo2 m0, m1;
	const size_t big = 1024 * 1024;
	uint8_t *der = malloc(big);
	int i;

	assert_non_null(der);
	memset(der, 0x30, big);
	harness_init(&h, 5, 60, 300);
	m0 = mallinfo2();
	for (i = 0; i < 32; i++) {
		memcpy(der + 8, &i, sizeof(i));	/* distinct bytes, distinct memo slots */
		memset(&q, 0, sizeof(q));
		q.der = der;
		q.der_len = big;
		memset(&r, 0, sizeof(r));
		assert_null(authz_check(h.authz, &q, done_cb, &r));
		assert_int_equal(r.done, 1);
		assert_false(r.allow);
		assert_non_null(strstr(r.reason, "bad certificate"));
	}
	m1 = mallinfo2();
	/* uordblks: the heap in use; hblkhd: big blocks glibc maps on their own. */
	if (m1.uordblks + m1.hblkhd > m0.uordblks + m0.hblkhd + 4 * big)
		fail_msg("%zu bytes still allocated after 32 refused 1 MiB certificates",
		    (size_t)(m1.uordblks + m1.hblkhd - m0.uordblks - m0.hblkhd));
	assert_int_equal(agent_requests("/v1/agent/connect/authorize"), 0);
	harness_free(&h);
	free(der);
}

/*
 * Agent calls outlive their waiters (a late answer fills the cache), so a peer asking for ever new
 * (target, URI) pairs and hanging up could pile up calls (and sockets) without bound. Beyond the cap a
 * question is answered as if the agent failed (stale-if-error, else deny); cached callers are unaffected.
 */
static void
test_flight_cap(void **state)
{
	struct harness h;
	struct authz_opts o;
	struct authz_query q;
	struct authz_pending *p[3];
	struct result r[3], known;
	char uri[3][256], err[256], addr[64];
	int i;

	/* One answer for the known caller first, then a slow agent. */
	memset(&h, 0, sizeof(h));
	assert_int_equal(consul_cfg_from_env(&h.cfg, err, sizeof(err)), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", http_port);
	assert_int_equal(consul_cfg_set_addr(&h.cfg, addr, err, sizeof(err)), 0);
	h.consul = consul_client_new(loop, &h.cfg, err, sizeof(err));
	assert_non_null(h.consul);
	memset(&o, 0, sizeof(o));
	o.default_target = "db";
	o.deadline = 5;
	o.ttl = 60;
	o.stale_if_error = 300;
	o.max_entries = 1000;
	o.max_flights = 2;
	h.authz = authz_new(loop, h.consul, &o, err, sizeof(err));
	assert_non_null(h.authz);
	wait_watch("db");
	assert_false(ask(&h, "api", NULL, &known));
	assert_true(known.allow);
	control("PUT", "/_sim/fault", "{\"Path\":\"/v1/agent/connect/authorize\",\"LatencyMs\":1500}");
	for (i = 0; i < 3; i++) {
		char svc[32];

		snprintf(svc, sizeof(svc), "caller%d", i);
		uri_of(svc, uri[i], sizeof(uri[i]));
		memset(&q, 0, sizeof(q));
		q.uri = uri[i];
		q.uri_len = strlen(uri[i]);
		memset(&r[i], 0, sizeof(r[i]));
		p[i] = authz_check(h.authz, &q, done_cb, &r[i]);
	}
	assert_non_null(p[0]);
	assert_non_null(p[1]);
	/* The third distinct question finds two calls in flight: denied at once, naming the cause. */
	assert_null(p[2]);
	assert_int_equal(r[2].done, 1);
	assert_false(r[2].allow);
	assert_non_null(strstr(r[2].reason, "too many agent calls in flight"));
	/* Waiters hanging up do not free a slot: the calls go on to fill the cache. */
	authz_cancel(h.authz, p[0]);
	authz_cancel(h.authz, p[1]);
	assert_true(ask(&h, "api", NULL, &known));
	assert_true(known.allow);	/* a cached caller is still answered */
	/* Once the calls have returned, questions reach the agent again. */
	control("DELETE", "/_sim/fault", NULL);
	{
		double end = now() + 10;

		while (agent_requests("/v1/agent/connect/authorize") < 3 && now() < end)
			run_for(0.05);
		run_for(2);
	}
	assert_false(ask(&h, "caller2", NULL, &r[2]));
	assert_true(r[2].allow);
	harness_free(&h);
}

static void
test_bad_target(void **state)
{
	struct harness h;
	struct result r;

	harness_init(&h, 5, 60, 300);
	assert_true(ask(&h, "web", "db/../x", &r));
	assert_false(r.allow);
	assert_string_equal(r.reason, "bad target service name");
	assert_int_equal(agent_requests("/v1/agent/connect/authorize"), 0);
	harness_free(&h);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_allow_and_deny, reset),
		cmocka_unit_test_setup(test_certificate_identity, reset),
		cmocka_unit_test_setup(test_singleflight, reset),
		cmocka_unit_test_setup(test_cancel, reset),
		cmocka_unit_test_setup(test_deadline, reset),
		cmocka_unit_test_setup(test_reentrant_callbacks, reset),
		cmocka_unit_test_setup(test_invalidation, reset),
		cmocka_unit_test_setup(test_no_join_across_invalidation, reset),
		cmocka_unit_test_setup(test_agent_lagging_after_change, reset),
		cmocka_unit_test_setup(test_stale_if_error, reset),
		cmocka_unit_test_setup(test_agent_500, reset),
		cmocka_unit_test_setup(test_odd_json, reset),
		cmocka_unit_test_setup(test_bad_target, reset),
		cmocka_unit_test_setup(test_flight_cap, reset),
		cmocka_unit_test_setup(test_oversized_der_not_retained, reset),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, sim_start, sim_stop);
}
