/*
 * test_spoa_busypoll.c - adaptive busy polling: an idle loop sleeps in the poller; after an event it
 * polls without sleeping until the window since the LAST event is over, then sleeps again; freeing it
 * gives the loop back its ordinary behaviour.
 *
 * No assertion depends on how fast this machine is: the only waits are usleep()s longer than a window
 * (a lower bound), and "slept" is observed as "made no empty pass".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "busypoll.h"

struct fixture {
	struct ev_loop	*loop;
	int		 pfd[2];
	ev_io		 rio;
	ev_timer	 tm;
	ev_timer	 guard;		/* a broken busypoll fails the test instead of hanging it */
	int		 reads;
	int		 fired;
	uint64_t	 empty_at_fire;
	struct busypoll	*bp;
};

static void
read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct fixture *f = w->data;
	char buf[64];

	(void)loop;
	(void)revents;
	if (read(f->pfd[0], buf, sizeof(buf)) > 0)
		f->reads++;
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct fixture *f = w->data;

	(void)loop;
	(void)revents;
	f->fired++;
	f->empty_at_fire = f->bp != NULL ? busypoll_empty_passes(f->bp) : 0;
}

static void
guard_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
}

static int
setup(void **state)
{
	static struct fixture f;

	memset(&f, 0, sizeof(f));
	f.loop = ev_loop_new(EVFLAG_AUTO);
	if (f.loop == NULL || pipe(f.pfd) == -1)
		return -1;
	ev_io_init(&f.rio, read_cb, f.pfd[0], EV_READ);
	f.rio.data = &f;
	ev_io_start(f.loop, &f.rio);
	ev_init(&f.tm, timer_cb);
	f.tm.data = &f;
	ev_timer_init(&f.guard, guard_cb, 5, 5);
	ev_timer_start(f.loop, &f.guard);
	*state = &f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	busypoll_free(f->bp);
	ev_io_stop(f->loop, &f->rio);
	ev_timer_stop(f->loop, &f->tm);
	ev_timer_stop(f->loop, &f->guard);
	ev_loop_destroy(f->loop);
	close(f->pfd[0]);
	close(f->pfd[1]);
	return 0;
}

static void
poke(struct fixture *f)
{
	assert_int_equal(write(f->pfd[1], "x", 1), 1);
}

static void
test_invalid_window(void **state)
{
	struct fixture *f = *state;

	assert_null(busypoll_new(f->loop, 0));
	assert_null(busypoll_new(f->loop, -1));
	assert_null(busypoll_new(f->loop, 1.0 / 0.0));
	assert_null(busypoll_new(f->loop, 0.0 / 0.0));
}

/* Nothing has happened yet: the loop sleeps until its timer, making no empty pass on the way. */
static void
test_idle_loop_sleeps(void **state)
{
	struct fixture *f = *state;

	assert_non_null(f->bp = busypoll_new(f->loop, 10));
	assert_int_equal(busypoll_spinning(f->bp), 0);
	ev_timer_set(&f->tm, 0.02, 0);
	ev_timer_start(f->loop, &f->tm);
	ev_run(f->loop, EVRUN_ONCE);
	assert_int_equal(f->fired, 1);
	assert_int_equal(f->empty_at_fire, 0);
	/* the timer was activity: now it spins */
	assert_int_equal(busypoll_spinning(f->bp), 1);
}

/* After an event the loop polls without sleeping: passes with nothing to do return at once. */
static void
test_spins_after_event(void **state)
{
	struct fixture *f = *state;
	int i;

	assert_non_null(f->bp = busypoll_new(f->loop, 10));
	poke(f);
	ev_run(f->loop, EVRUN_ONCE);
	assert_int_equal(f->reads, 1);
	assert_int_equal(busypoll_spinning(f->bp), 1);
	/* EVRUN_ONCE would block forever on an idle loop; while spinning every pass returns */
	for (i = 0; i < 5; i++)
		ev_run(f->loop, EVRUN_ONCE);
	assert_true(busypoll_empty_passes(f->bp) >= 5);
	assert_int_equal(busypoll_sleeps(f->bp), 0);
	assert_int_equal(busypoll_spinning(f->bp), 1);
}

/* Once the window since the last event is over, the loop goes back to sleeping. */
static void
test_sleeps_after_window(void **state)
{
	struct fixture *f = *state;
	uint64_t empty;

	assert_non_null(f->bp = busypoll_new(f->loop, 0.02));
	poke(f);
	ev_run(f->loop, EVRUN_ONCE);
	assert_int_equal(busypoll_spinning(f->bp), 1);
	usleep(50 * 1000);
	ev_run(f->loop, EVRUN_ONCE);	/* an empty pass: the window is over */
	assert_int_equal(busypoll_sleeps(f->bp), 1);
	assert_int_equal(busypoll_spinning(f->bp), 0);
	/* and the next pass sleeps until the timer: no empty pass before it fires */
	empty = busypoll_empty_passes(f->bp);
	ev_timer_set(&f->tm, 0.02, 0);
	ev_timer_start(f->loop, &f->tm);
	ev_run(f->loop, EVRUN_ONCE);
	assert_int_equal(f->fired, 1);
	assert_int_equal(f->empty_at_fire, empty);
}

/* The window runs from the last event, not the first: a stream of events keeps it spinning. */
static void
test_window_from_last_event(void **state)
{
	struct fixture *f = *state;
	int i;

	assert_non_null(f->bp = busypoll_new(f->loop, 0.02));
	for (i = 0; i < 3; i++) {
		poke(f);
		ev_run(f->loop, EVRUN_ONCE);
		usleep(30 * 1000);	/* longer than the window, but an event is waiting at the next pass */
		poke(f);
		ev_run(f->loop, EVRUN_ONCE);
	}
	assert_int_equal(f->reads, 6);
	assert_int_equal(busypoll_sleeps(f->bp), 0);
	assert_int_equal(busypoll_spinning(f->bp), 1);
}

/* Freed: the loop is an ordinary loop again (sleeps, runs watchers). */
static void
test_free_restores(void **state)
{
	struct fixture *f = *state;

	assert_non_null(f->bp = busypoll_new(f->loop, 10));
	poke(f);
	ev_run(f->loop, EVRUN_ONCE);
	busypoll_free(f->bp);
	f->bp = NULL;
	assert_null(ev_userdata(f->loop));
	ev_timer_set(&f->tm, 0.01, 0);
	ev_timer_start(f->loop, &f->tm);
	ev_run(f->loop, EVRUN_ONCE);
	assert_int_equal(f->fired, 1);
	poke(f);
	ev_run(f->loop, EVRUN_ONCE);
	assert_int_equal(f->reads, 2);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_invalid_window, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_loop_sleeps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spins_after_event, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sleeps_after_window, setup, teardown),
		cmocka_unit_test_setup_teardown(test_window_from_last_event, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_restores, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
