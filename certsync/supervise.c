/*
 * supervise.c - children with Consul's managed-proxy restart backoff, on the default libev loop.
 *
 * libev reaps children itself (its SIGCHLD watcher runs waitpid(-1, WNOHANG) from the loop) and hands
 * each exit to our ev_child watcher: nothing is done in a signal handler. A start is fork + exec with a
 * close-on-exec pipe that carries exec's errno back, so a missing binary is a clear error, and the
 * failed child's exit goes through the same restart path as a crash.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ev.h>

#include "supervise.h"

struct sv_child {
	struct ev_loop	*loop;
	char		*name;
	char		**argv;
	int		 stop_signal;
	double		 stop_timeout;
	bool		 restart;
	struct sv_opts	 o;		/* callbacks, arg, clock, unit (argv/name point to our copies) */

	pid_t		 pid;
	unsigned	 starts;
	unsigned	 attempt;	/* attempts in the current unhealthy streak */
	double		 healthy_at;	/* up until this time resets the streak; 0 = never started */
	bool		 stopping;
	bool		 stopped;
	void		(*done)(void *arg);
	void		*done_arg;

	ev_child	 cw;
	ev_timer	 restart_tm;
	ev_timer	 kill_tm;
	ev_timer	 done_tm;

	/* A callback may sv_free its own child: the memory is released when the outermost call into a
	 * user callback has returned (in_cb counts them; doomed marks the pending release). */
	unsigned	 in_cb;
	bool		 doomed;
};

static void sv_release(struct sv_child *c);

/* Brackets a user callback. sv_cb_leave returns true when c was freed meanwhile: the caller must not
 * touch c again. */
static void
sv_cb_enter(struct sv_child *c)
{
	c->in_cb++;
}

static bool
sv_cb_leave(struct sv_child *c)
{
	c->in_cb--;
	if (!c->doomed)
		return false;
	if (c->in_cb == 0)
		sv_release(c);
	return true;
}

double
sv_backoff_delay(unsigned attempt)
{
	unsigned exp;
	double w;

	if (attempt <= SV_BACKOFF_MIN)
		return 0.0;
	exp = attempt - SV_BACKOFF_MIN;
	if (exp > 31)
		exp = 31;
	w = ldexp(1.0, (int)exp);
	return w > SV_BACKOFF_MAX ? SV_BACKOFF_MAX : w;
}

static double
sv_now(struct sv_child *c)
{
	if (c->o.clock != NULL)
		return c->o.clock(c->o.arg);
	return ev_now(c->loop);
}

static void
sv_error(struct sv_child *c, const char *what, const char *detail)
{
	char buf[512];

	if (c->o.on_error == NULL)
		return;
	snprintf(buf, sizeof(buf), "%s: %s: %s", c->name, what, detail);
	sv_cb_enter(c);
	c->o.on_error(c->o.arg, buf);
	(void)sv_cb_leave(c);
}

/* In the child, between fork and exec: only async-signal-safe calls. */
static void
sv_child_exec(struct sv_child *c, pid_t parent, int errfd)
{
	sigset_t all;
	int fd, e;

	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGUSR1, SIG_DFL);
	signal(SIGUSR2, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	(void)setpgid(0, 0);
	/* If we die (even by SIGKILL) the kernel stops the child; it must not outlive its supervisor. */
	(void)prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != parent)
		_exit(127);
	fd = open("/dev/null", O_RDONLY);
	if (fd != -1 && fd != STDIN_FILENO) {
		(void)dup2(fd, STDIN_FILENO);
		close(fd);
	}
	execvp(c->argv[0], c->argv);
	e = errno;
	(void)!write(errfd, &e, sizeof(e));
	_exit(127);
}

static void sv_child_cb(struct ev_loop *loop, ev_child *w, int revents);

