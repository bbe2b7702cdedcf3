/*
 * authz.c - see authz.h. Decisions for connect-spoa.
 *
 * One question is (target, caller URI). The answer comes from, in order:
 *   1. the cache, when the entry is fresh: with a working intentions watch for the target an entry is
 *      fresh until the target's intentions change (dropped then, and again AUTHZ_SETTLE later: the
 *      agent's own cache may lag); without one (403, or the watch failing) for opts.ttl;
 *   2. an agent call shared by every identical question asked meanwhile (a "flight"), bounded by an
 *      ev_timer at opts.deadline; a late answer still fills the cache;
 *   3. when the agent fails (unreachable, 5xx, bad answer, deadline): the cached decision if it was
 *      obtained less than opts.stale_if_error ago, else a deny naming the cause. Never an allow.
 * Cache times are CLOCK_MONOTONIC seconds. Parsed caller certificates are remembered by their DER bytes
 * (struct idmemo) so that a cache hit costs no X.509 parsing.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ev.h>
#include <jansson.h>

#include "authz.h"
#include "cache.h"
#include "hash.h"
#include "consul.h"
#include "log.h"
#include "metrics.h"
#include "spiffe.h"

#define AUTHZ_TARGET_MAX	255
#define AUTHZ_MAX_WATCHED	1024	/* targets with an intentions watch; more fall back to the TTL */
#define AUTHZ_MAX_TARGETS	4096	/* distinct targets at all; more are denied */
#define AUTHZ_FLIGHT_BUCKETS	1024
#define AUTHZ_MAX_FLIGHTS	4096	/* agent calls in flight at once (authz_opts.max_flights) */
#define AUTHZ_AGENT_TIMEOUT	10.0	/* an agent call outlives its deadline to fill the cache */
#define AUTHZ_REASON_MAX	256
/*
 * The agent answers authorize from its own cache of intention matches, refreshed by a blocking query
 * that our watch races: for a moment after a change it may still answer from the old intentions. What
 * was cached in that moment is dropped once more this long after the change.
 */
#define AUTHZ_SETTLE		2.0
#define IDMEMO_SLOTS		1024	/* parsed certificates remembered, direct-mapped */

enum watch_state {
	WATCH_STARTING,	/* no answer yet */
	WATCH_OK,		/* the last answer was a success: entries stay fresh until invalidated */
	WATCH_FAILING,	/* transport error or 5xx: fall back to the TTL */
	WATCH_REFUSED,	/* 403: the token lacks intention:read; TTL for good */
	WATCH_NONE,		/* too many targets: TTL */
};

struct authz_target {
	struct authz_target	*next;
	struct authz		*a;
	char			*name;
	size_t			 len;
	struct consul_watch	*watch;
	enum watch_state	 state;
	int			 have_index;
	uint64_t		 index;
	uint64_t		 gen;		/* bumped on each invalidation */
	ev_timer		 settle;	/* the second invalidation after a change (AUTHZ_SETTLE) */
};

struct flight {
	struct flight		*hnext;
	struct authz		*a;
	struct authz_target	*t;
	uint64_t		 hash;
	uint64_t		 gen;		/* t->gen when the question was sent */
	struct consul_req	*req;
	ev_timer		 timer;
	int			 in_table;
	struct authz_pending	*waiters;
	struct authz_pending	*answering;	/* taken from waiters, being answered now */
	double			 started;
	char			 service[SPIFFE_SEGMENT_MAX + 1];
	size_t			 tlen;
	size_t			 ulen;
	char			*target;	/* both point into key */
	char			*uri;
	char			 key[];
};

struct authz_pending {
	struct authz_pending	*prev;
	struct authz_pending	*next;
	struct flight		*f;
	int			 answering;	/* on f->answering, not f->waiters */
	authz_done_cb		*done;
	void			*arg;
};

/*
 * Parsing a certificate (d2i_X509) costs far more than the rest of a cached decision, and HAProxy
 * sends the same caller certificate again and again: remember the identity found in the last DER
 * blobs seen, keyed by their exact bytes. Same bytes, same answer; a hit allocates nothing.
 */
