/*
 * test_certsync_supervise.c - Consul's restart backoff, restarting a crashing child, graceful stop.
 * No wall-time assertions: the backoff clock is injected and its unit scaled down; a safety timer only
 * ends a run that would otherwise hang (and fails it).
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>

#include "supervise.h"

static void
test_backoff_schedule(void **state)
{
	/* Consul: attempts 1..3 immediate, then 2^(n-3) s, capped at 60 s. */
	assert_true(sv_backoff_delay(0) == 0.0);
	assert_true(sv_backoff_delay(1) == 0.0);
	assert_true(sv_backoff_delay(2) == 0.0);
	assert_true(sv_backoff_delay(3) == 0.0);
	assert_true(sv_backoff_delay(4) == 2.0);
	assert_true(sv_backoff_delay(5) == 4.0);
	assert_true(sv_backoff_delay(6) == 8.0);
	assert_true(sv_backoff_delay(7) == 16.0);
	assert_true(sv_backoff_delay(8) == 32.0);
	assert_true(sv_backoff_delay(9) == 60.0);
	assert_true(sv_backoff_delay(40) == 60.0);
	assert_true(sv_backoff_delay(4000000000u) == 60.0);
}

struct run {
	struct ev_loop	*loop;
	struct sv_child	*c;
	double		 now;		/* injected clock */
	double		 step;		/* added to now on every read */
	double		 delays[32];
	int		 statuses[32];
	unsigned	 nexits;
	unsigned	 stop_after;	/* stop once this many exits were seen */
	unsigned	 nstarts;
	bool		 done;
	bool		 free_in_exit;	/* on_exit frees the child, as a start that gives up does */
	bool		 timed_out;
	char		 errors[512];
};

static double
clock_cb(void *arg)
{
	struct run *r = arg;

	r->now += r->step;
	return r->now;
}

static void
on_start(void *arg, pid_t pid)
{
	struct run *r = arg;

	assert_true(pid > 0);
	r->nstarts++;
}

static void
stopped(void *arg)
{
	struct run *r = arg;

	r->done = true;
	ev_break(r->loop, EVBREAK_ALL);
}

static void
on_exit_cb(void *arg, pid_t pid, int status, double next_delay)
{
	struct run *r = arg;

	if (r->nexits < 32) {
		r->delays[r->nexits] = next_delay;
		r->statuses[r->nexits] = status;
	}
	r->nexits++;
	if (r->free_in_exit) {
		sv_free(r->c);
		r->c = NULL;
		r->done = true;
		return;
	}
	if (r->stop_after > 0 && r->nexits == r->stop_after)
		sv_stop(r->c, stopped, r);
}

static void
on_error(void *arg, const char *err)
{
	struct run *r = arg;

	snprintf(r->errors, sizeof(r->errors), "%s", err);
}

static void
safety_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct run *r = w->data;

	r->timed_out = true;
	ev_break(loop, EVBREAK_ALL);
}

static void
run_loop(struct run *r, double safety)
{
	ev_timer t;

	ev_timer_init(&t, safety_cb, safety, 0.0);
	t.data = r;
	ev_timer_start(r->loop, &t);
	ev_run(r->loop, 0);
	ev_timer_stop(r->loop, &t);
	assert_false(r->timed_out);
}

static struct sv_child *
start(struct run *r, char *const *argv, bool restart, double unit)
{
	struct sv_opts o;
	char err[256];
	struct sv_child *c;

	memset(&o, 0, sizeof(o));
	o.name = "child";
	o.argv = argv;
	o.stop_signal = SIGTERM;
	o.stop_timeout = 0.3;
	o.restart = restart;
	o.on_start = on_start;
	o.on_exit = on_exit_cb;
	o.on_error = on_error;
	o.arg = r;
	o.clock = clock_cb;
	o.backoff_unit = unit;
	c = sv_start(r->loop, &o, err, sizeof(err));
	assert_non_null(c);
	r->c = c;
	return c;
}

