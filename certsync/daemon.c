/*
 * daemon.c - see daemon.h.
 *
 * Desired state comes from watch callbacks; every change schedules apply() on a short timer so a burst
 * of answers is applied once. apply() compares desired with applied and does the cheapest step:
 * certificate files first (HAProxy must never be told about a file before it is complete), then either a
 * start, a reload (the shape of the rendered haproxy.cfg differs, or the CA bundle changed), or runtime
 * calls only (leaf rotation, server slots). Only one start/reload runs at a time; changes that arrive
 * meanwhile are applied when it completes.
 *
 * Zero failed connections across a reload: the rendered haproxy.cfg holds the known upstream instances
 * as enabled servers (render.h), so a new worker serves them from its first connection. Which slot holds
 * which instance is planned once (plan_slots) from what the running worker has, for the rendered file and
 * for the runtime calls alike, so a reload moves no instance. Whether a reload is needed is decided on
 * the "shape" (the same render with every slot empty): a changed instance alone is a runtime call.
 *
 * CA change: the new bundle is written at once (any later reload or restart loads it), but HAProxy is
 * reloaded for it only when it must be (ca_reload_why): a root the running worker trusts was removed (it
 * must stop trusting it now), or leaves of the new CA do not chain to the bundle the worker loaded.
 * Consul cross-signs a new root with the old one and puts that certificate in every new leaf's chain, so
 * after a usual rotation the worker's old roots accept the new leaves of both sides: the new leaf goes in
 * through the runtime API like any leaf rotation, no reload. When a reload is due, a new leaf is held
 * back (file and runtime) until that reload succeeded, then put in service by rt_cert_update (runtime.h:
 * the old worker trusts only the old roots during the handover).
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "atomicfile.h"
#include "certs.h"
#include "consul.h"
#include "daemon.h"
#include "discovery.h"
#include "haproxy.h"
#include "log.h"
#include "proxycfg.h"
#include "render.h"
#include "runtime.h"
#include "snapshot.h"
#include "supervise.h"

#define APPLY_DELAY	0.02	/* coalesces a burst of answers into one apply */
#define RETRY_DELAY	2.0	/* after a failed file write, runtime call or start */
#define START_RETRY	5.0	/* after a failed first start */
#define STOP_TIMEOUT	10.0
#define SERVICES12_POLL	2.0	/* Consul 1.2 has no blocking /v1/agent/services */
#define UP_FIRST_WAIT	2.0	/* a reload waits this long at most for a new upstream's first answer */
#define LEAF_ROOTS_WAIT	2.0	/* a leaf of a CA not in the bundle waits this long at most for the roots */

enum cfg_mode {
	CFG_MANAGED,		/* /v1/agent/connect/proxy/<id>, hash blocking */
	CFG_SERVICE,		/* /v1/agent/service/<id>, hash blocking (1.3+) */
	CFG_SERVICES12,		/* /v1/agent/services, the proxy's entry (1.2) */
};

enum hap_state {
	HS_NONE,
	HS_STARTING,
	HS_RUNNING,
	HS_RELOADING,
};

/* What one server slot of the running HAProxy holds, as far as we told it. */
struct slot {
	char	 addr[64];
	int	 port;
	bool	 ready;
	bool	 known;		/* false: unknown (a call failed or resync found a difference): set it again */
	bool	 inflight;
};

/* One upstream backend of a rendered configuration. */
struct abackend {
	char		 name[72];
	enum dest_type	 type;
	char		*dest;
	char		*dc;
	char		*identity;
	unsigned	 nslots;
	struct slot	*slots;
};

/* One upstream of the desired configuration, with its discovery watch. */
struct up {
	struct daemon	*d;
	enum dest_type	 type;
	char		*dest;
	char		*dc;
	char		*ns;
	struct consul_watch *w;
	bool		 answered;	/* a first answer (or failure) came: the first apply need not wait */
	ev_tstamp	 born;		/* when it was added: a reload waits a little for its first answer */
	bool		 failing;
	struct instance_list inst;
};

struct daemon {
	struct ev_loop		*loop;
	struct daemon_opts	 o;
	struct consul_client	*cc;
	enum cfg_mode		 mode;
	char			*proxy_id;
	struct consul_req	*sidecar_req;
	struct consul_watch	*w_cfg, *w_leaf, *w_roots;
	char			*leaf_service;
	bool			 cfg_failing, leaf_failing, roots_failing;
	unsigned		 gone_count;
	ev_tstamp		 gone_first;

	/* desired */
	bool			 have_cfg, have_leaf, have_roots;
	struct proxy_cfg	 cfg;
	struct leaf_cert	 leaf;
	struct ca_roots		 roots;
	struct up		**ups;
	size_t			 nups;

	/* files written */
	struct leaf_cert	 leaf_file;
	struct ca_roots		 roots_file;
	unsigned		 leaf_gen, roots_gen;

	/* applied to HAProxy */
	enum hap_state		 hs;
	struct hap		*hap;
	struct rt_client	*rt;
	struct sv_child		*spoa;
	char			*spoa_target;
	struct render_templates	 tmpl;
	bool			 have_tmpl;
	char			*hcfg, *spoe;		/* running config (last good) */
	size_t			 hcfg_len, spoe_len;
	char			*cand_hcfg, *cand_spoe;	/* being started / reloaded */
	size_t			 cand_hcfg_len, cand_spoe_len;
	char			*shape, *cand_shape;	/* running / candidate config rendered with empty slots */
	size_t			 shape_len, cand_shape_len;
	char			*failed_shape;		/* shape of the last candidate that failed: not retried as is */
	size_t			 failed_shape_len;
	bool			 ca_reload_failed;	/* the reload with new roots failed: stop holding the leaf */
	ev_tstamp		 leaf_wait_since;	/* a new leaf waits for its CA roots since then (0: not) */
	struct abackend		*ab, *cb;		/* applied / candidate backends */
	size_t			 nab, ncb;
	unsigned		 cand_roots_gen;
	struct ca_roots		 roots_rt, cand_roots;	/* bundle the worker loaded / a start or reload loads */
	unsigned		 ca_logged_gen;		/* roots generation whose no-reload decision was logged */
	unsigned		 leaf_rt_gen, roots_rt_gen;	/* generations the running worker uses */
	unsigned		 leaf_rt_pending;
	bool			 leaf_inflight;
	bool			 apply_again;
	char			 last_err[512];

	/* paths */
	char			 leaf_path[PATH_MAX], ca_path[PATH_MAX], hcfg_path[PATH_MAX];
	char			 spoe_path[PATH_MAX], master_sock[PATH_MAX], runtime_sock[PATH_MAX];
	char			 spoa_sock[PATH_MAX], spoa_addr[PATH_MAX + 8];

	/* last-known-good snapshot (snapshot.h): written while serving, read when the agent is away */
	struct snapshot_keeper	*snap;
	struct certsync_snapshot *snap_pre;	/* read at start, valid; used if the agent cannot be reached */
	bool			 snap_tried, from_snapshot;
	char			 spoa_snap_path[PATH_MAX];	/* connect-spoa's decision cache */

	ev_timer		 apply_timer, retry_timer, resync_timer;
	bool			 stopping;
	int			 stops_pending;
	int			 exit_code;
};

static void apply(struct daemon *d);
static void schedule_apply(struct daemon *d, double delay);
static void start_config_watch(struct daemon *d);

/* ---- small helpers ---- */

static char *
xstrdup(const char *s)
{
	char *p = strdup(s != NULL ? s : "");

	if (p == NULL)
		fatal("strdup");
	return p;
}

static bool
str_eq(const char *a, const char *b)
{
	return strcmp(a != NULL ? a : "", b != NULL ? b : "") == 0;
}

/* dst = a copy of src's bundle (the PEM only: what a worker reads from the file). */
static void
roots_copy(struct ca_roots *dst, const struct ca_roots *src)
{
	ca_roots_free(dst);
	if (src->pem == NULL)
		return;
	if ((dst->pem = malloc(src->pem_len + 1)) == NULL)
		fatal("malloc");
	memcpy(dst->pem, src->pem, src->pem_len + 1);
	dst->pem_len = src->pem_len;
}

/* Logs an error once until a different one (or success, which clears it) comes. */
static void
log_error_once(struct daemon *d, const char *msg)
{
	size_t n = strnlen(msg, sizeof(d->last_err) - 1);

	if (strncmp(d->last_err, msg, sizeof(d->last_err) - 1) == 0) {
		log_debug("%s", msg);
		return;
	}
	memcpy(d->last_err, msg, n);
	d->last_err[n] = '\0';
	log_errx("%s", msg);
}

void
daemon_backend_name(const char *dest_name, const char *dc, int is_query, size_t i, char *out, size_t outlen)
{
	char raw[160];
	size_t k, w = 0;

	snprintf(raw, sizeof(raw), "%s%s%s%s_%zu", is_query ? "pq_" : "", dest_name,
	    (dc != NULL && dc[0] != '\0') ? "." : "", dc != NULL ? dc : "", i);
	for (k = 0; raw[k] != '\0' && w + 1 < outlen && w < 64; k++) {
		char c = raw[k];

		out[w++] = ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '_' || c == '.' || c == '-') ? c : '_';
	}
	if (outlen > 0)
		out[w] = '\0';
}

unsigned
daemon_slots_for(unsigned current, size_t n)
{
	unsigned s = current > 0 ? current : DAEMON_INITIAL_SLOTS;

	while (s < n && s < RENDER_SLOTS_MAX)
		s *= 2;
	return s > RENDER_SLOTS_MAX ? RENDER_SLOTS_MAX : s;
}

static void
abackends_free(struct abackend *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(v[i].dest);
		free(v[i].dc);
		free(v[i].identity);
		free(v[i].slots);
	}
	free(v);
}

static void
slots_reset(struct abackend *b)
{
	unsigned i;

	/* empty: a slot rendered "disabled" at 0.0.0.0:0 (render_candidate then fills the planned ones) */
	for (i = 0; i < b->nslots; i++) {
		memset(&b->slots[i], 0, sizeof(b->slots[i]));
		snprintf(b->slots[i].addr, sizeof(b->slots[i].addr), "0.0.0.0");
		b->slots[i].known = true;
	}
}

static void
slots_unknown(struct abackend *b)
{
	unsigned i;

	for (i = 0; i < b->nslots; i++) {
		b->slots[i].known = false;
		b->slots[i].inflight = false;
	}
}

/*
 * Which instance each of nslots slots holds: plan[i] is an index into inst, or -1 for an empty slot.
 * An instance already in a ready slot of cur (the running backend, ncur slots, may be NULL) stays in it;
 * the others take the free slots in order; instances beyond nslots are left out (the slot count grows
 * with a reload first). The same plan serves the rendered file and the runtime calls.
 */