struct idmemo {
	uint64_t		 hash;
	size_t			 derlen;
	int			 ok;
	const char		*uri;		/* ok: all point into data[] */
	size_t			 ulen;
	const char		*service;
	const char		*serial;
	const char		*err;		/* !ok */
	uint8_t			 data[];	/* der, then the strings */
};

/* A caller's identity as authz_check needs it; the strings live in a memo entry or a spiffe_id. */
struct who {
	const char		*uri;
	size_t			 ulen;
	const char		*service;
	const char		*serial;
};

struct authz {
	struct ev_loop		*loop;
	struct consul_client	*consul;
	struct authz_opts	 opts;
	char			*default_target;
	struct cache		*cache;
	struct authz_target	*targets;
	size_t			 ntargets;
	struct flight		*flights[AUTHZ_FLIGHT_BUCKETS];
	int			 warned_watch_403;
	int			 warned_authorize_403;
	int			 warned_flights;
	size_t			 nflights;	/* agent calls in flight, waiters or not */
	struct idmemo		*idmemo[IDMEMO_SLOTS];
};

static double
mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t
fnv(const char *t, size_t tlen, const char *u, size_t ulen)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < tlen; i++)
		h = (h ^ (unsigned char)t[i]) * 0x100000001b3ULL;
	h *= 0x100000001b3ULL;
	for (i = 0; i < ulen; i++)
		h = (h ^ (unsigned char)u[i]) * 0x100000001b3ULL;
	return h;
}

/* Copies text into out for a reason: printable ASCII only, at most max bytes, one line. */
static void
clean_text(char *out, size_t outlen, const char *in, size_t inlen, size_t max)
{
	size_t i, o = 0;

	for (i = 0; i < inlen && o + 1 < outlen && o < max; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c == '\n' || c == '\r') {
			if (o > 0)
				break;
			continue;
		}
		out[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	while (o > 0 && out[o - 1] == ' ')
		o--;
	out[o] = '\0';
}

static void
log_decision(const char *uri, const char *target, bool allow, const char *reason, const char *how)
{
	if (!log_enabled(LL_DEBUG))
		return;
	log_debug("authz: caller=%s target=%s result=%s reason=\"%s\" %s", uri[0] != '\0' ? uri : "-",
	    target, allow ? "allow" : "deny", reason, how);
}

static void
answer(authz_done_cb *done, void *arg, bool allow, bool error, const char *source_app, const char *reason)
{
	struct authz_decision d;

	d.allow = allow;
	d.source_app = source_app != NULL ? source_app : "";
	d.reason = reason != NULL ? reason : "";
	if (allow)
		spoa_metrics.decisions_allow++;
	else if (error)
		spoa_metrics.decisions_error++;
	else
		spoa_metrics.decisions_deny++;
	done(arg, &d);
}

/* ---- targets and their intentions watch ---- */

static void
invalidate(struct authz_target *t, const char *why)
{
	size_t n = cache_invalidate_target(t->a->cache, t->name, t->len);

	t->gen++;
	spoa_metrics.cache_invalidations += n;
	spoa_metrics.cache_entries = cache_count(t->a->cache);
	if (n > 0)
		log_debug("authz: dropped %zu cached decisions for %s: %s", n, t->name, why);
}

static void
settle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	invalidate(w->data, "answers given just after the intentions changed may predate the change");
}