static void
test_restart_crashing_child(void **state)
{
	struct run r;
	char *argv[] = { "/bin/sh", "-c", "exit 1", NULL };
	struct sv_child *c;
	double unit = 0.001;

	memset(&r, 0, sizeof(r));
	r.loop = EV_DEFAULT;
	r.step = 0.0;		/* time never advances: never healthy, the streak grows */
	r.stop_after = 6;
	c = start(&r, argv, true, unit);
	run_loop(&r, 60.0);
	assert_true(r.done);
	assert_int_equal(r.nexits, 6);
	assert_int_equal(sv_starts(c), 6);
	assert_int_equal(r.nstarts, 6);
	for (unsigned i = 0; i < 6; i++) {
		assert_true(WIFEXITED(r.statuses[i]));
		assert_int_equal(WEXITSTATUS(r.statuses[i]), 1);
	}
	/* after start 1, 2: immediate (attempts 2, 3); then attempts 4, 5, 6 wait 2, 4, 8 units */
	assert_true(r.delays[0] == 0.0);
	assert_true(r.delays[1] == 0.0);
	assert_true(r.delays[2] == 2 * unit);
	assert_true(r.delays[3] == 4 * unit);
	assert_true(r.delays[4] == 8 * unit);
	assert_true(r.delays[5] == 16 * unit);	/* scheduled, but the stop asked in on_exit cancels it */
	assert_false(sv_active(c));
	assert_int_equal(sv_pid(c), 0);
	sv_free(c);
}

static void
test_healthy_run_resets_streak(void **state)
{
	struct run r;
	char *argv[] = { "/bin/sh", "-c", "exit 3", NULL };
	struct sv_child *c;

	memset(&r, 0, sizeof(r));
	r.loop = EV_DEFAULT;
	r.step = 11.0;		/* every run looks longer than 10 s: each exit starts a new streak */
	r.stop_after = 6;
	c = start(&r, argv, true, 1.0);
	run_loop(&r, 60.0);
	assert_int_equal(r.nexits, 6);
	for (unsigned i = 0; i < 5; i++)
		assert_true(r.delays[i] == 0.0);
	sv_free(c);
}

static void
test_graceful_stop(void **state)
{
	struct run r;
	/* exec: the shell becomes sleep, which dies of SIGTERM */
	char *argv[] = { "/bin/sh", "-c", "exec sleep 30", NULL };
	struct sv_child *c;

	memset(&r, 0, sizeof(r));
	r.loop = EV_DEFAULT;
	c = start(&r, argv, true, 1.0);
	assert_true(sv_pid(c) > 0);
	assert_int_equal(kill(sv_pid(c), 0), 0);
	sv_stop(c, stopped, &r);
	run_loop(&r, 30.0);
	assert_true(r.done);
	assert_int_equal(r.nexits, 1);
	assert_true(WIFSIGNALED(r.statuses[0]));
	assert_int_equal(WTERMSIG(r.statuses[0]), SIGTERM);
	assert_int_equal(r.nstarts, 1);		/* not restarted */
	sv_free(c);
}

static void
test_stop_escalates_to_sigkill(void **state)
{
	struct run r;
	char *argv[] = { "/bin/sh", "-c", "trap '' TERM; while :; do sleep 0.05; done", NULL };
	struct sv_child *c;

	memset(&r, 0, sizeof(r));
	r.loop = EV_DEFAULT;
	c = start(&r, argv, true, 1.0);
	/* let the shell install its trap before asking it to stop */
	usleep(200000);
	sv_stop(c, stopped, &r);
	run_loop(&r, 30.0);
	assert_true(r.done);
	assert_int_equal(r.nexits, 1);
	assert_true(WIFSIGNALED(r.statuses[0]));
	assert_int_equal(WTERMSIG(r.statuses[0]), SIGKILL);
	sv_free(c);
}

static void
break_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	ev_break(loop, EVBREAK_ALL);
}

/*
 * The exit callback frees its own child (connect-certsync gives up on an HAProxy that died while
 * starting): the supervisor must not touch the child afterwards, nor restart it. ASan catches a
 * use after free here; a restart would show as a second start.
 */