static void
plan_slots(const struct slot *cur, unsigned ncur, const struct instance_list *inst, unsigned nslots,
    long *plan)
{
	bool *placed;
	unsigned i;
	size_t k;
	long at;

	if ((placed = calloc(inst->n + 1, sizeof(*placed))) == NULL)
		fatal("calloc");
	for (i = 0; i < nslots; i++)
		plan[i] = -1;
	for (i = 0; i < ncur && i < nslots; i++) {
		if (!cur[i].ready)
			continue;
		at = instance_list_find(inst, cur[i].addr, cur[i].port);
		if (at >= 0 && !placed[at]) {
			placed[at] = true;
			plan[i] = at;
		}
	}
	for (k = 0, i = 0; k < inst->n; k++) {
		if (placed[k])
			continue;
		while (i < nslots && plan[i] >= 0)
			i++;
		if (i >= nslots)
			break;
		plan[i] = (long)k;
		placed[k] = true;
	}
	free(placed);
}

static const char *
identity_of(const struct up *u)
{
	if (u->type == DEST_PREPARED_QUERY && u->inst.query_service != NULL && u->inst.query_service[0] != '\0')
		return u->inst.query_service;
	return u->dest;
}

static struct up *
up_for(struct daemon *d, enum dest_type type, const char *dest, const char *dc)
{
	size_t i;

	for (i = 0; i < d->nups; i++) {
		struct up *u = d->ups[i];

		if (u->type == type && str_eq(u->dest, dest) && str_eq(u->dc, dc))
			return u;
	}
	return NULL;
}

/* ---- watches: leaf, roots ---- */

static void
on_leaf(void *arg, const struct consul_resp *r)
{
	struct daemon *d = arg;
	struct leaf_cert l;
	char err[512];

	if (r->status < 200 || r->status >= 300) {
		if (!d->leaf_failing)
			log_warnx("leaf certificate for %s: %s%s%.200s", d->leaf_service,
			    r->status == 0 ? "" : "HTTP error, ", r->status == 0 ? r->error : "", r->status == 0 ?
			    "" : r->body);
		d->leaf_failing = true;
		if (d->o.once) {
			log_errx("-once: cannot fetch the leaf certificate");
			daemon_shutdown(d, 1);
		}
		return;
	}
	if (d->leaf_failing)
		log_info("leaf certificate watch for %s resumed", d->leaf_service);
	d->leaf_failing = false;
	if (certs_decode_leaf(r->body, r->len, &l, err, sizeof(err)) == -1) {
		log_errx("leaf certificate for %s refused (the current one stays in use): %s", d->leaf_service, err);
		if (d->o.once)
			daemon_shutdown(d, 1);
		return;
	}
	if (d->have_leaf && certs_leaf_equal(&d->leaf, &l)) {
		leaf_cert_free(&l);
		return;
	}
	log_debug("leaf certificate for %s: serial %s, valid before %s, %u certificate(s) in chain",
	    l.service, l.serial, l.valid_before, l.ncerts);
	leaf_cert_free(&d->leaf);
	d->leaf = l;
	d->have_leaf = true;
	schedule_apply(d, APPLY_DELAY);
}

static void
on_roots(void *arg, const struct consul_resp *r)
{
	struct daemon *d = arg;
	struct ca_roots cr;
	char err[512];

	if (r->status < 200 || r->status >= 300) {
		if (!d->roots_failing)
			log_warnx("CA roots: %s%.200s", r->status == 0 ? r->error : "HTTP error, ",
			    r->status == 0 ? "" : r->body);
		d->roots_failing = true;
		if (d->o.once) {
			log_errx("-once: cannot fetch the CA roots");
			daemon_shutdown(d, 1);
		}
		return;
	}
	if (d->roots_failing)
		log_info("CA roots watch resumed");
	d->roots_failing = false;
	if (certs_decode_roots(r->body, r->len, &cr, err, sizeof(err)) == -1) {
		log_errx("CA roots refused (the current bundle stays in use): %s", err);
		if (d->o.once)
			daemon_shutdown(d, 1);
		return;
	}
	if (d->have_roots && certs_roots_equal(&d->roots, &cr)) {
		ca_roots_free(&cr);
		return;
	}
	log_debug("CA roots: active %s, %u root(s), %u certificate(s) in the bundle", cr.active_root_id,
	    cr.nroots, cr.ncerts);
	ca_roots_free(&d->roots);
	d->roots = cr;
	d->have_roots = true;
	schedule_apply(d, APPLY_DELAY);
}

/* ---- watches: upstream discovery ---- */

static void
on_discovery(void *arg, const struct consul_resp *r)
{
	struct up *u = arg;
	struct daemon *d = u->d;
	struct instance_list l;
	char err[512];
	int rc;
	size_t i;

	if (r->status < 200 || r->status >= 300) {
		if (!u->failing)
			log_warnx("upstream %s: discovery failed, keeping %zu known instance(s): %s%.200s", u->dest,
			    u->inst.n, r->status == 0 ? r->error : "HTTP error, ", r->status == 0 ? "" : r->body);
		u->failing = true;
		if (d->o.once) {
			log_errx("-once: discovery of upstream %s failed", u->dest);
			daemon_shutdown(d, 1);
			return;
		}
		if (!u->answered) {
			/* Do not hold the whole proxy back for one upstream: serve it with no instance. */
			u->answered = true;
			schedule_apply(d, APPLY_DELAY);
		}
		return;
	}
	if (u->failing)
		log_info("upstream %s: discovery resumed", u->dest);
	u->failing = false;
	if (u->type == DEST_PREPARED_QUERY)
		rc = discovery_decode_query(r->body, r->len, &l, err, sizeof(err));
	else
		rc = discovery_decode_health(r->body, r->len, &l, err, sizeof(err));
	if (rc == -1) {
		log_errx("upstream %s: agent answer refused (known instances kept): %s", u->dest, err);
		if (!u->answered) {
			u->answered = true;
			schedule_apply(d, APPLY_DELAY);
		}
		return;
	}
	if (l.skipped > 0)
		log_debug("upstream %s: %zu instance(s) left out, first: %s", u->dest, l.skipped, l.skip_reason);
	if (u->answered && instance_list_equal(&u->inst, &l) && str_eq(u->inst.query_service, l.query_service)) {
		instance_list_free(&l);
		return;
	}
	if (log_enabled(LL_DEBUG)) {
		log_debug("upstream %s: %zu instance(s)", u->dest, l.n);
		for (i = 0; i < l.n; i++)
			log_debug("upstream %s: instance %s:%d (%s on %s, dc %s)", u->dest, l.v[i].addr,
			    l.v[i].port, l.v[i].service_id, l.v[i].node, l.v[i].datacenter);
	}
	instance_list_free(&u->inst);
	u->inst = l;
	u->answered = true;
	schedule_apply(d, APPLY_DELAY);
}

static void
up_free(struct up *u)
{
	if (u == NULL)
		return;
	if (u->w != NULL)
		consul_watch_stop(u->w);
	instance_list_free(&u->inst);
	free(u->dest);
	free(u->dc);
	free(u->ns);
	free(u);
}

static struct up *
up_new(struct daemon *d, const struct upstream_cfg *uc)
{
	struct consul_watch_opts wo;
	struct up *u = calloc(1, sizeof(*u));
	char path[1200], name[512], dc[512];

	if (u == NULL)
		fatal("calloc");
	u->d = d;
	u->born = ev_now(d->loop);
	u->type = uc->dest_type;
	u->dest = xstrdup(uc->dest_name);
	u->dc = xstrdup(uc->datacenter);
	u->ns = xstrdup(uc->dest_namespace);
	memset(&wo, 0, sizeof(wo));
	if (consul_urlencode(u->dest, name, sizeof(name)) == -1 || consul_urlencode(u->dc, dc, sizeof(dc)) == -1) {
		log_errx("upstream %.100s: name too long", u->dest);
		u->answered = true;
		return u;
	}
	if (u->type == DEST_PREPARED_QUERY) {
		snprintf(path, sizeof(path), "/v1/query/%s/execute?connect=true%s%s", name,
		    dc[0] != '\0' ? "&dc=" : "", dc);
		wo.kind = CONSUL_WATCH_POLL;
		wo.poll_interval = DAEMON_QUERY_POLL;
	} else {
		snprintf(path, sizeof(path), "/v1/health/connect/%s?passing=1%s%s", name,
		    dc[0] != '\0' ? "&dc=" : "", dc);
		wo.kind = CONSUL_WATCH_INDEX;
	}
	u->w = consul_watch_start(d->cc, path, &wo, on_discovery, u);
	if (u->w == NULL)
		fatalx("cannot start the watch %s", path);
	log_debug("upstream %s: watching %s", u->dest, path);
	return u;
}

/* Makes the upstream watches follow cfg: same destination keeps its watch and instances. */
static void
ups_reconcile(struct daemon *d)
{
	struct up **nu = NULL, *u;
	size_t i, j;

	if (d->cfg.nupstreams > 0 && (nu = calloc(d->cfg.nupstreams, sizeof(*nu))) == NULL)
		fatal("calloc");
	for (i = 0; i < d->cfg.nupstreams; i++) {
		const struct upstream_cfg *uc = &d->cfg.upstreams[i];

		for (j = 0; j < d->nups; j++) {
			u = d->ups[j];
			if (u != NULL && u->type == uc->dest_type && str_eq(u->dest, uc->dest_name) &&
			    str_eq(u->dc, uc->datacenter) && str_eq(u->ns, uc->dest_namespace)) {
				nu[i] = u;
				d->ups[j] = NULL;
				break;
			}
		}
		if (nu[i] == NULL) {
			log_info("upstream %s%s%s: added, local listener %s:%d", uc->dest_name,
			    uc->datacenter != NULL && uc->datacenter[0] != '\0' ? " in " : "",
			    uc->datacenter != NULL ? uc->datacenter : "", uc->local_bind_address, uc->local_bind_port);
			nu[i] = up_new(d, uc);
		}
	}
	for (j = 0; j < d->nups; j++) {
		if (d->ups[j] != NULL) {
			log_info("upstream %s: removed", d->ups[j]->dest);
			up_free(d->ups[j]);
		}
	}
	free(d->ups);
	d->ups = nu;
	d->nups = d->cfg.nupstreams;
}

/* ---- watches: the proxy's own configuration ---- */

static void
start_cert_watches(struct daemon *d)
{
	struct consul_watch_opts wo;
	char path[1024], name[512];

	if (d->leaf_service != NULL && strcmp(d->leaf_service, d->cfg.target_service_name) == 0)
		return;
	if (d->w_leaf != NULL) {
		log_info("target service changed from %s to %s: new leaf certificate", d->leaf_service,
		    d->cfg.target_service_name);
		consul_watch_stop(d->w_leaf);
		d->w_leaf = NULL;
		leaf_cert_free(&d->leaf);
		d->have_leaf = false;
	}
	free(d->leaf_service);
	d->leaf_service = xstrdup(d->cfg.target_service_name);
	memset(&wo, 0, sizeof(wo));
	wo.kind = CONSUL_WATCH_INDEX;
	if (consul_urlencode(d->leaf_service, name, sizeof(name)) == -1)
		fatalx("service name too long");
	snprintf(path, sizeof(path), "/v1/agent/connect/ca/leaf/%s", name);
	if ((d->w_leaf = consul_watch_start(d->cc, path, &wo, on_leaf, d)) == NULL)
		fatalx("cannot start the watch %s", path);
	if (d->w_roots == NULL &&
	    (d->w_roots = consul_watch_start(d->cc, "/v1/agent/connect/ca/roots", &wo, on_roots, d)) == NULL)
		fatalx("cannot start the roots watch");
}