static void
sv_spawn(struct sv_child *c)
{
	int p[2], e = 0;
	ssize_t n;
	pid_t pid, parent = getpid();

	if (pipe2(p, O_CLOEXEC) == -1) {
		sv_error(c, "pipe", strerror(errno));
		return;
	}
	c->healthy_at = sv_now(c) + SV_HEALTHY_AFTER;
	pid = fork();
	if (pid == -1) {
		e = errno;
		close(p[0]);
		close(p[1]);
		c->in_cb++;
		sv_error(c, "fork", strerror(e));
		if (sv_cb_leave(c))
			return;
		/* Nothing will exit to drive a retry: schedule one as if it had crashed. */
		c->pid = 0;
		ev_timer_set(&c->restart_tm, 1.0, 0.0);
		ev_timer_start(c->loop, &c->restart_tm);
		return;
	}
	if (pid == 0) {
		close(p[0]);
		sv_child_exec(c, parent, p[1]);
	}
	close(p[1]);
	c->pid = pid;
	ev_child_set(&c->cw, pid, 0);
	ev_child_start(c->loop, &c->cw);
	do {
		n = read(p[0], &e, sizeof(e));
	} while (n == -1 && errno == EINTR);
	close(p[0]);
	if (n == (ssize_t)sizeof(e)) {
		/* exec failed; the child exits 127 and is reaped through cw like any exit. */
		char detail[300];

		snprintf(detail, sizeof(detail), "%s: %s", c->argv[0], strerror(e));
		sv_error(c, "cannot execute", detail);
		return;
	}
	c->starts++;
	if (c->o.on_start != NULL) {
		sv_cb_enter(c);
		c->o.on_start(c->o.arg, pid);
		(void)sv_cb_leave(c);
	}
}

/* Decides the next attempt (Consul: reset after a healthy run, count, wait) and starts or schedules it. */
static double
sv_schedule(struct sv_child *c)
{
	double delay, now = sv_now(c);

	if (c->healthy_at == 0.0 || now >= c->healthy_at)
		c->attempt = 0;
	c->attempt++;
	delay = sv_backoff_delay(c->attempt) * (c->o.backoff_unit > 0 ? c->o.backoff_unit : 1.0);
	return delay;
}

static void
sv_restart_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sv_child *c = w->data;

	ev_timer_stop(loop, w);
	if (c->stopping || c->stopped)
		return;
	sv_spawn(c);
}

static void
sv_finish_stop(struct sv_child *c)
{
	void (*done)(void *) = c->done;
	void *arg = c->done_arg;

	c->stopped = true;
	c->stopping = false;
	ev_timer_stop(c->loop, &c->kill_tm);
	ev_timer_stop(c->loop, &c->restart_tm);
	c->done = NULL;
	if (done != NULL) {
		sv_cb_enter(c);
		done(arg);
		(void)sv_cb_leave(c);
	}
}

static void
sv_child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	struct sv_child *c = w->data;
	pid_t pid = w->rpid;
	int status = w->rstatus;
	double delay = -1.0;

	ev_child_stop(loop, w);
	if (pid != c->pid)
		return;
	c->pid = 0;
	if (!c->stopping && c->restart)
		delay = sv_schedule(c);
	/* on_exit may free c (a start that failed gives up): nothing of c is touched after that. */
	sv_cb_enter(c);
	if (c->o.on_exit != NULL)
		c->o.on_exit(c->o.arg, pid, status, delay);
	if (sv_cb_leave(c))
		return;
	if (c->stopping || !c->restart) {
		sv_finish_stop(c);
		return;
	}
	ev_timer_set(&c->restart_tm, delay, 0.0);
	ev_timer_start(loop, &c->restart_tm);
}

static void
sv_kill_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sv_child *c = w->data;

	ev_timer_stop(loop, w);
	if (c->pid > 0) {
		/* The whole group: an HAProxy master's workers too. */
		if (kill(-c->pid, SIGKILL) == -1)
			(void)kill(c->pid, SIGKILL);
	}
}

static void
sv_done_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sv_child *c = w->data;

	ev_timer_stop(loop, w);
	sv_finish_stop(c);
}