static void
watch_cb(void *arg, const struct consul_resp *r)
{
	struct authz_target *t = arg;
	struct authz *a = t->a;

	if (r->status >= 200 && r->status < 300) {
		if (!t->have_index)
			invalidate(t, "intentions watch started");
		else if (r->index != t->index) {
			invalidate(t, "intentions changed");
			ev_timer_stop(a->loop, &t->settle);
			ev_timer_set(&t->settle, AUTHZ_SETTLE, 0.);
			ev_timer_start(a->loop, &t->settle);
		}
		else if (t->state != WATCH_OK)
			log_debug("authz: intentions watch for %s works again", t->name);
		t->have_index = 1;
		t->index = r->index;
		t->state = WATCH_OK;
		return;
	}
	if (r->status == 403) {
		if (!a->warned_watch_403) {
			a->warned_watch_403 = 1;
			log_warnx("authz: the agent refused the intentions watch for %s (403: the token lacks "
			    "intention:read); cached decisions now expire after %g s instead", t->name, a->opts.ttl);
		}
		t->state = WATCH_REFUSED;
		consul_watch_stop(t->watch);
		t->watch = NULL;
		return;
	}
	/*
	 * Until the watch delivers again (the client reports a success only when the index moves), entries
	 * of this target live for the TTL: a change made meanwhile moves the index and drops them then.
	 */
	if (t->state != WATCH_FAILING) {
		if (r->status == 0)
			log_debug("authz: intentions watch for %s failed (%s); cached decisions expire after %g s",
			    t->name, r->error != NULL ? r->error : "transport error", a->opts.ttl);
		else
			log_debug("authz: intentions watch for %s failed (status %d); cached decisions expire "
			    "after %g s", t->name, r->status, a->opts.ttl);
	}
	t->state = WATCH_FAILING;
}

static struct authz_target *
target_get(struct authz *a, const char *name, size_t len)
{
	struct consul_watch_opts wo;
	struct authz_target *t;
	char enc[3 * AUTHZ_TARGET_MAX + 1], path[sizeof(enc) + 64];

	for (t = a->targets; t != NULL; t = t->next)
		if (t->len == len && memcmp(t->name, name, len) == 0)
			return t;
	if (a->ntargets >= AUTHZ_MAX_TARGETS)
		return NULL;
	if ((t = calloc(1, sizeof(*t))) == NULL || (t->name = strndup(name, len)) == NULL) {
		free(t);
		return NULL;
	}
	t->a = a;
	t->len = len;
	t->state = WATCH_NONE;
	ev_timer_init(&t->settle, settle_cb, AUTHZ_SETTLE, 0.);
	t->settle.data = t;
	t->next = a->targets;
	a->targets = t;
	a->ntargets++;
	if (a->ntargets > AUTHZ_MAX_WATCHED || a->consul == NULL)
		return t;
	if (consul_urlencode(t->name, enc, sizeof(enc)) == -1)
		return t;
	snprintf(path, sizeof(path), "/v1/connect/intentions/match?by=destination&name=%s", enc);
	memset(&wo, 0, sizeof(wo));
	wo.kind = CONSUL_WATCH_INDEX;
	t->watch = consul_watch_start(a->consul, path, &wo, watch_cb, t);
	if (t->watch != NULL) {
		t->state = WATCH_STARTING;
		log_debug("authz: watching intentions of %s", t->name);
	}
	return t;
}

/* How long a cached entry of t answers without asking the agent. */
static double
fresh_for(const struct authz *a, const struct authz_target *t)
{
	return t->state == WATCH_OK ? INFINITY : a->opts.ttl;
}

/* ---- flights ---- */

static void
flight_unhash(struct flight *f)
{
	struct flight **pp = &f->a->flights[f->hash & (AUTHZ_FLIGHT_BUCKETS - 1)];

	if (!f->in_table)
		return;
	while (*pp != NULL && *pp != f)
		pp = &(*pp)->hnext;
	if (*pp == f)
		*pp = f->hnext;
	f->in_table = 0;
}

static void
flight_free(struct flight *f)
{
	struct authz_pending *p, *next;

	flight_unhash(f);
	ev_timer_stop(f->a->loop, &f->timer);
	if (f->req != NULL)
		consul_cancel(f->req);
	f->a->nflights--;
	for (p = f->waiters; p != NULL; p = next) {
		next = p->next;
		free(p);
	}
	for (p = f->answering; p != NULL; p = next) {
		next = p->next;
		free(p);
	}
	free(f);
}

/*
 * Answers every waiter present now. The list is taken first: a done callback may ask again (and join
 * this flight as a new waiter, answered later) or cancel waiters still to be answered here.
 */