/* A new decoded configuration (or a decode error) from any of the three config sources. */
static void
config_answer(struct daemon *d, int rc, struct proxy_cfg *c, struct proxycfg_warnings *warn, const char *err)
{
	size_t i;

	for (i = 0; i < warn->n; i++)
		log_warnx("proxy %s: %s", d->proxy_id, warn->msgs[i]);
	proxycfg_warnings_free(warn);
	if (rc == -1) {
		log_errx("proxy %s: configuration refused (the last good one keeps serving): %s", d->proxy_id, err);
		if (d->o.once)
			daemon_shutdown(d, 1);
		return;
	}
	if (d->have_cfg && proxycfg_equal(&d->cfg, c)) {
		proxycfg_free(c);
		return;
	}
	log_info("proxy %s: configuration %s (service %s, inbound %s:%d -> %s:%d, %zu upstream(s))",
	    d->proxy_id, d->have_cfg ? "changed" : "received", c->target_service_name, c->bind_address,
	    c->bind_port, c->local_service_host, c->local_service_port, c->nupstreams);
	if (d->have_cfg)
		proxycfg_free(&d->cfg);
	d->cfg = *c;
	d->have_cfg = true;
	start_cert_watches(d);
	ups_reconcile(d);
	schedule_apply(d, APPLY_DELAY);
}

/* ---- last-known-good snapshot (snapshot.h) ---- */

/* Writes the state now serving (the rendered config runs, the files are written) if it changed. */
static void
save_snapshot(struct daemon *d)
{
	static char empty[] = "";
	struct certsync_snapshot s;
	struct snapshot_upstream *su = NULL;
	char err[512];
	size_t i, k;
	int rc;

	if (d->snap == NULL || !d->have_cfg || d->proxy_id == NULL)
		return;
	/* A candidate failed: HAProxy runs the last good configuration, not d->cfg. Keep the older snapshot. */
	if (d->failed_shape != NULL)
		return;
	memset(&s, 0, sizeof(s));
	s.proxy_id = d->proxy_id;
	s.cfg = d->cfg;
	s.leaf.path = d->leaf_path;
	s.ca.path = d->ca_path;
	if (d->nups > 0 && (su = calloc(d->nups, sizeof(*su))) == NULL)
		fatal("calloc");
	for (i = 0; i < d->nups && i < d->cfg.nupstreams; i++) {
		struct up *u = d->ups[i];

		su[i].dest_name = d->cfg.upstreams[i].dest_name;
		su[i].datacenter = d->cfg.upstreams[i].datacenter;
		su[i].service = (char *)(uintptr_t)identity_of(u);
		su[i].at = u->inst.n > 0 ? 1 : 0;
		if (u->inst.n > 0 && (su[i].instances = calloc(u->inst.n, sizeof(*su[i].instances))) == NULL)
			fatal("calloc");
		su[i].ninstances = u->inst.n;
		for (k = 0; k < u->inst.n; k++) {
			su[i].instances[k].addr = u->inst.v[k].addr;
			su[i].instances[k].port = u->inst.v[k].port;
			su[i].instances[k].node = u->inst.v[k].node != NULL ? u->inst.v[k].node : empty;
			su[i].instances[k].datacenter = u->inst.v[k].datacenter != NULL ? u->inst.v[k].datacenter :
			    empty;
			su[i].instances[k].service_id = u->inst.v[k].service_id != NULL ? u->inst.v[k].service_id :
			    empty;
		}
	}
	s.upstreams = su;
	s.nupstreams = d->nups;
	rc = snapshot_keeper_update(d->snap, &s, (int64_t)time(NULL), err, sizeof(err));
	if (rc == -1)
		log_warnx("cannot write the snapshot %s: %s", snapshot_keeper_path(d->snap), err);
	else if (rc == 1)
		log_debug("snapshot %s written", snapshot_keeper_path(d->snap));
	for (i = 0; i < d->nups; i++)
		free(su != NULL ? su[i].instances : NULL);
	free(su);
}

/*
 * The agent cannot be reached and no configuration is known yet: serve the last good state from the
 * snapshot, if it is this proxy's and its certificate files are intact and unexpired. The watches go on
 * trying and take over when the agent answers.
 */
/* At start: reads the snapshot, so that a bad one is reported at once (and never used). */
static void
preload_snapshot(struct daemon *d)
{
	enum snapshot_status st;
	char err[512];

	if (d->snap == NULL || (d->snap_pre = calloc(1, sizeof(*d->snap_pre))) == NULL)
		return;
	st = snapshot_load(snapshot_keeper_path(d->snap), d->proxy_id, d->proxy_id == NULL ? d->o.sidecar_for :
	    NULL, d->snap_pre, err, sizeof(err));
	if (st == SNAPSHOT_OK) {
		log_info("snapshot %s of proxy %s, written %lld s ago: used if the agent cannot be reached",
		    snapshot_keeper_path(d->snap), d->snap_pre->proxy_id,
		    (long long)((int64_t)time(NULL) - d->snap_pre->written_at));
		return;
	}
	if (st == SNAPSHOT_MISSING)
		log_info("no snapshot at %s yet", snapshot_keeper_path(d->snap));
	else
		log_warnx("ignoring the snapshot %s (%s: %s); it is replaced once the agent answers",
		    snapshot_keeper_path(d->snap), snapshot_status_str(st), err);
	free(d->snap_pre);
	d->snap_pre = NULL;
}

static void
restore_snapshot(struct daemon *d)
{
	struct certsync_snapshot s;
	struct leaf_cert l;
	struct ca_roots r;
	enum snapshot_status st = SNAPSHOT_OK;
	int64_t now = (int64_t)time(NULL);
	const char *path;
	char err[512];
	size_t i, k;

	if (d->snap == NULL || d->snap_tried || d->have_cfg || d->o.once)
		return;
	d->snap_tried = true;
	path = snapshot_keeper_path(d->snap);
	memset(&l, 0, sizeof(l));
	memset(&r, 0, sizeof(r));
	if (d->snap_pre == NULL) {
		log_warnx("the agent is unreachable and there is no usable snapshot (%s): waiting for the agent",
		    path);
		return;
	}
	s = *d->snap_pre;
	free(d->snap_pre);
	d->snap_pre = NULL;
	if (strcmp(s.leaf.path, d->leaf_path) != 0 || strcmp(s.ca.path, d->ca_path) != 0) {
		snprintf(err, sizeof(err), "its certificate files are not this data dir's");
		st = SNAPSHOT_UNUSABLE;
	}
	if (st == SNAPSHOT_OK)
		st = snapshot_check_files(&s, now, err, sizeof(err));
	if (st == SNAPSHOT_OK &&
	    (read_file_capped(d->leaf_path, SNAPSHOT_CERT_MAX, &l.pem, &l.pem_len, err, sizeof(err)) == -1 ||
	    read_file_capped(d->ca_path, SNAPSHOT_CERT_MAX, &r.pem, &r.pem_len, err, sizeof(err)) == -1))
		st = SNAPSHOT_UNUSABLE;
	if (st != SNAPSHOT_OK) {
		log_warnx("the agent is unreachable; ignoring the snapshot %s (%s: %s): waiting for the agent", path,
		    snapshot_status_str(st), err);
		leaf_cert_free(&l);
		ca_roots_free(&r);
		snapshot_free(&s);
		return;
	}
	l.serial = xstrdup("(snapshot)");
	l.service = xstrdup(s.cfg.target_service_name);
	/* The files on disk are these (checked above): nothing to write. */
	leaf_cert_free(&d->leaf_file);
	ca_roots_free(&d->roots_file);
	if ((d->leaf_file.pem = malloc(l.pem_len + 1)) == NULL ||
	    (d->roots_file.pem = malloc(r.pem_len + 1)) == NULL)
		fatal("malloc");
	memcpy(d->leaf_file.pem, l.pem, l.pem_len + 1);
	d->leaf_file.pem_len = l.pem_len;
	d->leaf_file.serial = xstrdup(l.serial);
	memcpy(d->roots_file.pem, r.pem, r.pem_len + 1);
	d->roots_file.pem_len = r.pem_len;
	if (d->proxy_id == NULL) {
		d->proxy_id = xstrdup(s.proxy_id);
		d->mode = CFG_SERVICE;
		start_config_watch(d);
	}
	if (proxycfg_copy(&d->cfg, &s.cfg) == -1)
		fatalx("out of memory");
	d->have_cfg = true;
	d->leaf = l;
	d->have_leaf = true;
	d->roots = r;
	d->have_roots = true;
	start_cert_watches(d);
	ups_reconcile(d);
	for (i = 0; i < d->nups && i < s.nupstreams; i++) {
		struct up *u = d->ups[i];
		const struct snapshot_upstream *su = &s.upstreams[i];

		instance_list_free(&u->inst);
		if (su->ninstances > 0 && (u->inst.v = calloc(su->ninstances, sizeof(*u->inst.v))) == NULL)
			fatal("calloc");
		for (k = 0; k < su->ninstances; k++) {
			u->inst.v[k].addr = xstrdup(su->instances[k].addr);
			u->inst.v[k].port = su->instances[k].port;
			u->inst.v[k].node = xstrdup(su->instances[k].node);
			u->inst.v[k].datacenter = xstrdup(su->instances[k].datacenter);
			u->inst.v[k].service_id = xstrdup(su->instances[k].service_id);
		}
		u->inst.n = su->ninstances;
		if (u->type == DEST_PREPARED_QUERY && strcmp(su->service, u->dest) != 0)
			u->inst.query_service = xstrdup(su->service);
		u->answered = true;
	}
	if (snapshot_keeper_prime(d->snap, &s, err, sizeof(err)) == -1)
		log_debug("snapshot: %s", err);
	log_warnx("the agent is unreachable: serving proxy %s from the snapshot %s written %lld s ago (config of "
	    "%lld s ago, %zu upstream(s); leaf certificate valid for %lld s more)", d->proxy_id, path,
	    (long long)(now - s.written_at), (long long)(now - s.cfg_at), s.nupstreams,
	    (long long)(s.leaf_not_after - now));
	d->from_snapshot = true;
	snapshot_free(&s);
	schedule_apply(d, 0);
}

