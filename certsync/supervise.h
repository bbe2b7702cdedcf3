/*
 * supervise.h - certsync's children (the HAProxy master, connect-spoa): start, restart with Consul's
 * managed-proxy backoff, graceful stop. On the DEFAULT libev loop (ev_child watchers: libev reaps with
 * waitpid from its own SIGCHLD watcher; no work is done in a signal handler).
 *
 * Children inherit our stdin (/dev/null is put there), stdout and stderr so their logs join our stream.
 * Each child is put in its own process group (so a terminal's SIGINT to our group does not hit it
 * before we stop it in order) and gets PR_SET_PDEATHSIG(SIGTERM): if we are killed (the agent sends
 * SIGINT, then SIGKILL after 5 s) the children are stopped by the kernel and never outlive us.
 *
 * Backoff (Consul agent/proxyprocess/daemon.go): each start within an unhealthy streak is an attempt;
 * attempts 1..3 start at once, attempt n > 3 waits 2^(n-3) s capped at 60 s; a child that stayed up at
 * least 10 s resets the streak (its next start is attempt 1 again).
 */
#ifndef HC_SUPERVISE_H
#define HC_SUPERVISE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct ev_loop;
struct sv_child;

#define SV_HEALTHY_AFTER	10.0	/* seconds up that reset the backoff streak */
#define SV_BACKOFF_MIN		3	/* attempts started without waiting */
#define SV_BACKOFF_MAX		60.0	/* cap of one wait, seconds */

/* Delay before start attempt n (1-based) of an unhealthy streak, in seconds. Pure. */
double sv_backoff_delay(unsigned attempt);

struct sv_opts {
	const char	 *name;		/* for error texts: "haproxy", "connect-spoa" */
	char *const	 *argv;		/* argv[0] is the program (PATH is searched); copied */
	int		  stop_signal;	/* graceful stop: SIGUSR1 for the HAProxy master, SIGTERM for spoa */
	double		  stop_timeout;	/* then SIGKILL; <= 0 -> 10 s */
	bool		  restart;	/* restart on exit (with backoff) */
	/* Called after each successful fork+exec attempt (pid of the child). May be NULL. */
	void		(*on_start)(void *arg, pid_t pid);
	/*
	 * Called when the child exited (status as from waitpid), before a restart is scheduled;
	 * next_delay is the wait before the restart (-1: no restart, stopping or restart=false). May be NULL.
	 */
	void		(*on_exit)(void *arg, pid_t pid, int status, double next_delay);
	/* Called when a start fails (fork or exec); the restart schedule goes on. May be NULL. */
	void		(*on_error)(void *arg, const char *err);
	void		 *arg;
	/* Tests: the clock for "up 10 s" (NULL: ev_now), and the unit of backoff waits (<= 0: 1 s). */
	double		(*clock)(void *arg);
	double		  backoff_unit;
};

/* Creates and starts the child (attempt 1). loop must be the default loop (ev_child). */
struct sv_child *sv_start(struct ev_loop *loop, const struct sv_opts *o, char *err, size_t errlen);
/* Current pid, 0 when not running (waiting for a restart, or stopped). */
pid_t sv_pid(const struct sv_child *c);
/* Number of starts so far (fork+exec attempts that produced a process). */
unsigned sv_starts(const struct sv_child *c);
/* True when running, waiting for a restart or stopping; false once stopped for good. */
bool sv_active(const struct sv_child *c);
/*
 * Graceful stop: no more restarts; stop_signal, then SIGKILL after stop_timeout. done is called once the
 * child is reaped (at once, from the loop, if it was not running). Calling it again only replaces done.
 */
void sv_stop(struct sv_child *c, void (*done)(void *arg), void *arg);
/* Changes the graceful stop timeout (<= 0 keeps the current one); for a stop about to be asked. */
void sv_set_stop_timeout(struct sv_child *c, double timeout);
/* Sends sig to the child if running (e.g. SIGUSR2 to the HAProxy master). 0, or -1 if not running. */
int  sv_signal(struct sv_child *c, int sig);
/* Frees a child; if still running it is SIGKILLed and reaped (blocking, bounded). NULL-safe. */
void sv_free(struct sv_child *c);

#endif