static void
answer_waiters(struct flight *f, bool allow, bool error, const char *source_app, const char *reason,
    const char *how)
{
	struct authz_pending *p;

	log_decision(f->uri, f->target, allow, reason, how);
	f->answering = f->waiters;
	f->waiters = NULL;
	for (p = f->answering; p != NULL; p = p->next)
		p->answering = 1;
	while ((p = f->answering) != NULL) {
		f->answering = p->next;
		if (f->answering != NULL)
			f->answering->prev = NULL;
		answer(p->done, p->arg, allow, error, source_app, reason);
		free(p);
	}
}

/* The agent failed for this flight: answer from a stale entry if one is young enough, else deny. */
static void
answer_failure(struct flight *f, const char *why)
{
	struct authz *a = f->a;
	struct cache_entry *e;
	char reason[AUTHZ_REASON_MAX];

	e = cache_lookup(a->cache, f->target, f->tlen, f->uri, f->ulen);
	if (e != NULL && cache_classify(e, mono_now(), 0, a->opts.stale_if_error) != CACHE_EXPIRED) {
		size_t n = 0;

		/* Copy: a callback may store into the cache and free e. */
		snprintf(reason, sizeof(reason), "%s", e->reason);
		for (struct authz_pending *p = f->waiters; p != NULL; p = p->next)
			n++;
		spoa_metrics.cache_stale_hits += n;
		if (e->allow)
			answer_waiters(f, true, false, f->service, reason, "stale (agent failing)");
		else
			answer_waiters(f, false, false, f->service, reason, "stale (agent failing)");
		return;
	}
	answer_waiters(f, false, true, f->service, why, "agent failed");
}

static void
flight_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct flight *f = w->data;
	char why[64];

	snprintf(why, sizeof(why), "agent timeout after %.0f ms", f->a->opts.deadline * 1000.0);
	spoa_metrics.agent_errors++;
	answer_failure(f, why);
	/* The flight stays: its late answer fills the cache, and a new identical question joins it. */
}

/* Decodes {"Authorized": bool, "Reason": string}. 0, or -1 with err filled. */
static int
decode_authorize(const char *body, size_t len, bool *allow, char *reason, size_t reasonlen,
    char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root, *au, *re;
	int rc = -1;

	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		snprintf(err, errlen, "not JSON (%.80s)", jerr.text);
		return -1;
	}
	if (!json_is_object(root)) {
		snprintf(err, errlen, "not a JSON object");
		goto out;
	}
	au = json_object_get(root, "Authorized");
	re = json_object_get(root, "Reason");
	if (!json_is_boolean(au)) {
		snprintf(err, errlen, "Authorized missing or not a boolean");
		goto out;
	}
	if (re != NULL && !json_is_string(re)) {
		snprintf(err, errlen, "Reason not a string");
		goto out;
	}
	*allow = json_is_true(au);
	if (re != NULL)
		clean_text(reason, reasonlen, json_string_value(re), json_string_length(re), 200);
	else
		snprintf(reason, reasonlen, "%s", *allow ? "authorized" : "not authorized");
	rc = 0;
out:
	json_decref(root);
	return rc;
}