/* Counts answers saying the proxy is gone; exits 0 once it is clearly deregistered. */
static void
proxy_gone(struct daemon *d, const char *why)
{
	ev_tstamp now = ev_now(d->loop);

	if (d->gone_count++ == 0)
		d->gone_first = now;
	log_warnx("proxy %s: %s (%u time(s))", d->proxy_id, why, d->gone_count);
	if (d->o.once) {
		log_errx("-once: proxy %s is not registered with the agent", d->proxy_id);
		daemon_shutdown(d, 1);
		return;
	}
	if (d->gone_count >= DAEMON_GONE_COUNT && now - d->gone_first >= DAEMON_GONE_SECONDS) {
		log_info("proxy %s was deregistered: stopping", d->proxy_id);
		daemon_shutdown(d, 0);
	}
}

static bool
cfg_failure(struct daemon *d, const struct consul_resp *r)
{
	if (r->status >= 200 && r->status < 300) {
		if (d->cfg_failing)
			log_info("proxy %s: configuration watch resumed", d->proxy_id);
		if (d->from_snapshot)
			log_info("proxy %s: the agent answers: its watches take over from the snapshot", d->proxy_id);
		d->cfg_failing = false;
		d->from_snapshot = false;
		return false;
	}
	if (r->status != 404) {
		if (!d->cfg_failing)
			log_warnx("proxy %s: configuration watch: %s%.200s (serving the last good state)",
			    d->proxy_id, r->status == 0 ? r->error : "HTTP error, ", r->status == 0 ? "" : r->body);
		d->cfg_failing = true;
		if (d->o.once)
			daemon_shutdown(d, 1);
		restore_snapshot(d);
	}
	return true;
}

static void
on_managed_cfg(void *arg, const struct consul_resp *r)
{
	struct daemon *d = arg;
	struct proxycfg_warnings warn = { NULL, 0 };
	struct proxy_cfg c;
	char err[512];
	int rc;

	if (cfg_failure(d, r)) {
		if (r->status == 404)
			proxy_gone(d, "the agent does not know this managed proxy (404)");
		return;
	}
	d->gone_count = 0;
	memset(&c, 0, sizeof(c));
	rc = proxycfg_from_managed(r->body, r->len, &c, &warn, err, sizeof(err));
	config_answer(d, rc, &c, &warn, err);
}

static void
on_service_cfg(void *arg, const struct consul_resp *r)
{
	struct daemon *d = arg;
	struct proxycfg_warnings warn = { NULL, 0 };
	struct proxy_cfg c;
	char err[512];
	int rc;

	if (cfg_failure(d, r)) {
		if (r->status != 404)
			return;
		/*
		 * 1.3+ answers "unknown ... ID" for a service it does not have; 1.2 has no such endpoint at all
		 * (the path itself is unknown: Go's "404 page not found"). Then read /v1/agent/services.
		 */
		if (r->body != NULL && strstr(r->body, "nknown") != NULL) {
			proxy_gone(d, "the agent does not know this proxy service (404)");
			return;
		}
		log_info("proxy %s: /v1/agent/service/ is not there (Consul 1.2): polling /v1/agent/services",
		    d->proxy_id);
		consul_watch_stop(d->w_cfg);
		d->w_cfg = NULL;
		d->mode = CFG_SERVICES12;
		start_config_watch(d);
		return;
	}
	d->gone_count = 0;
	memset(&c, 0, sizeof(c));
	rc = proxycfg_from_service(r->body, r->len, NULL, 0, &c, &warn, err, sizeof(err));
	config_answer(d, rc, &c, &warn, err);
}

/*
 * The entry of service id in a /v1/agent/services map, re-encoded alone into *one (malloc'd).
 * 0, 1 when the map has no such entry, -1 with err when the answer is not a map.
 */
static int
services_entry(const char *json, size_t len, const char *id, char **one, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root, *e;

	*one = NULL;
	if ((root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr)) == NULL) {
		snprintf(err, errlen, "/v1/agent/services: invalid JSON: %s", jerr.text);
		return -1;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		snprintf(err, errlen, "/v1/agent/services: expected an object");
		return -1;
	}
	if ((e = json_object_get(root, id)) == NULL) {
		json_decref(root);
		return 1;
	}
	*one = json_dumps(e, JSON_COMPACT);
	json_decref(root);
	if (*one == NULL) {
		snprintf(err, errlen, "/v1/agent/services: entry %s is not an object", id);
		return -1;
	}
	return 0;
}

static void
on_services12(void *arg, const struct consul_resp *r)
{
	struct daemon *d = arg;
	struct proxycfg_warnings warn = { NULL, 0 };
	struct proxy_cfg c;
	char err[512], *one = NULL;
	int rc;

	if (cfg_failure(d, r)) {
		if (r->status == 404)
			proxy_gone(d, "404 on /v1/agent/services");
		return;
	}
	rc = services_entry(r->body, r->len, d->proxy_id, &one, err, sizeof(err));
	if (rc == 1) {
		proxy_gone(d, "not in /v1/agent/services");
		return;
	}
	d->gone_count = 0;
	memset(&c, 0, sizeof(c));
	if (rc == 0)
		rc = proxycfg_from_service(one, strlen(one), r->body, r->len, &c, &warn, err, sizeof(err));
	free(one);
	config_answer(d, rc, &c, &warn, err);
}

static void
start_config_watch(struct daemon *d)
{
	struct consul_watch_opts wo;
	char path[1024], id[512];
	consul_cb *cb;

	memset(&wo, 0, sizeof(wo));
	if (consul_urlencode(d->proxy_id, id, sizeof(id)) == -1)
		fatalx("proxy id too long");
	switch (d->mode) {
	case CFG_MANAGED:
		snprintf(path, sizeof(path), "/v1/agent/connect/proxy/%s", id);
		wo.kind = CONSUL_WATCH_HASH;
		cb = on_managed_cfg;
		break;
	case CFG_SERVICE:
		snprintf(path, sizeof(path), "/v1/agent/service/%s", id);
		wo.kind = CONSUL_WATCH_HASH;
		cb = on_service_cfg;
		break;
	default:
		/* Consul 1.2's /v1/agent/services does not block: poll it. */
		snprintf(path, sizeof(path), "/v1/agent/services");
		wo.kind = CONSUL_WATCH_POLL;
		wo.poll_interval = SERVICES12_POLL;
		cb = on_services12;
		break;
	}
	log_debug("proxy %s: watching %s", d->proxy_id, path);
	if ((d->w_cfg = consul_watch_start(d->cc, path, &wo, cb, d)) == NULL)
		fatalx("cannot start the watch %s", path);
}

/* -sidecar-for: find the proxy once, then watch it like -proxy-id. Retried while the agent is away. */
static void
on_sidecar_services(void *arg, const struct consul_resp *r)
{
	struct daemon *d = arg;
	char err[512], *id = NULL;

	d->sidecar_req = NULL;
	if (r->status < 200 || r->status >= 300) {
		log_warnx("-sidecar-for %s: /v1/agent/services: %s%.200s", d->o.sidecar_for,
		    r->status == 0 ? r->error : "HTTP error, ", r->status == 0 ? "" : r->body);
		if (d->o.once)
			daemon_shutdown(d, 1);
		else
			ev_timer_again(d->loop, &d->retry_timer);
		if (r->status == 0 || r->status >= 500)
			restore_snapshot(d);
		return;
	}
	if (proxycfg_find_sidecar(r->body, r->len, d->o.sidecar_for, &id, err, sizeof(err)) == -1) {
		log_errx("-sidecar-for %s: %s", d->o.sidecar_for, err);
		daemon_shutdown(d, 1);
		return;
	}
	log_info("-sidecar-for %s: proxy %s", d->o.sidecar_for, id);
	d->proxy_id = id;
	d->mode = CFG_SERVICE;
	start_config_watch(d);
}

static void
find_sidecar(struct daemon *d)
{
	if (d->sidecar_req != NULL || d->proxy_id != NULL)
		return;
	d->sidecar_req = consul_request(d->cc, "GET", "/v1/agent/services", NULL, 0, 30.0,
	    on_sidecar_services, d);
	if (d->sidecar_req == NULL)
		fatalx("cannot query /v1/agent/services");
}

/* ---- rendering ---- */

/* Frees the per-upstream server arrays of render_candidate. */
static void
render_servers_free(struct render_upstream *ru, size_t n)
{
	size_t i;

	for (i = 0; ru != NULL && i < n; i++)
		free((void *)(uintptr_t)ru[i].servers);
	free(ru);
}

/*
 * Renders the configuration the desired state asks for into d->cand_* and d->cb: the known instances
 * in the slots plan_slots gives them against the running backend of the same destination (cb's slots
 * then say what the new worker holds), and the shape (the same with every slot empty) into
 * d->cand_shape. 0, or -1 with err.
 */
static int
render_candidate(struct daemon *d, char *err, size_t errlen)
{
	struct render_upstream *ru = NULL;
	struct render_server *rs;
	struct render_input in;
	struct render_output out, shape;
	struct abackend *cb = NULL;
	size_t i, j;
	unsigned k;
	long *plan;
	int rc;

	if (!d->have_tmpl) {
		if (render_load_templates(d->o.template_dir, &d->tmpl, err, errlen) == -1)
			return -1;
		d->have_tmpl = true;
	}
	if (d->nups > 0) {
		ru = calloc(d->nups, sizeof(*ru));
		cb = calloc(d->nups, sizeof(*cb));
		if (ru == NULL || cb == NULL)
			fatal("calloc");
	}
	for (i = 0; i < d->nups; i++) {
		struct up *u = d->ups[i];
		const struct abackend *run = NULL;

		/* keep the slot count of the running backend for this destination: never shrink */
		for (j = 0; j < d->nab; j++) {
			if (d->ab[j].type == u->type && str_eq(d->ab[j].dest, u->dest) && str_eq(d->ab[j].dc, u->dc)) {
				run = &d->ab[j];
				break;
			}
		}
		daemon_backend_name(u->dest, u->dc, u->type == DEST_PREPARED_QUERY, i, cb[i].name,
		    sizeof(cb[i].name));
		cb[i].type = u->type;
		cb[i].dest = xstrdup(u->dest);
		cb[i].dc = xstrdup(u->dc);
		cb[i].identity = xstrdup(identity_of(u));
		cb[i].nslots = daemon_slots_for(run != NULL ? run->nslots : 0, u->inst.n);
		if ((cb[i].slots = calloc(cb[i].nslots, sizeof(*cb[i].slots))) == NULL ||
		    (plan = calloc(cb[i].nslots, sizeof(*plan))) == NULL ||
		    (rs = calloc(cb[i].nslots, sizeof(*rs))) == NULL)
			fatal("calloc");
		slots_reset(&cb[i]);
		plan_slots(run != NULL ? run->slots : NULL, run != NULL ? run->nslots : 0, &u->inst, cb[i].nslots,
		    plan);
		ru[i].backend_name = cb[i].name;
		ru[i].slots = cb[i].nslots;
		ru[i].server_identity = cb[i].identity;
		ru[i].servers = rs;
		for (k = 0; k < cb[i].nslots; k++) {
			struct slot *s = &cb[i].slots[k];

			if (plan[k] < 0)
				continue;
			snprintf(s->addr, sizeof(s->addr), "%s", u->inst.v[plan[k]].addr);
			s->port = u->inst.v[plan[k]].port;
			s->ready = true;
			rs[ru[i].nservers].slot = k;
			rs[ru[i].nservers].addr = u->inst.v[plan[k]].addr;
			rs[ru[i].nservers].port = u->inst.v[plan[k]].port;
			ru[i].nservers++;
		}
		free(plan);
	}
	memset(&in, 0, sizeof(in));
	in.cfg = &d->cfg;
	in.data_dir = d->o.data_dir;
	in.leaf_pem = d->leaf_path;
	in.ca_pem = d->ca_path;
	in.spoe_conf_path = d->spoe_path;
	in.spoa_addr = d->spoa_addr;
	in.runtime_sock = d->runtime_sock;
	in.upstreams = ru;
	in.stats_addr = d->o.stats_addr;
	in.nbthread = d->o.nbthread;
	in.log_level = d->o.log_level;
	memset(&out, 0, sizeof(out));
	memset(&shape, 0, sizeof(shape));
	rc = render_files(&d->tmpl, &in, &out, err, errlen);
	if (rc == 0) {
		for (i = 0; i < d->nups; i++)
			ru[i].nservers = 0;
		rc = render_files(&d->tmpl, &in, &shape, err, errlen);
	}
	render_servers_free(ru, d->nups);
	if (rc == -1) {
		render_output_free(&out);
		abackends_free(cb, d->nups);
		return -1;
	}
	free(d->cand_hcfg);
	free(d->cand_spoe);
	free(d->cand_shape);
	d->cand_hcfg = out.haproxy_cfg;
	d->cand_hcfg_len = out.haproxy_cfg_len;
	d->cand_spoe = out.spoe_conf;
	d->cand_spoe_len = out.spoe_conf_len;
	d->cand_shape = shape.haproxy_cfg;
	d->cand_shape_len = shape.haproxy_cfg_len;
	free(shape.spoe_conf);
	abackends_free(d->cb, d->ncb);
	d->cb = cb;
	d->ncb = d->nups;
	return 0;
}

