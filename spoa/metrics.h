/*
 * metrics.h - connect-spoa's counters, exposed as Prometheus text on -metrics-addr.
 *
 * One process-wide struct: the daemon is single-threaded (one libev loop), so plain increments.
 */
#ifndef HC_SPOA_METRICS_H
#define HC_SPOA_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define SPOA_LAT_BUCKETS 12

struct spoa_metrics {
	/* decisions */
	uint64_t	decisions_allow;
	uint64_t	decisions_deny;
	uint64_t	decisions_error;	/* denied because of an error (agent down, bad cert, deadline) */
	uint64_t	cache_hits;
	uint64_t	cache_misses;
	uint64_t	cache_stale_hits;	/* answered from a stale entry while the agent failed */
	uint64_t	cache_invalidations;
	uint64_t	cache_entries;		/* gauge */
	/* agent */
	uint64_t	agent_requests;
	uint64_t	agent_errors;
	uint64_t	agent_latency_count;
	double		agent_latency_sum;	/* seconds */
	uint64_t	agent_latency_bucket[SPOA_LAT_BUCKETS];	/* cumulative, see metrics.c for bounds */
	/* SPOP */
	uint64_t	spop_conns_total;
	uint64_t	spop_conns_active;	/* gauge */
	uint64_t	spop_frames_in;
	uint64_t	spop_frames_out;
	uint64_t	spop_notify;
	uint64_t	spop_healthchecks;
	uint64_t	spop_disconnects_sent;
	uint64_t	spop_protocol_errors;
};

extern struct spoa_metrics spoa_metrics;

/* Records one agent round trip. */
void metrics_observe_agent_latency(double seconds);
/* Writes the Prometheus text exposition into buf; returns bytes written or -1 when it does not fit. */
int  metrics_render(char *buf, size_t buflen);

#endif