static void
authorize_cb(void *arg, const struct consul_resp *r)
{
	struct flight *f = arg;
	struct authz *a = f->a;
	char reason[AUTHZ_REASON_MAX], detail[160], errbuf[128];
	bool allow = false;

	f->req = NULL;
	ev_timer_stop(a->loop, &f->timer);
	flight_unhash(f);	/* identical questions asked from here on start afresh */
	metrics_observe_agent_latency(r->elapsed);

	if (r->status == 200 && decode_authorize(r->body, r->len, &allow, reason, sizeof(reason),
	    errbuf, sizeof(errbuf)) == 0) {
		/* An answer to a question asked before the intentions changed is not cached. */
		if (f->gen == f->t->gen) {
			if (cache_store(a->cache, f->target, f->tlen, f->uri, f->ulen, allow, reason,
			    f->service, mono_now()) == -1)
				log_warnx("authz: out of memory caching a decision");
			spoa_metrics.cache_entries = cache_count(a->cache);
		}
		answer_waiters(f, allow, false, f->service, reason, "from agent");
	} else if (r->status == 200) {
		spoa_metrics.agent_errors++;
		snprintf(reason, sizeof(reason), "agent sent a bad answer: %s", errbuf);
		answer_failure(f, reason);
	} else if (r->status == 0) {
		spoa_metrics.agent_errors++;
		clean_text(detail, sizeof(detail), r->error != NULL ? r->error : "", r->error != NULL ?
		    strlen(r->error) : 0, 150);
		snprintf(reason, sizeof(reason), "agent unreachable: %s", detail);
		answer_failure(f, reason);
	} else if (r->status >= 500 || r->status == 429) {
		spoa_metrics.agent_errors++;
		clean_text(detail, sizeof(detail), r->body != NULL ? r->body : "", r->len, 150);
		snprintf(reason, sizeof(reason), "agent error %d: %s", r->status, detail);
		answer_failure(f, reason);
	} else {
		/* 403 (the token lacks service:write on the target), 400 (the agent refuses the URI), ...:
		 * the agent said no for a reason a retry will not change soon; deny, do not cache. */
		spoa_metrics.agent_errors++;
		clean_text(detail, sizeof(detail), r->body != NULL ? r->body : "", r->len, 150);
		if (r->status == 403) {
			snprintf(reason, sizeof(reason), "agent refused authorize (403 %s): the token lacks "
			    "service:write on %s", detail, f->target);
			if (!a->warned_authorize_403) {
				a->warned_authorize_403 = 1;
				log_warnx("authz: %s", reason);
			}
		} else
			snprintf(reason, sizeof(reason), "agent error %d: %s", r->status, detail);
		answer_waiters(f, false, true, f->service, reason, "agent refused");
	}
	flight_free(f);
}

/*
 * The flight asking (t, u) now. One asked before t's intentions last changed (an older generation) is
 * not joined: its answer may predate the change; it still answers the waiters it has.
 */
static struct flight *
flight_find(struct authz *a, uint64_t h, const struct authz_target *t, const char *u, size_t ulen)
{
	struct flight *f;

	for (f = a->flights[h & (AUTHZ_FLIGHT_BUCKETS - 1)]; f != NULL; f = f->hnext)
		if (f->hash == h && f->t == t && f->gen == t->gen && f->ulen == ulen &&
		    memcmp(f->uri, u, ulen) == 0)
			return f;
	return NULL;
}

static struct flight *
flight_start(struct authz *a, struct authz_target *t, uint64_t h, const struct who *id)
{
	size_t ulen = id->ulen;
	struct flight *f;
	json_t *body;
	char *js;

	if ((f = calloc(1, sizeof(*f) + t->len + ulen + 2)) == NULL)
		return NULL;
	f->a = a;
	f->t = t;
	f->hash = h;
	f->gen = t->gen;
	f->tlen = t->len;
	f->ulen = ulen;
	f->target = f->key;
	memcpy(f->target, t->name, t->len);
	f->uri = f->key + t->len + 1;
	memcpy(f->uri, id->uri, ulen);
	snprintf(f->service, sizeof(f->service), "%s", id->service);
	f->started = mono_now();
	body = json_pack("{s:s, s:s, s:s}", "Target", t->name, "ClientCertURI", id->uri,
	    "ClientCertSerial", id->serial);
	js = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (js != NULL && a->consul != NULL)
		f->req = consul_request(a->consul, "POST", "/v1/agent/connect/authorize", js, strlen(js),
		    a->opts.deadline > AUTHZ_AGENT_TIMEOUT ? a->opts.deadline : AUTHZ_AGENT_TIMEOUT,
		    authorize_cb, f);
	free(js);
	if (f->req == NULL) {
		free(f);
		return NULL;
	}
	spoa_metrics.agent_requests++;
	a->nflights++;
	ev_timer_init(&f->timer, flight_timer_cb, a->opts.deadline, 0);
	f->timer.data = f;
	ev_timer_start(a->loop, &f->timer);
	f->hnext = a->flights[h & (AUTHZ_FLIGHT_BUCKETS - 1)];
	a->flights[h & (AUTHZ_FLIGHT_BUCKETS - 1)] = f;
	f->in_table = 1;
	return f;
}