static int
write_candidate(struct daemon *d, char *err, size_t errlen)
{
	if (atomic_write_file(d->spoe_path, d->cand_spoe, d->cand_spoe_len, 0600, err, errlen) == -1)
		return -1;
	return atomic_write_file(d->hcfg_path, d->cand_hcfg, d->cand_hcfg_len, 0600, err, errlen);
}

/* The candidate now runs: it becomes the last good configuration. */
static void
commit_candidate(struct daemon *d)
{
	free(d->hcfg);
	free(d->spoe);
	free(d->shape);
	d->hcfg = d->cand_hcfg;
	d->hcfg_len = d->cand_hcfg_len;
	d->spoe = d->cand_spoe;
	d->spoe_len = d->cand_spoe_len;
	d->shape = d->cand_shape;
	d->shape_len = d->cand_shape_len;
	d->cand_hcfg = d->cand_spoe = d->cand_shape = NULL;
	/* The new worker holds the slots as rendered (cb says so): no runtime call needed for them. */
	abackends_free(d->ab, d->nab);
	d->ab = d->cb;
	d->nab = d->ncb;
	d->cb = NULL;
	d->ncb = 0;
	d->roots_rt_gen = d->cand_roots_gen;
	ca_roots_free(&d->roots_rt);
	d->roots_rt = d->cand_roots;
	memset(&d->cand_roots, 0, sizeof(d->cand_roots));
	/* a fresh worker read the leaf file as it is now (a leaf held back by the CA change comes next) */
	d->leaf_rt_gen = d->leaf_gen;
	d->ca_reload_failed = false;
	free(d->failed_shape);
	d->failed_shape = NULL;
	d->last_err[0] = '\0';
}

/* ---- children ---- */

/* The warning for a supervised child (what: its name in the log) that ended and restarts after next_delay. */
static void
log_child_exit(const char *what, pid_t pid, int status, double next_delay)
{
	if (WIFSIGNALED(status))
		log_warnx("%s (pid %d) killed by signal %d; restart in %.0f s", what, (int)pid, WTERMSIG(status),
		    next_delay);
	else
		log_warnx("%s (pid %d) exited with status %d; restart in %.0f s", what, (int)pid,
		    WEXITSTATUS(status), next_delay);
}

static void
spoa_exit(void *arg, pid_t pid, int status, double next_delay)
{
	struct daemon *d = arg;

	if (d->stopping)
		return;
	log_child_exit("connect-spoa", pid, status, next_delay);
}

static void
spoa_error(void *arg, const char *err)
{
	log_errx("connect-spoa: %s", err);
}

static void
spoa_start(struct daemon *d)
{
	struct sv_opts so;
	char *argv[20], lvl[16], listen[PATH_MAX + 8], err[512];
	static const char *const names[] = { "trace", "debug", "info", "warn", "err" };
	int n = 0;

	if (d->spoa != NULL && str_eq(d->spoa_target, d->cfg.target_service_name))
		return;
	if (d->spoa != NULL) {
		log_info("connect-spoa: target changed to %s: restarting it", d->cfg.target_service_name);
		sv_free(d->spoa);
		d->spoa = NULL;
	}
	snprintf(lvl, sizeof(lvl), "%s", names[d->o.log_level]);
	snprintf(listen, sizeof(listen), "unix:%s", d->spoa_sock);
	argv[n++] = (char *)(uintptr_t)d->o.spoa_bin;
	argv[n++] = "-target";
	argv[n++] = d->cfg.target_service_name;
	argv[n++] = "-listen";
	argv[n++] = listen;
	argv[n++] = "-log-level";
	argv[n++] = lvl;
	if (d->o.spoa_http_addr != NULL) {
		argv[n++] = "-http-addr";
		argv[n++] = (char *)(uintptr_t)d->o.spoa_http_addr;
	}
	if (d->o.spoa_token_file != NULL) {
		argv[n++] = "-token-file";
		argv[n++] = (char *)(uintptr_t)d->o.spoa_token_file;
	}
	if (d->o.spoa_metrics_addr != NULL) {
		argv[n++] = "-metrics-addr";
		argv[n++] = (char *)(uintptr_t)d->o.spoa_metrics_addr;
	}
	if (d->o.spoa_busy_poll != NULL) {
		argv[n++] = "-busy-poll";
		argv[n++] = (char *)(uintptr_t)d->o.spoa_busy_poll;
	}
	if (d->snap != NULL) {
		argv[n++] = "-snapshot";
		argv[n++] = d->spoa_snap_path;
	}
	argv[n] = NULL;
	memset(&so, 0, sizeof(so));
	so.name = "connect-spoa";
	so.argv = argv;
	so.stop_signal = SIGTERM;
	so.stop_timeout = STOP_TIMEOUT;
	so.restart = true;
	so.on_exit = spoa_exit;
	so.on_error = spoa_error;
	so.arg = d;
	if ((d->spoa = sv_start(d->loop, &so, err, sizeof(err))) == NULL) {
		log_errx("connect-spoa: cannot start %s: %s", d->o.spoa_bin, err);
		return;
	}
	free(d->spoa_target);
	d->spoa_target = xstrdup(d->cfg.target_service_name);
	log_info("connect-spoa started (pid %d, target %s, listening on %s)", (int)sv_pid(d->spoa),
	    d->spoa_target, d->spoa_sock);
}

static void
hap_on_ready(void *arg, pid_t worker)
{
	struct daemon *d = arg;
	size_t i;

	log_info("haproxy worker %d ready", (int)worker);
	/*
	 * A started or reloaded worker holds the servers of the candidate, which commit_candidate makes the
	 * applied state next. A worker restarted after a crash read haproxy.cfg as last written, the
	 * newest certificate files, and none of the runtime changes since: set every slot again.
	 */
	if (d->hs == HS_RUNNING) {
		for (i = 0; i < d->nab; i++)
			slots_unknown(&d->ab[i]);
		d->leaf_rt_gen = d->leaf_gen;
		d->roots_rt_gen = d->roots_gen;
		roots_copy(&d->roots_rt, &d->roots_file);
	}
	schedule_apply(d, 0);
}

static void
hap_on_exit(void *arg, pid_t pid, int status, double next_delay)
{
	struct daemon *d = arg;

	if (d->stopping)
		return;
	log_child_exit("haproxy master", pid, status, next_delay);
}

static void
hap_on_error(void *arg, const char *err)
{
	log_errx("haproxy: %s", err);
}

static void
start_done(void *arg, int rc, const char *err)
{
	struct daemon *d = arg;

	if (d->stopping) {
		/* hap_stop completes a pending start with -1: the hap stays until it is stopped */
		d->hs = rc == -1 ? HS_NONE : HS_RUNNING;
		return;
	}
	if (rc == -1) {
		log_errx("haproxy did not start: %s (retrying in %.0f s)", err, START_RETRY);
		hap_free(d->hap);
		d->hap = NULL;
		d->hs = HS_NONE;
		ev_timer_stop(d->loop, &d->retry_timer);
		ev_timer_set(&d->retry_timer, START_RETRY, RETRY_DELAY);
		ev_timer_start(d->loop, &d->retry_timer);
		return;
	}
	log_info("haproxy started (master %d, worker %d): inbound %s:%d, %zu upstream listener(s)",
	    (int)hap_master_pid(d->hap), (int)hap_worker_pid(d->hap), d->cfg.bind_address, d->cfg.bind_port,
	    d->ncb);
	commit_candidate(d);
	d->hs = HS_RUNNING;
	ev_timer_again(d->loop, &d->resync_timer);
	schedule_apply(d, 0);
}

static void
restore_last_good(struct daemon *d)
{
	char err[512];

	if (d->hcfg == NULL)
		return;
	if (atomic_write_file(d->spoe_path, d->spoe, d->spoe_len, 0600, err, sizeof(err)) == -1 ||
	    atomic_write_file(d->hcfg_path, d->hcfg, d->hcfg_len, 0600, err, sizeof(err)) == -1)
		log_errx("cannot restore the last good configuration file: %s", err);
}

static void
reload_failed(struct daemon *d, const char *err)
{
	char msg[1024];

	snprintf(msg, sizeof(msg), "new configuration not applied, the last good one keeps serving: %s", err);
	log_error_once(d, msg);
	restore_last_good(d);
	if (d->cand_roots_gen != d->roots_rt_gen)
		d->ca_reload_failed = true;
	free(d->failed_shape);
	d->failed_shape = d->cand_shape;
	d->failed_shape_len = d->cand_shape_len;
	d->cand_shape = NULL;
	free(d->cand_hcfg);
	d->cand_hcfg = NULL;
	free(d->cand_spoe);
	d->cand_spoe = NULL;
	abackends_free(d->cb, d->ncb);
	d->cb = NULL;
	d->ncb = 0;
}

