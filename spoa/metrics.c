/*
 * metrics.c - see metrics.h. The counters and their Prometheus text exposition (format 0.0.4).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "metrics.h"

struct spoa_metrics spoa_metrics;

/* Upper bounds of agent_latency_bucket[i], seconds; the +Inf bucket is agent_latency_count. */
static const double lat_bounds[SPOA_LAT_BUCKETS] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
};

void
metrics_observe_agent_latency(double seconds)
{
	size_t i;

	if (!(seconds >= 0))
		seconds = 0;
	spoa_metrics.agent_latency_count++;
	spoa_metrics.agent_latency_sum += seconds;
	for (i = 0; i < SPOA_LAT_BUCKETS; i++)
		if (seconds <= lat_bounds[i])
			spoa_metrics.agent_latency_bucket[i]++;
}

struct out {
	char	*buf;
	size_t	 len;
	size_t	 off;
	int	 err;
};

static void out_printf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
out_printf(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->err)
		return;
	va_start(ap, fmt);
	n = vsnprintf(o->buf + o->off, o->len - o->off, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= o->len - o->off) {
		o->err = 1;
		return;
	}
	o->off += (size_t)n;
}

static void
counter(struct out *o, const char *name, const char *help, uint64_t v)
{
	out_printf(o, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
	    (unsigned long long)v);
}

static void
gauge(struct out *o, const char *name, const char *help, uint64_t v)
{
	out_printf(o, "# HELP %s %s\n# TYPE %s gauge\n%s %llu\n", name, help, name, name,
	    (unsigned long long)v);
}

int
metrics_render(char *buf, size_t buflen)
{
	const struct spoa_metrics *m = &spoa_metrics;
	struct out o = { buf, buflen, 0, 0 };
	size_t i;

	if (buf == NULL || buflen == 0)
		return -1;
	out_printf(&o, "# HELP connect_spoa_decisions_total Authorization decisions answered, by result.\n"
	    "# TYPE connect_spoa_decisions_total counter\n");
	out_printf(&o, "connect_spoa_decisions_total{result=\"allow\"} %llu\n",
	    (unsigned long long)m->decisions_allow);
	out_printf(&o, "connect_spoa_decisions_total{result=\"deny\"} %llu\n",
	    (unsigned long long)m->decisions_deny);
	out_printf(&o, "connect_spoa_decisions_total{result=\"error\"} %llu\n",
	    (unsigned long long)m->decisions_error);
	counter(&o, "connect_spoa_cache_hits_total", "Decisions answered from the cache.", m->cache_hits);
	counter(&o, "connect_spoa_cache_misses_total", "Decisions that needed the agent.", m->cache_misses);
	counter(&o, "connect_spoa_cache_stale_hits_total",
	    "Decisions answered from a stale cache entry while the agent failed.", m->cache_stale_hits);
	counter(&o, "connect_spoa_cache_invalidations_total",
	    "Cache entries dropped because the target's intentions changed.", m->cache_invalidations);
	gauge(&o, "connect_spoa_cache_entries", "Decisions held in the cache.", m->cache_entries);
	counter(&o, "connect_spoa_agent_requests_total", "Authorize requests sent to the Consul agent.",
	    m->agent_requests);
	counter(&o, "connect_spoa_agent_errors_total",
	    "Authorize requests that failed (transport, 5xx, bad answer, deadline).", m->agent_errors);
	out_printf(&o, "# HELP connect_spoa_agent_request_duration_seconds Authorize round trips to the agent.\n"
	    "# TYPE connect_spoa_agent_request_duration_seconds histogram\n");
	for (i = 0; i < SPOA_LAT_BUCKETS; i++)
		out_printf(&o, "connect_spoa_agent_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
		    lat_bounds[i], (unsigned long long)m->agent_latency_bucket[i]);
	out_printf(&o, "connect_spoa_agent_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
	    (unsigned long long)m->agent_latency_count);
	out_printf(&o, "connect_spoa_agent_request_duration_seconds_sum %.6f\n", m->agent_latency_sum);
	out_printf(&o, "connect_spoa_agent_request_duration_seconds_count %llu\n",
	    (unsigned long long)m->agent_latency_count);
	counter(&o, "connect_spoa_spop_connections_total", "SPOP connections accepted.", m->spop_conns_total);
	gauge(&o, "connect_spoa_spop_connections", "SPOP connections open.", m->spop_conns_active);
	counter(&o, "connect_spoa_spop_frames_received_total", "SPOP frames received.", m->spop_frames_in);
	counter(&o, "connect_spoa_spop_frames_sent_total", "SPOP frames sent.", m->spop_frames_out);
	counter(&o, "connect_spoa_spop_notify_total", "SPOP NOTIFY frames received.", m->spop_notify);
	counter(&o, "connect_spoa_spop_healthchecks_total", "SPOP health-check HELLOs answered.",
	    m->spop_healthchecks);
	counter(&o, "connect_spoa_spop_disconnects_sent_total", "AGENT-DISCONNECT frames sent.",
	    m->spop_disconnects_sent);
	counter(&o, "connect_spoa_spop_protocol_errors_total", "SPOP connections closed for a protocol error.",
	    m->spop_protocol_errors);
	if (o.err)
		return -1;
	return (int)o.off;
}