/* ---- caller identities ---- */

/* Bounded copy, always terminated (snprintf "%s" was 3% of a cached decision). */
static void
copy_str(char *dst, size_t size, const char *src)
{
	size_t n = strlen(src);

	if (n >= size)
		n = size - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/*
 * The memo's hash of a DER certificate: its length and its last 64 bytes. A certificate ends with its
 * signature, different for every certificate; the memo compares the whole DER before it trusts a hit, so
 * a blob crafted to collide only evicts a slot. Hashing all ~500 bytes cost ~10% of a cached decision.
 */
#define DER_HASH_TAIL	64

static uint64_t
der_hash(const uint8_t *p, size_t n)
{
	if (n > DER_HASH_TAIL)
		return hash_bytes((uint64_t)n, p + n - DER_HASH_TAIL, DER_HASH_TAIL);
	return hash_bytes((uint64_t)n, p, n);
}

/* The identity in a DER certificate, parsed once per distinct certificate. NULL when out of memory. */
static const struct idmemo *
identity_from_der(struct authz *a, const uint8_t *der, size_t len)
{
	uint64_t h = der_hash(der, len);
	struct idmemo **slot = &a->idmemo[h & (IDMEMO_SLOTS - 1)], *m;
	struct spiffe_id id;
	char err[AUTHZ_REASON_MAX];
	size_t ulen = 0, slen = 0, nlen = 0, elen = 0;
	char *d;
	int ok;

	m = *slot;
	if (m != NULL && m->hash == h && m->derlen == len && memcmp(m->data, der, len) == 0)
		return m;
	ok = spiffe_from_der(der, len, &id, err, sizeof(err)) == 0;
	if (ok) {
		ulen = strlen(id.uri);
		slen = strlen(id.service);
		nlen = strlen(id.serial);
	} else
		elen = strlen(err);
	if ((m = malloc(sizeof(*m) + len + ulen + slen + nlen + elen + 4)) == NULL)
		return NULL;
	m->hash = h;
	m->derlen = len;
	m->ok = ok;
	memcpy(m->data, der, len);
	d = (char *)m->data + len;
	m->uri = d;
	memcpy(d, id.uri, ulen);
	d[ulen] = '\0';
	d += ulen + 1;
	m->ulen = ulen;
	m->service = d;
	memcpy(d, id.service, slen);
	d[slen] = '\0';
	d += slen + 1;
	m->serial = d;
	memcpy(d, id.serial, nlen);
	d[nlen] = '\0';
	d += nlen + 1;
	m->err = d;
	memcpy(d, err, elen);
	d[elen] = '\0';
	free(*slot);
	*slot = m;
	return m;
}

/* ---- the interface ---- */

static int
target_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > AUTHZ_TARGET_MAX)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!(isalnum(c) || c == '-' || c == '_' || c == '.'))
			return 0;
	}
	return 1;
}