static void
test_free_from_exit_callback(void **state)
{
	struct run r;
	char *argv[] = { "/bin/sh", "-c", "exit 3", NULL };
	ev_timer settle;

	memset(&r, 0, sizeof(r));
	r.loop = EV_DEFAULT;
	r.free_in_exit = true;
	(void)start(&r, argv, true, 0.01);
	ev_timer_init(&settle, break_cb, 0.5, 0.0);
	ev_timer_start(r.loop, &settle);
	run_loop(&r, 30.0);
	ev_timer_stop(r.loop, &settle);
	assert_true(r.done);
	assert_null(r.c);
	assert_int_equal(r.nexits, 1);
	assert_int_equal(r.nstarts, 1);
}

static void
test_exec_failure_reported(void **state)
{
	struct run r;
	char *argv[] = { "/nonexistent/connect-spoa", NULL };
	struct sv_child *c;

	memset(&r, 0, sizeof(r));
	r.loop = EV_DEFAULT;
	r.stop_after = 1;
	c = start(&r, argv, false, 1.0);
	run_loop(&r, 30.0);
	assert_non_null(strstr(r.errors, "cannot execute"));
	assert_non_null(strstr(r.errors, "/nonexistent/connect-spoa"));
	assert_int_equal(sv_starts(c), 0);
	assert_false(sv_active(c));
	sv_free(c);
}

static void
test_stop_when_waiting_for_restart(void **state)
{
	struct run r;
	char *argv[] = { "/bin/sh", "-c", "exit 2", NULL };
	struct sv_child *c;

	memset(&r, 0, sizeof(r));
	r.loop = EV_DEFAULT;
	r.stop_after = 0;
	/* unit 100 s: after the 3rd exit the restart waits 200 s; stop must not wait for it */
	c = start(&r, argv, true, 100.0);
	while (r.nexits < 3) {
		ev_run(r.loop, EVRUN_ONCE);
	}
	assert_true(r.delays[2] == 200.0);
	assert_int_equal(sv_pid(c), 0);
	sv_stop(c, stopped, &r);
	run_loop(&r, 30.0);
	assert_true(r.done);
	assert_int_equal(r.nstarts, 3);
	sv_free(c);
}

/* The agent may SIGKILL us (SIGINT, then SIGKILL after 5 s): our children must not survive it. */
static void
test_child_dies_with_supervisor(void **state)
{
	int p[2];
	pid_t mid, grandchild = 0;
	ssize_t n;
	int st, i;

	assert_int_equal(pipe(p), 0);
	mid = fork();
	assert_true(mid != -1);
	if (mid == 0) {
		struct run r;
		char *argv[] = { "/bin/sh", "-c", "exec sleep 60", NULL };
		struct sv_child *c;
		pid_t gc;

		close(p[0]);
		ev_loop_fork(EV_DEFAULT);
		memset(&r, 0, sizeof(r));
		r.loop = EV_DEFAULT;
		c = start(&r, argv, true, 1.0);
		gc = sv_pid(c);
		(void)!write(p[1], &gc, sizeof(gc));
		ev_run(r.loop, 0);	/* until killed */
		_exit(0);
	}
	close(p[1]);
	n = read(p[0], &grandchild, sizeof(grandchild));
	close(p[0]);
	assert_int_equal(n, (ssize_t)sizeof(grandchild));
	assert_true(grandchild > 0);
	assert_int_equal(kill(grandchild, 0), 0);
	assert_int_equal(kill(mid, SIGKILL), 0);
	assert_int_equal(waitpid(mid, &st, 0), mid);
	/* PR_SET_PDEATHSIG delivers SIGTERM; init reaps it. Bounded poll, no timing assertion. */
	for (i = 0; i < 400 && kill(grandchild, 0) == 0; i++)
		usleep(25000);
	assert_int_equal(kill(grandchild, 0), -1);
	assert_int_equal(errno, ESRCH);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff_schedule),
		cmocka_unit_test(test_restart_crashing_child),
		cmocka_unit_test(test_healthy_run_resets_streak),
		cmocka_unit_test(test_graceful_stop),
		cmocka_unit_test(test_stop_escalates_to_sigkill),
		cmocka_unit_test(test_exec_failure_reported),
		cmocka_unit_test(test_free_from_exit_callback),
		cmocka_unit_test(test_stop_when_waiting_for_restart),
		cmocka_unit_test(test_child_dies_with_supervisor),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