static void
reload_done(void *arg, int rc, const char *err)
{
	struct daemon *d = arg;

	d->hs = HS_RUNNING;
	if (d->stopping)
		return;		/* hap_stop completed it: nothing to apply any more */
	if (rc == -1) {
		reload_failed(d, err);
		/* try again later: a port in use may get free, a CA change must land eventually */
		ev_timer_again(d->loop, &d->retry_timer);
	} else {
		log_info("haproxy reloaded (worker %d)", (int)hap_worker_pid(d->hap));
		commit_candidate(d);
	}
	schedule_apply(d, 0);
}

static int
begin_reload(struct daemon *d, char *err, size_t errlen)
{
	/*
	 * The new worker starts with the known instances as enabled servers (render_candidate): new upstream
	 * connections succeed from its first one, no runtime call is needed before it serves.
	 */
	if (hap_reload(d->hap, reload_done, d, err, errlen) == -1)
		return -1;
	d->hs = HS_RELOADING;
	return 0;
}

static int
start_haproxy(struct daemon *d, char *err, size_t errlen)
{
	struct hap_opts ho;

	if (d->rt == NULL && (d->rt = rt_new(d->loop, d->runtime_sock, 0, err, errlen)) == NULL)
		return -1;
	memset(&ho, 0, sizeof(ho));
	ho.bin = d->o.haproxy_bin;
	ho.cfg_path = d->hcfg_path;
	ho.master_sock = d->master_sock;
	ho.runtime_sock = d->runtime_sock;
	ho.on_ready = hap_on_ready;
	ho.on_exit = hap_on_exit;
	ho.on_error = hap_on_error;
	ho.arg = d;
	if (d->hap == NULL && (d->hap = hap_new(d->loop, &ho, err, errlen)) == NULL)
		return -1;
	if (hap_start(d->hap, start_done, d, err, errlen) == -1) {
		hap_free(d->hap);
		d->hap = NULL;
		return -1;
	}
	d->hs = HS_STARTING;
	return 0;
}

/* ---- runtime: leaf and server slots ---- */

static void
leaf_done(void *arg, int rc, const char *err)
{
	struct daemon *d = arg;
	d->leaf_inflight = false;
	if (rc == -1) {
		log_errx("leaf certificate update through the runtime API failed (retrying): %s", err);
		ev_timer_again(d->loop, &d->retry_timer);
		return;
	}
	d->leaf_rt_gen = d->leaf_rt_pending;
	log_info("leaf certificate serial %s in use (runtime API, no reload)", d->leaf_file.serial);
	schedule_apply(d, 0);
}

static void
update_leaf(struct daemon *d)
{
	char err[512];

	if (d->leaf_inflight || d->leaf_rt_gen == d->leaf_gen || d->rt == NULL)
		return;
	if (rt_cert_update(d->rt, d->leaf_path, d->leaf_file.pem, d->leaf_file.pem_len, leaf_done, d,
	    err, sizeof(err)) == -1) {
		log_errx("leaf certificate update: %s", err);
		ev_timer_again(d->loop, &d->retry_timer);
		return;
	}
	d->leaf_inflight = true;
	d->leaf_rt_pending = d->leaf_gen;
}

struct slot_op {
	struct daemon	*d;
	char		 backend[72];
	unsigned	 idx;
	char		 addr[64];
	int		 port;
	bool		 ready;
};

static struct abackend *
ab_find(struct daemon *d, const char *name)
{
	size_t i;

	for (i = 0; i < d->nab; i++) {
		if (strcmp(d->ab[i].name, name) == 0)
			return &d->ab[i];
	}
	return NULL;
}

static void
slot_done(void *arg, int rc, const char *err)
{
	struct slot_op *op = arg;
	struct daemon *d = op->d;
	struct abackend *b = ab_find(d, op->backend);
	struct slot *s = (b != NULL && op->idx < b->nslots) ? &b->slots[op->idx] : NULL;

	if (s != NULL && s->inflight && strcmp(s->addr, op->addr) == 0 && s->port == op->port &&
	    s->ready == op->ready) {
		s->inflight = false;
		if (rc == -1) {
			log_warnx("server %s/%s%u: %s (retrying)", op->backend, RENDER_SLOT_PREFIX, op->idx + 1, err);
			s->known = false;
			ev_timer_again(d->loop, &d->retry_timer);
		} else if (op->ready) {
			log_debug("server %s/%s%u -> %s:%d ready", op->backend, RENDER_SLOT_PREFIX, op->idx + 1,
			    op->addr, op->port);
		} else {
			log_debug("server %s/%s%u -> maintenance", op->backend, RENDER_SLOT_PREFIX, op->idx + 1);
		}
	}
	free(op);
}

static void
set_slot(struct daemon *d, struct abackend *b, unsigned i, const char *addr, int port, bool ready)
{
	struct slot *s = &b->slots[i];
	struct slot_op *op;
	char srv[48], err[512];

	if (s->known && !s->inflight && s->ready == ready && (!ready || (strcmp(s->addr, addr) == 0 &&
	    s->port == port)))
		return;
	if (s->inflight)
		return;		/* its answer comes first; apply runs again then if needed */
	if ((op = calloc(1, sizeof(*op))) == NULL)
		fatal("calloc");
	op->d = d;
	snprintf(op->backend, sizeof(op->backend), "%s", b->name);
	op->idx = i;
	op->ready = ready;
	if (ready) {
		snprintf(op->addr, sizeof(op->addr), "%s", addr);
		op->port = port;
	} else {
		snprintf(op->addr, sizeof(op->addr), "%s", s->addr);
		op->port = s->port;
	}
	snprintf(srv, sizeof(srv), "%s%u", RENDER_SLOT_PREFIX, i + 1);
	if (rt_server_set(d->rt, b->name, srv, ready ? addr : NULL, port, ready, slot_done, op,
	    err, sizeof(err)) == -1) {
		log_errx("server %s/%s: %s", b->name, srv, err);
		free(op);
		s->known = false;
		return;
	}
	snprintf(s->addr, sizeof(s->addr), "%s", op->addr);
	s->port = op->port;
	s->ready = ready;
	s->known = true;
	s->inflight = true;
}

/*
 * Fills the slots of one running backend from the desired instances: an instance already in a slot
 * stays there; new ones take free slots; slots left over go to maintenance. Instances beyond the slot
 * count wait for the reload that doubles the slots (apply() sees the rendered config differ).
 */
static void
apply_slots(struct daemon *d, struct abackend *b)
{
	struct up *u = up_for(d, b->type, b->dest, b->dc);
	unsigned i;
	long *plan;

	if (u == NULL || !u->answered)
		return;
	if ((plan = calloc(b->nslots, sizeof(*plan))) == NULL)
		fatal("calloc");
	plan_slots(b->slots, b->nslots, &u->inst, b->nslots, plan);
	for (i = 0; i < b->nslots; i++) {
		if (plan[i] >= 0)	/* also re-sets a slot whose state is unknown */
			set_slot(d, b, i, u->inst.v[plan[i]].addr, u->inst.v[plan[i]].port, true);
		else
			set_slot(d, b, i, NULL, 0, false);
	}
	free(plan);
}

/* Periodic resync: what HAProxy actually has against what we believe it has. */
struct resync_op {
	struct daemon	*d;
	char		 backend[72];
};

static void
resync_done(void *arg, int rc, const struct rt_server *srv, size_t n, const char *err)
{
	struct resync_op *op = arg;
	struct daemon *d = op->d;
	struct abackend *b = ab_find(d, op->backend);
	unsigned idx, fixed = 0;
	size_t k;
	char *end;
	bool maint;

	if (rc == -1 || b == NULL) {
		if (rc == -1)
			log_debug("resync of %s: %s", op->backend, err);
		free(op);
		return;
	}
	for (k = 0; k < n; k++) {
		struct slot *s;

		if (strncmp(srv[k].name, RENDER_SLOT_PREFIX, strlen(RENDER_SLOT_PREFIX)) != 0)
			continue;
		errno = 0;
		idx = (unsigned)strtoul(srv[k].name + strlen(RENDER_SLOT_PREFIX), &end, 10);
		if (errno != 0 || *end != '\0' || idx < 1 || idx > b->nslots)
			continue;
		s = &b->slots[idx - 1];
		if (!s->known || s->inflight)
			continue;
		/* a slot rendered "disabled" and made ready keeps its bit 0x04 (CMAINT) and is UP:
		 * maintenance is forced (0x01), inherited (0x02) or from resolution (0x20) */
		maint = (srv[k].admin_state & 0x23) != 0;
		if (s->ready == maint || (s->ready && (strcmp(s->addr, srv[k].addr) != 0 ||
		    s->port != srv[k].port))) {
			s->known = false;
			fixed++;
		}
	}
	if (fixed > 0) {
		log_warnx("resync: %u server slot(s) of %s differ from what was set: setting them again", fixed,
		    op->backend);
		schedule_apply(d, 0);
	}
	free(op);
}

static void
resync_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct daemon *d = t->data;
	struct resync_op *op;
	char err[512];
	size_t i;

	if (d->hs != HS_RUNNING || d->rt == NULL)
		return;
	for (i = 0; i < d->nab; i++) {
		if ((op = calloc(1, sizeof(*op))) == NULL)
			fatal("calloc");
		op->d = d;
		snprintf(op->backend, sizeof(op->backend), "%s", d->ab[i].name);
		if (rt_servers_read(d->rt, op->backend, resync_done, op, err, sizeof(err)) == -1) {
			log_debug("resync of %s: %s", op->backend, err);
			free(op);
		}
	}
}

/* ---- apply ---- */

static bool
ready_for_first(const struct daemon *d)
{
	size_t i;

	if (!d->have_cfg || !d->have_leaf || !d->have_roots)
		return false;
	for (i = 0; i < d->nups; i++) {
		if (!d->ups[i]->answered)
			return false;
	}
	return true;
}

/*
 * Whether the leaf's own certificate, without the intermediates it carries, chains to the CA bundle r.
 * False for a leaf of a CA whose roots have not arrived yet, even when its cross-signed intermediate
 * lets it verify against the old roots (also for a leaf issued by an intermediate the bundle lacks).
 */
static bool
leaf_issuer_known(const struct leaf_cert *l, const struct ca_roots *r)
{
	static const char end[] = "-----END CERTIFICATE-----";
	struct leaf_cert one;
	const char *e;
	char err[256];

	if (l->pem == NULL || r->pem == NULL ||
	    (e = memmem(l->pem, l->pem_len, end, sizeof(end) - 1)) == NULL)
		return true;	/* nothing to wait for: the usual checks report it */
	memset(&one, 0, sizeof(one));
	one.pem = l->pem;
	one.pem_len = (size_t)(e - l->pem) + sizeof(end) - 1;
	return certs_leaf_verify(&one, r, err, sizeof(err)) == 0;
}

/*
 * want = the leaf as served: d->leaf with the bundle's other cross-signed certificates after its chain
 * (certs_leaf_chain_pem), so that a peer still on an older root than the one Consul's chain names can
 * build the path. Returns the buffer to release with free_served (NULL: want is d->leaf as is).
 */