struct authz_pending *
authz_check(void *ctx, const struct authz_query *q, authz_done_cb *done, void *arg)
{
	struct authz *a = ctx;
	struct authz_target *t;
	struct authz_pending *p;
	struct cache_entry *e;
	struct spiffe_id id;
	const struct idmemo *m;
	struct who w;
	struct flight *f;
	const char *tname;
	size_t tlen;
	uint64_t h;
	char err[AUTHZ_REASON_MAX], reason[AUTHZ_REASON_MAX], svc[SPIFFE_SEGMENT_MAX + 1];

	tname = q->target != NULL && q->target_len > 0 ? q->target : a->default_target;
	tlen = q->target != NULL && q->target_len > 0 ? q->target_len :
	    (a->default_target != NULL ? strlen(a->default_target) : 0);
	if (tname == NULL || tlen == 0) {
		log_decision("", "-", false, "no target service", "refused");
		answer(done, arg, false, true, "", "no target service (set -target or the target argument)");
		return NULL;
	}
	if (!target_ok(tname, tlen)) {
		log_decision("", "-", false, "bad target service name", "refused");
		answer(done, arg, false, true, "", "bad target service name");
		return NULL;
	}
	if (q->der != NULL && q->der_len > 0) {
		/* Refused before the memo, which keeps a copy of what it saw: a peer's blobs of up to a
		 * frame (1 MiB) each would otherwise stay allocated, one per memo slot. */
		if (q->der_len > SPIFFE_DER_MAX) {
			snprintf(err, sizeof(err), "bad certificate: too large");
			goto bad_identity;
		}
		if ((m = identity_from_der(a, q->der, q->der_len)) == NULL) {
			snprintf(err, sizeof(err), "out of memory");
			goto bad_identity;
		}
		if (!m->ok) {
			copy_str(err, sizeof(err), m->err);
			goto bad_identity;
		}
		w.uri = m->uri;
		w.ulen = m->ulen;
		w.serial = m->serial;
		copy_str(svc, sizeof(svc), m->service);
	} else if (q->uri != NULL && q->uri_len > 0) {
		if (spiffe_parse_uri(q->uri, q->uri_len, &id, err, sizeof(err)) == -1)
			goto bad_identity;
		w.uri = id.uri;
		w.ulen = strlen(id.uri);
		w.serial = id.serial;
		copy_str(svc, sizeof(svc), id.service);
	} else {
		snprintf(err, sizeof(err), "no client certificate");
		goto bad_identity;
	}
	w.service = svc;
	if ((t = target_get(a, tname, tlen)) == NULL) {
		answer(done, arg, false, true, svc, "too many target services (or out of memory)");
		return NULL;
	}
	e = cache_lookup(a->cache, t->name, t->len, w.uri, w.ulen);
	if (e != NULL && cache_classify(e, mono_now(), fresh_for(a, t), INFINITY) == CACHE_FRESH) {
		bool allow = e->allow;

		spoa_metrics.cache_hits++;
		log_decision(w.uri, t->name, allow, e->reason, "cached");
		/* Copy out: done may re-enter and change the cache or the identity memo. */
		copy_str(reason, sizeof(reason), e->reason);
		answer(done, arg, allow, false, svc, reason);
		return NULL;
	}
	spoa_metrics.cache_misses++;
	if ((p = calloc(1, sizeof(*p))) == NULL) {
		answer(done, arg, false, true, svc, "out of memory");
		return NULL;
	}
	h = fnv(t->name, t->len, w.uri, w.ulen);
	f = flight_find(a, h, t, w.uri, w.ulen);
	if (f == NULL) {
		const char *why = "agent unreachable: request setup failed";

		/* Calls outlive their waiters (a late answer fills the cache): without a cap a peer asking
		 * ever new questions and hanging up piles them up, with a socket each. */
		if (a->nflights >= a->opts.max_flights) {
			why = "too many agent calls in flight";
			if (!a->warned_flights) {
				a->warned_flights = 1;
				log_warnx("authz: %zu agent calls in flight: further questions are answered as if "
				    "the agent failed until some return", a->nflights);
			}
		} else
			f = flight_start(a, t, h, &w);
		if (f == NULL) {
			/* Could not even ask: treat like an unreachable agent for this one question. */
			free(p);
			e = cache_lookup(a->cache, t->name, t->len, w.uri, w.ulen);
			if (e != NULL && cache_classify(e, mono_now(), 0, a->opts.stale_if_error) !=
			    CACHE_EXPIRED) {
				bool allow = e->allow;

				spoa_metrics.cache_stale_hits++;
				copy_str(reason, sizeof(reason), e->reason);
				log_decision(w.uri, t->name, allow, reason, "stale (request failed)");
				answer(done, arg, allow, false, svc, reason);
			} else {
				log_decision(w.uri, t->name, false, why, "refused");
				answer(done, arg, false, true, svc, why);
			}
			return NULL;
		}
	} else if (!ev_is_active(&f->timer)) {
		/* Joining a flight whose deadline passed: give the newcomers their own deadline. */
		ev_timer_set(&f->timer, a->opts.deadline, 0);
		ev_timer_start(a->loop, &f->timer);
	}
	p->f = f;
	p->done = done;
	p->arg = arg;
	p->next = f->waiters;
	if (f->waiters != NULL)
		f->waiters->prev = p;
	f->waiters = p;
	return p;

bad_identity:
	snprintf(reason, sizeof(reason), "%.*s", (int)tlen, tname);
	log_decision("", reason, false, err, "refused");
	answer(done, arg, false, true, "", err);
	return NULL;
}

