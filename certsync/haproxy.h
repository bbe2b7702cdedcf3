/*
 * haproxy.h - HAProxy in master-worker mode under certsync's supervision: configuration checks, start,
 * readiness, seamless reload through the master socket, graceful stop.
 *
 * HAProxy runs as `haproxy -W -S <master.sock> -f <cfg>` in the foreground (no -D): the master is our
 * child (supervise.h: restarted with Consul's backoff if it dies), its workers log on our stderr (the
 * config's "log stderr"). Ready = the worker's runtime socket (the config's "stats socket") answers
 * "show info" with the pid of the newest worker listed by the master's "show proc".
 *
 * A reload: `haproxy -c` on the new config first (its output is the error text), then "reload" on the
 * master socket (the master re-executes itself and hands the listening sockets over to the new worker:
 * no connection is refused), then wait until "show proc" lists a new worker generation and its runtime
 * socket answers. Old workers finish their connections (bounded by the config's hard-stop-after).
 * Runtime API changes live in memory only: on_ready is called for every new worker (start, restart of a
 * crashed master, reload) so the daemon re-applies its server slots.
 *
 * No logging here: errors go to callbacks / err buffers.
 */
#ifndef HC_HAPROXY_H
#define HC_HAPROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct ev_loop;
struct hap;

typedef void hap_done_cb(void *arg, int rc, const char *err);

struct hap_opts {
	const char	*bin;		/* "haproxy" (PATH) or a path */
	const char	*cfg_path;	/* the rendered haproxy.cfg */
	const char	*master_sock;	/* -S path (created by HAProxy) */
	const char	*runtime_sock;	/* the config's "stats socket" path */
	double		 ready_timeout;	/* start/reload must be ready within this; <= 0 -> 30 s */
	/* Every time a new worker is ready (first start, restart after a crash, reload). May be NULL. */
	void		(*on_ready)(void *arg, pid_t worker_pid);
	/* The master exited (status as from waitpid); next_delay: restart wait, -1 when stopping. May be NULL. */
	void		(*on_exit)(void *arg, pid_t pid, int status, double next_delay);
	/* Something went wrong outside a start/reload call (restart failed, not ready in time). May be NULL. */
	void		(*on_error)(void *arg, const char *err);
	void		*arg;
};

/*
 * `haproxy -c -f cfg_path` (blocking, bounded at 30 s). 0 when valid; -1 with err = HAProxy's own
 * output (ALERT lines, trimmed to errlen), or why it could not run.
 */
int  hap_check(const char *bin, const char *cfg_path, char *err, size_t errlen);

/* Copies opts. loop must be the default loop. */
struct hap *hap_new(struct ev_loop *loop, const struct hap_opts *o, char *err, size_t errlen);
/* Stops (SIGKILL if still running, bounded) and frees. NULL-safe. Use hap_stop first for a clean stop. */
void hap_free(struct hap *h);

/*
 * Checks the config, starts the master under supervision and waits (on the loop) for readiness; done is
 * called with 0 once ready (on_ready is called just before), -1 with an error (check failed, exited,
 * not ready in time). -1 at once (err filled) if already started or the check fails.
 */
int  hap_start(struct hap *h, hap_done_cb *done, void *arg, char *err, size_t errlen);

/*
 * Seamless reload of the (already rewritten) config: -c check (-1 at once with HAProxy's output on
 * failure: the running config keeps serving), master "reload", wait for the new worker as above.
 * done: 0 when the new generation runs and answers; -1 if the reload failed (the master keeps the old
 * worker: "[failed: N]" in show proc) or timed out. One reload at a time (-1 "busy" otherwise).
 */
int  hap_reload(struct hap *h, hap_done_cb *done, void *arg, char *err, size_t errlen);

/* Graceful stop: SIGUSR1 (soft stop) to the master, SIGKILL after timeout; done when reaped. */
void hap_stop(struct hap *h, double timeout, void (*done)(void *arg), void *arg);

/* Pids: the master (0 if not running) and the newest ready worker (0 if none yet). */
pid_t hap_master_pid(const struct hap *h);
pid_t hap_worker_pid(const struct hap *h);
bool  hap_ready(const struct hap *h);

/* ---- pure helpers (tests) ---- */
/* Parses the master's "show proc": the current worker pid (first entry under "# workers", newest), the
 * master's reload count and failed-reload count. -1 on malformed text. */
int  hap_parse_show_proc(const char *text, size_t len, pid_t *worker, unsigned *reloads, unsigned *failed,
    char *err, size_t errlen);
/* "Pid: N" of a "show info" answer. -1 when absent. */
int  hap_parse_info_pid(const char *text, size_t len, pid_t *pid);

#endif