static char *
served_leaf(struct daemon *d, struct leaf_cert *want)
{
	char *pem, err[256];
	size_t len;

	*want = d->leaf;
	if (d->leaf.pem == NULL || d->roots.pem == NULL ||
	    certs_leaf_chain_pem(&d->leaf, &d->roots, &pem, &len, err, sizeof(err)) == -1)
		return NULL;
	want->pem = pem;
	want->pem_len = len;
	return pem;
}

static void
free_served(char *pem, size_t len)
{
	if (pem == NULL)
		return;
	OPENSSL_cleanse(pem, len);
	free(pem);
}

/*
 * Whether the running worker must be reloaded for the CA bundle on disk: true with why when
 *   - a certificate of the bundle the worker loaded is not in the new roots (a removed root is a trust the
 *     worker must drop now: a security event, never deferred), or
 *   - the new active root does not chain to the loaded bundle (its cross-signed certificate, carried in
 *     every new leaf's chain, is what lets peers' and our new leaves pass the old roots), or
 *   - our new leaf as served (issued under the new roots) does not chain to the loaded bundle, as HAProxy
 *     checks it.
 * False (why: the reason no reload is needed) when the roots changed but none of these holds, and when
 * the worker runs with the bundle on disk.
 */
static bool
ca_reload_why(struct daemon *d, const struct leaf_cert *leaf, char *why, size_t whylen)
{
	char which[256], err[256];
	int n;

	snprintf(why, whylen, "the worker runs with the current bundle");
	if (d->roots_rt_gen == d->roots_gen)
		return false;
	if (d->roots_rt.pem == NULL) {
		snprintf(why, whylen, "the bundle the worker loaded is unknown");
		return true;
	}
	if ((n = certs_roots_removed(&d->roots_rt, &d->roots, which, sizeof(which), err, sizeof(err))) != 0) {
		if (n == -1)
			snprintf(why, whylen, "cannot compare the bundles (%s)", err);
		else
			snprintf(why, whylen, "%d trusted certificate(s) removed, %s", n, which);
		return true;
	}
	if (certs_active_trusted(&d->roots, &d->roots_rt, err, sizeof(err)) == -1) {
		snprintf(why, whylen, "%s", err);
		return true;
	}
	if (certs_leaf_verify(leaf, &d->roots, err, sizeof(err)) == 0 &&
	    certs_leaf_verify_full(leaf, &d->roots_rt, err, sizeof(err)) == -1) {
		snprintf(why, whylen, "the new leaf does not chain to the loaded bundle: %s", err);
		return true;
	}
	snprintf(why, whylen, "every loaded root is kept, and the active root and the leaf chain to the loaded "
	    "bundle (cross-signed)");
	return false;
}

/* ca_reload_why for the leaf as served now. */
static bool
ca_reload_now(struct daemon *d, char *why, size_t whylen)
{
	struct leaf_cert want;
	char *aug = served_leaf(d, &want);
	bool rc = ca_reload_why(d, &want, why, whylen);

	free_served(aug, want.pem_len);
	return rc;
}

/*
 * Writes certificate files that differ from what is on disk, the CA bundle first. 0, or -1 (logged).
 *
 * A new leaf is not put in service before the worker trusts its CA (runtime.h, "Order"):
 *   - while a reload for the newest CA bundle is due (ca_reload_why), the leaf file is left as it is:
 *     the reload starts the new worker with the new roots and the leaf in service, and the new leaf goes
 *     in through the runtime API after it;
 *   - a leaf that chains to the bundle the worker loaded (a cross-signed new CA) goes in at once;
 *   - another leaf whose CA is not in the bundle yet (it came before the roots: two watches) waits for
 *     the roots, at most LEAF_ROOTS_WAIT; then it goes in anyway (a CA without roots in the bundle, an
 *     unknown intermediate, must not block rotations).
 */
static int
write_certs(struct daemon *d)
{
	char err[512], why[512], *aug;
	bool hold, changed;
	ev_tstamp now = ev_now(d->loop);
	struct leaf_cert want;
	int rc = -1;

	if (!d->roots_file.pem || !certs_roots_equal(&d->roots_file, &d->roots)) {
		if (certs_write_pem(d->ca_path, d->roots.pem, d->roots.pem_len, 0644, err, sizeof(err)) == -1) {
			log_errx("cannot write %s: %s", d->ca_path, err);
			return -1;
		}
		ca_roots_free(&d->roots_file);
		d->roots_file.pem = malloc(d->roots.pem_len + 1);
		if (d->roots_file.pem == NULL)
			fatal("malloc");
		memcpy(d->roots_file.pem, d->roots.pem, d->roots.pem_len + 1);
		d->roots_file.pem_len = d->roots.pem_len;
		d->roots_gen++;
		log_debug("wrote %s (%u certificate(s))", d->ca_path, d->roots.ncerts);
	}
	aug = served_leaf(d, &want);
	changed = d->leaf_file.pem == NULL || !certs_leaf_equal(&d->leaf_file, &want);
	hold = d->hs != HS_NONE && !d->o.once && d->leaf_file.pem != NULL && changed;
	if (hold && !d->ca_reload_failed && ca_reload_why(d, &want, why, sizeof(why))) {
		log_debug("leaf certificate serial %s held back until haproxy runs with the new CA roots",
		    d->leaf.serial);
	} else if (hold && !leaf_issuer_known(&d->leaf, &d->roots) &&
	    (d->roots_rt.pem == NULL || certs_leaf_verify_full(&want, &d->roots_rt, err, sizeof(err)) == -1) &&
	    (d->leaf_wait_since == 0 || now - d->leaf_wait_since < LEAF_ROOTS_WAIT)) {
		if (d->leaf_wait_since == 0) {
			d->leaf_wait_since = now;
			log_debug("leaf certificate serial %s: its CA is not in the bundle: waiting up to %.0f s for "
			    "the CA roots", d->leaf.serial, LEAF_ROOTS_WAIT);
		}
		schedule_apply(d, d->leaf_wait_since + LEAF_ROOTS_WAIT - now);
	} else if (changed) {
		d->leaf_wait_since = 0;
		if (certs_write_pem(d->leaf_path, want.pem, want.pem_len, 0600, err, sizeof(err)) == -1) {
			log_errx("cannot write %s: %s", d->leaf_path, err);
			goto out;
		}
		leaf_cert_free(&d->leaf_file);
		d->leaf_file.pem = malloc(want.pem_len + 1);
		d->leaf_file.serial = xstrdup(d->leaf.serial);
		if (d->leaf_file.pem == NULL)
			fatal("malloc");
		memcpy(d->leaf_file.pem, want.pem, want.pem_len);
		d->leaf_file.pem[want.pem_len] = '\0';
		d->leaf_file.pem_len = want.pem_len;
		d->leaf_gen++;
		log_debug("wrote %s (serial %s)", d->leaf_path, d->leaf.serial);
	}
	if (certs_leaf_verify(&d->leaf, &d->roots, err, sizeof(err)) == -1)
		log_warnx("leaf certificate serial %s: %s (the roots may not have arrived yet)", d->leaf.serial, err);
	rc = 0;
out:
	free_served(aug, want.pem_len);
	return rc;
}

/* Seconds a reload should still wait for the first answer of an upstream added lately, or 0. */
static double
new_upstream_wait(const struct daemon *d)
{
	ev_tstamp now = ev_now(d->loop);
	double wait = 0, left;
	size_t i;

	for (i = 0; i < d->nups; i++) {
		if (d->ups[i]->answered)
			continue;
		left = d->ups[i]->born + UP_FIRST_WAIT - now;
		if (left > wait)
			wait = left;
	}
	return wait;
}

static void
apply(struct daemon *d)
{
	char err[4096], why[512];
	size_t i;
	bool differs, ca_reload;
	double wait;

	if (d->stopping || !ready_for_first(d))
		return;
	if (d->hs == HS_STARTING || d->hs == HS_RELOADING) {
		d->apply_again = true;
		return;
	}
	d->apply_again = false;
	if (write_certs(d) == -1) {
		ev_timer_again(d->loop, &d->retry_timer);
		return;
	}
	if (render_candidate(d, err, sizeof(err)) == -1) {
		char msg[4200];

		snprintf(msg, sizeof(msg), "cannot render the configuration%s: %s",
		    d->hs == HS_NONE ? "" : " (the last good one keeps serving)", err);
		log_error_once(d, msg);
		if (d->hs == HS_NONE && !d->o.once)
			return;
		if (d->o.once) {
			daemon_shutdown(d, 1);
			return;
		}
		goto runtime;
	}
	if (d->o.once) {
		if (write_candidate(d, err, sizeof(err)) == -1) {
			log_errx("-once: %s", err);
			daemon_shutdown(d, 1);
			return;
		}
		log_info("-once: wrote %s, %s, %s and %s", d->leaf_path, d->ca_path, d->hcfg_path, d->spoe_path);
		daemon_shutdown(d, 0);
		return;
	}
	if (d->hs == HS_NONE) {
		if (write_candidate(d, err, sizeof(err)) == -1) {
			log_errx("%s", err);
			ev_timer_again(d->loop, &d->retry_timer);
			return;
		}
		spoa_start(d);
		d->cand_roots_gen = d->roots_gen;
		roots_copy(&d->cand_roots, &d->roots_file);
		if (start_haproxy(d, err, sizeof(err)) == -1) {
			log_error_once(d, err);
			ev_timer_stop(d->loop, &d->retry_timer);
			ev_timer_set(&d->retry_timer, START_RETRY, RETRY_DELAY);
			ev_timer_start(d->loop, &d->retry_timer);
		}
		return;
	}
	/* running */
	spoa_start(d);
	ca_reload = ca_reload_now(d, why, sizeof(why));
	if (!ca_reload && d->roots_rt_gen != d->roots_gen && d->ca_logged_gen != d->roots_gen) {
		d->ca_logged_gen = d->roots_gen;
		log_info("CA roots changed: no reload, %s written for the next reload; %s", d->ca_path, why);
	}
	/* Only the shape decides on a reload: instances moving between slots are runtime calls. */
	differs = d->cand_shape_len != d->shape_len || memcmp(d->cand_shape, d->shape, d->shape_len) != 0 ||
	    d->cand_spoe_len != d->spoe_len || memcmp(d->cand_spoe, d->spoe, d->spoe_len) != 0;
	if (differs && d->failed_shape != NULL && d->failed_shape_len == d->cand_shape_len &&
	    memcmp(d->failed_shape, d->cand_shape, d->cand_shape_len) == 0 && !ca_reload)
		differs = false;	/* the same config failed already: wait for a change (or the retry) */
	if ((differs || ca_reload) && (wait = new_upstream_wait(d)) > 0) {
		/* let the new worker start with the new upstream's instances (bounded wait) */
		log_debug("reload waits up to %.1f s for the first answer of a new upstream", wait);
		schedule_apply(d, wait);
		goto runtime;
	}
	if (differs || ca_reload) {
		if (write_candidate(d, err, sizeof(err)) == -1) {
			log_errx("%s", err);
			ev_timer_again(d->loop, &d->retry_timer);
			goto runtime;
		}
		d->cand_roots_gen = d->roots_gen;
		roots_copy(&d->cand_roots, &d->roots_file);
		if (differs)
			log_info("reloading haproxy: configuration changed");
		else
			log_info("reloading haproxy: CA roots changed (%s)", why);
		if (begin_reload(d, err, sizeof(err)) == -1) {
			reload_failed(d, err);
			goto runtime;
		}
		return;
	}
	if (d->cand_hcfg_len != d->hcfg_len || memcmp(d->cand_hcfg, d->hcfg, d->hcfg_len) != 0) {
		/*
		 * Same shape, other instances: the runtime calls below change the slots, and haproxy.cfg on
		 * disk follows (the slots are planned alike), so a restarted master and an operator reading
		 * the file see what runs. A write failure only costs that.
		 */
		if (atomic_write_file(d->hcfg_path, d->cand_hcfg, d->cand_hcfg_len, 0600, err, sizeof(err)) == -1) {
			log_warnx("cannot update %s with the current instances: %s", d->hcfg_path, err);
		} else {
			free(d->hcfg);
			d->hcfg = d->cand_hcfg;
			d->hcfg_len = d->cand_hcfg_len;
			d->cand_hcfg = NULL;
		}
	}
	/* What the agent says runs now (config, files): keep it as the last known good state. */
	save_snapshot(d);
runtime:
	if (d->hs != HS_RUNNING)
		return;
	update_leaf(d);
	for (i = 0; i < d->nab; i++)
		apply_slots(d, &d->ab[i]);
}