struct sv_child *
sv_start(struct ev_loop *loop, const struct sv_opts *o, char *err, size_t errlen)
{
	struct sv_child *c;
	size_t n, i;

	if (o == NULL || o->argv == NULL || o->argv[0] == NULL) {
		snprintf(err, errlen, "supervise: no program to run");
		return NULL;
	}
	if (!ev_is_default_loop(loop)) {
		snprintf(err, errlen, "supervise: child watchers need the default loop");
		return NULL;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL)
		goto oom;
	c->loop = loop;
	c->o = *o;
	c->name = strdup(o->name != NULL ? o->name : o->argv[0]);
	for (n = 0; o->argv[n] != NULL; n++)
		;
	c->argv = calloc(n + 1, sizeof(char *));
	if (c->name == NULL || c->argv == NULL)
		goto oom;
	for (i = 0; i < n; i++)
		if ((c->argv[i] = strdup(o->argv[i])) == NULL)
			goto oom;
	c->o.name = c->name;
	c->o.argv = c->argv;
	c->stop_signal = o->stop_signal > 0 ? o->stop_signal : SIGTERM;
	c->stop_timeout = o->stop_timeout > 0 ? o->stop_timeout : 10.0;
	c->restart = o->restart;
	ev_child_init(&c->cw, sv_child_cb, 0, 0);
	c->cw.data = c;
	ev_timer_init(&c->restart_tm, sv_restart_cb, 0.0, 0.0);
	c->restart_tm.data = c;
	ev_timer_init(&c->kill_tm, sv_kill_cb, 0.0, 0.0);
	c->kill_tm.data = c;
	ev_timer_init(&c->done_tm, sv_done_cb, 0.0, 0.0);
	c->done_tm.data = c;
	c->attempt = 1;
	sv_spawn(c);
	return c;
oom:
	snprintf(err, errlen, "supervise: out of memory");
	sv_free(c);
	return NULL;
}

pid_t
sv_pid(const struct sv_child *c)
{
	return c->pid;
}

unsigned
sv_starts(const struct sv_child *c)
{
	return c->starts;
}

bool
sv_active(const struct sv_child *c)
{
	return !c->stopped;
}

void
sv_stop(struct sv_child *c, void (*done)(void *arg), void *arg)
{
	c->done = done;
	c->done_arg = arg;
	if (c->stopped) {
		ev_timer_set(&c->done_tm, 0.0, 0.0);
		ev_timer_start(c->loop, &c->done_tm);
		return;
	}
	if (c->stopping)
		return;
	c->stopping = true;
	ev_timer_stop(c->loop, &c->restart_tm);
	if (c->pid <= 0) {
		ev_timer_set(&c->done_tm, 0.0, 0.0);
		ev_timer_start(c->loop, &c->done_tm);
		return;
	}
	(void)kill(c->pid, c->stop_signal);
	ev_timer_set(&c->kill_tm, c->stop_timeout, 0.0);
	ev_timer_start(c->loop, &c->kill_tm);
}

void
sv_set_stop_timeout(struct sv_child *c, double timeout)
{
	if (timeout > 0)
		c->stop_timeout = timeout;
}

int
sv_signal(struct sv_child *c, int sig)
{
	if (c->pid <= 0)
		return -1;
	return kill(c->pid, sig);
}

void
sv_free(struct sv_child *c)
{
	if (c == NULL || c->doomed)
		return;
	if (c->loop != NULL) {
		ev_child_stop(c->loop, &c->cw);
		ev_timer_stop(c->loop, &c->restart_tm);
		ev_timer_stop(c->loop, &c->kill_tm);
		ev_timer_stop(c->loop, &c->done_tm);
	}
	if (c->pid > 0) {
		int st;

		if (kill(-c->pid, SIGKILL) == -1)
			(void)kill(c->pid, SIGKILL);
		while (waitpid(c->pid, &st, 0) == -1 && errno == EINTR)
			;
	}
	c->pid = 0;
	if (c->in_cb > 0) {
		/* Called from one of c's own callbacks: released when it returns. */
		c->doomed = true;
		return;
	}
	sv_release(c);
}

static void
sv_release(struct sv_child *c)
{
	size_t i;

	if (c->argv != NULL)
		for (i = 0; c->argv[i] != NULL; i++)
			free(c->argv[i]);
	free(c->argv);
	free(c->name);
	free(c);
}