void
authz_cancel(void *ctx, struct authz_pending *p)
{
	struct flight *f;

	if (p == NULL)
		return;
	f = p->f;
	if (p->prev != NULL)
		p->prev->next = p->next;
	else if (p->answering)
		f->answering = p->next;
	else
		f->waiters = p->next;
	if (p->next != NULL)
		p->next->prev = p->prev;
	free(p);
	/* The flight goes on without waiters: its answer still fills the cache. */
}

struct cache *
authz_cache(struct authz *a)
{
	return a->cache;
}

void
authz_flush(struct authz *a)
{
	struct authz_target *t;

	for (t = a->targets; t != NULL; t = t->next) {
		invalidate(t, "flush requested");
		if (t->watch != NULL)
			consul_watch_refresh(t->watch);
	}
}

struct authz *
authz_new(struct ev_loop *loop, struct consul_client *consul, const struct authz_opts *opts,
    char *err, size_t errlen)
{
	struct authz *a;

	if ((a = calloc(1, sizeof(*a))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->loop = loop;
	a->consul = consul;
	if (opts != NULL)
		a->opts = *opts;
	if (!(a->opts.deadline > 0))
		a->opts.deadline = 0.4;
	if (!(a->opts.ttl > 0))
		a->opts.ttl = 60;
	if (!(a->opts.stale_if_error >= 0))
		a->opts.stale_if_error = 300;
	if (a->opts.max_entries == 0)
		a->opts.max_entries = 65536;
	if (a->opts.max_flights == 0)
		a->opts.max_flights = AUTHZ_MAX_FLIGHTS;
	if (opts != NULL && opts->default_target != NULL && opts->default_target[0] != '\0') {
		if (!target_ok(opts->default_target, strlen(opts->default_target))) {
			snprintf(err, errlen, "bad target service name \"%s\"", opts->default_target);
			free(a);
			return NULL;
		}
		if ((a->default_target = strdup(opts->default_target)) == NULL) {
			snprintf(err, errlen, "out of memory");
			free(a);
			return NULL;
		}
	}
	a->opts.default_target = a->default_target;
	if ((a->cache = cache_new(a->opts.max_entries, err, errlen)) == NULL) {
		free(a->default_target);
		free(a);
		return NULL;
	}
	/* Watch the default target's intentions from the start, so its first callers find the watch up. */
	if (a->default_target != NULL)
		(void)target_get(a, a->default_target, strlen(a->default_target));
	return a;
}

void
authz_free(struct authz *a)
{
	struct authz_target *t, *tn;
	size_t i;

	if (a == NULL)
		return;
	for (i = 0; i < AUTHZ_FLIGHT_BUCKETS; i++)
		while (a->flights[i] != NULL)
			flight_free(a->flights[i]);
	for (t = a->targets; t != NULL; t = tn) {
		tn = t->next;
		ev_timer_stop(a->loop, &t->settle);
		if (t->watch != NULL)
			consul_watch_stop(t->watch);
		free(t->name);
		free(t);
	}
	for (i = 0; i < IDMEMO_SLOTS; i++)
		free(a->idmemo[i]);
	cache_free(a->cache);
	free(a->default_target);
	free(a);
}