static void
apply_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	apply(t->data);
}

static void
schedule_apply(struct daemon *d, double delay)
{
	if (d->stopping)
		return;
	if (d->hs == HS_STARTING || d->hs == HS_RELOADING) {
		d->apply_again = true;
		return;
	}
	if (ev_is_active(&d->apply_timer)) {
		if (ev_timer_remaining(d->loop, &d->apply_timer) <= delay)
			return;
		ev_timer_stop(d->loop, &d->apply_timer);	/* a sooner apply replaces a later one */
	}
	ev_timer_set(&d->apply_timer, delay, 0.);
	ev_timer_start(d->loop, &d->apply_timer);
}

static void
retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct daemon *d = t->data;

	ev_timer_stop(loop, t);
	ev_timer_set(t, RETRY_DELAY, RETRY_DELAY);
	if (d->o.sidecar_for != NULL && d->proxy_id == NULL) {
		find_sidecar(d);
		return;
	}
	/* a failed candidate is tried once more after the retry delay */
	free(d->failed_shape);
	d->failed_shape = NULL;
	apply(d);
}

/* ---- lifecycle ---- */

struct daemon *
daemon_new(struct ev_loop *loop, const struct daemon_opts *o, char *err, size_t errlen)
{
	struct daemon *d = calloc(1, sizeof(*d));
	const char *dir = o->data_dir;

	if (d == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	d->loop = loop;
	d->o = *o;
	d->hs = HS_NONE;
	if (snprintf(d->leaf_path, sizeof(d->leaf_path), "%s/leaf.pem", dir) >= (int)sizeof(d->leaf_path) ||
	    snprintf(d->ca_path, sizeof(d->ca_path), "%s/ca.pem", dir) >= (int)sizeof(d->ca_path) ||
	    snprintf(d->hcfg_path, sizeof(d->hcfg_path), "%s/haproxy.cfg", dir) >= (int)sizeof(d->hcfg_path) ||
	    snprintf(d->spoe_path, sizeof(d->spoe_path), "%s/spoe.conf", dir) >= (int)sizeof(d->spoe_path)) {
		snprintf(err, errlen, "data dir path too long");
		free(d);
		return NULL;
	}
	snprintf(d->master_sock, sizeof(d->master_sock), "%s/master.sock", dir);
	snprintf(d->runtime_sock, sizeof(d->runtime_sock), "%s/haproxy.sock", dir);
	snprintf(d->spoa_sock, sizeof(d->spoa_sock), "%s/spoa.sock", dir);
	snprintf(d->spoa_addr, sizeof(d->spoa_addr), "unix@%s", d->spoa_sock);
	/* unix socket paths: sun_path is 108 bytes with its NUL */
	if (strlen(d->master_sock) > 100 || strlen(d->runtime_sock) > 100 || strlen(d->spoa_sock) > 100) {
		snprintf(err, errlen, "data dir path %s is too long for unix sockets (at most 88 characters)", dir);
		free(d);
		return NULL;
	}
	if ((d->cc = consul_client_new(loop, o->consul, err, errlen)) == NULL) {
		free(d);
		return NULL;
	}
	ev_timer_init(&d->apply_timer, apply_cb, 0., 0.);
	d->apply_timer.data = d;
	ev_timer_init(&d->retry_timer, retry_cb, RETRY_DELAY, RETRY_DELAY);
	d->retry_timer.data = d;
	ev_init(&d->resync_timer, resync_cb);
	d->resync_timer.repeat = DAEMON_RESYNC;
	d->resync_timer.data = d;
	if (o->proxy_id != NULL) {
		d->proxy_id = xstrdup(o->proxy_id);
		d->mode = o->managed ? CFG_MANAGED : CFG_SERVICE;
	}
	if (o->snapshot_path != NULL && !o->once) {
		snprintf(d->spoa_snap_path, sizeof(d->spoa_snap_path), "%s/decisions.snapshot", dir);
		if ((d->snap = snapshot_keeper_new(o->snapshot_path)) == NULL)
			fatal("snapshot");
	}
	return d;
}

int
daemon_start(struct daemon *d, char *err, size_t errlen)
{
	preload_snapshot(d);
	if (d->proxy_id != NULL)
		start_config_watch(d);
	else if (d->o.sidecar_for != NULL)
		find_sidecar(d);
	else {
		snprintf(err, errlen, "no proxy id");
		return -1;
	}
	return 0;
}

static void
timers_stop(struct daemon *d)
{
	ev_timer_stop(d->loop, &d->apply_timer);
	ev_timer_stop(d->loop, &d->retry_timer);
	ev_timer_stop(d->loop, &d->resync_timer);
}

/* Stops the configuration, leaf and roots watches (not the upstreams'). */
static void
main_watches_stop(struct daemon *d)
{
	if (d->w_cfg != NULL)
		consul_watch_stop(d->w_cfg);
	if (d->w_leaf != NULL)
		consul_watch_stop(d->w_leaf);
	if (d->w_roots != NULL)
		consul_watch_stop(d->w_roots);
	d->w_cfg = d->w_leaf = d->w_roots = NULL;
}

static void
child_stopped(void *arg)
{
	struct daemon *d = arg;

	if (--d->stops_pending == 0)
		ev_break(d->loop, EVBREAK_ALL);
}

void
daemon_shutdown(struct daemon *d, int exit_code)
{
	size_t i;

	if (d->stopping)
		return;
	d->stopping = true;
	d->exit_code = exit_code;
	timers_stop(d);
	/* no more answers: stop watching (callbacks are not called after a stop) */
	if (d->sidecar_req != NULL)
		consul_cancel(d->sidecar_req);
	d->sidecar_req = NULL;
	main_watches_stop(d);
	for (i = 0; i < d->nups; i++) {
		if (d->ups[i]->w != NULL)
			consul_watch_stop(d->ups[i]->w);
		d->ups[i]->w = NULL;
	}
	d->stops_pending = 1;
	if (d->hap != NULL) {
		d->stops_pending++;
		hap_stop(d->hap, STOP_TIMEOUT, child_stopped, d);
	}
	if (d->spoa != NULL) {
		d->stops_pending++;
		sv_stop(d->spoa, child_stopped, d);
	}
	child_stopped(d);
}

void
daemon_hup(struct daemon *d)
{
	size_t i;

	if (d->stopping)
		return;
	log_info("SIGHUP: refreshing every watch and re-reading the templates");
	if (d->have_tmpl) {
		render_templates_free(&d->tmpl);
		d->have_tmpl = false;
	}
	free(d->failed_shape);
	d->failed_shape = NULL;
	d->last_err[0] = '\0';
	if (d->w_cfg != NULL)
		consul_watch_refresh(d->w_cfg);
	if (d->w_leaf != NULL)
		consul_watch_refresh(d->w_leaf);
	if (d->w_roots != NULL)
		consul_watch_refresh(d->w_roots);
	for (i = 0; i < d->nups; i++) {
		if (d->ups[i]->w != NULL)
			consul_watch_refresh(d->ups[i]->w);
	}
	for (i = 0; i < d->nab; i++) {
		unsigned k;

		for (k = 0; k < d->ab[i].nslots; k++)
			d->ab[i].slots[k].known = false;
	}
	schedule_apply(d, APPLY_DELAY);
}

int
daemon_reread_token(struct daemon *d, struct consul_cfg *cfg, bool *changed, char *err, size_t errlen)
{
	bool ch = false;
	int rc;

	if ((rc = consul_client_reread_token(d->cc, cfg, &ch, err, errlen)) != 1)
		return rc;
	if (changed != NULL)
		*changed = ch;
	/*
	 * connect-spoa reads the same file (its -token-file, or CONSUL_HTTP_TOKEN_FILE inherited): its SIGHUP
	 * re-reads it. Not running (not started yet, or waiting for a restart): it reads the file at start.
	 */
	if (ch && d->spoa != NULL && sv_signal(d->spoa, SIGHUP) == 0)
		log_debug("SIGHUP forwarded to connect-spoa (pid %d) for the new ACL token", (int)sv_pid(d->spoa));
	return 1;
}

int
daemon_exit_code(const struct daemon *d)
{
	return d->exit_code;
}

void
daemon_free(struct daemon *d)
{
	size_t i;

	if (d == NULL)
		return;
	timers_stop(d);
	for (i = 0; i < d->nups; i++)
		up_free(d->ups[i]);
	free(d->ups);
	main_watches_stop(d);
	if (d->sidecar_req != NULL)
		consul_cancel(d->sidecar_req);
	consul_client_free(d->cc);
	rt_free(d->rt);
	hap_free(d->hap);
	sv_free(d->spoa);
	if (d->have_cfg)
		proxycfg_free(&d->cfg);
	leaf_cert_free(&d->leaf);
	leaf_cert_free(&d->leaf_file);
	ca_roots_free(&d->roots);
	ca_roots_free(&d->roots_file);
	ca_roots_free(&d->roots_rt);
	ca_roots_free(&d->cand_roots);
	if (d->have_tmpl)
		render_templates_free(&d->tmpl);
	abackends_free(d->ab, d->nab);
	abackends_free(d->cb, d->ncb);
	free(d->hcfg);
	free(d->spoe);
	free(d->cand_hcfg);
	free(d->cand_spoe);
	free(d->shape);
	free(d->cand_shape);
	free(d->failed_shape);
	free(d->spoa_target);
	free(d->leaf_service);
	free(d->proxy_id);
	snapshot_keeper_free(d->snap);
	snapshot_free(d->snap_pre);
	free(d->snap_pre);
	free(d);
}
