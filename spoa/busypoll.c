/*
 * busypoll.c - adaptive busy polling for a libev loop (see busypoll.h).
 *
 * libev polls with a zero timeout while any idle watcher is active, and queues idle watchers of the
 * lowest priority only on passes where nothing else is pending. So:
 *   - every pass that has events (I/O, timers, signals) goes through our invoke-pending callback with
 *     at least one pending watcher that is not ours: that is activity; start the idle watcher;
 *   - a pass with nothing to do invokes only the idle watcher: once the window since the last
 *     activity is over, stop it, and the next poll sleeps as usual.
 */
#include <math.h>
#include <stdlib.h>

#include "busypoll.h"

struct busypoll {
	struct ev_loop	*loop;
	ev_idle		 idle;
	double		 window;
	ev_tstamp	 last_active;
	uint64_t	 empty_passes;
	uint64_t	 sleeps;
};

static void
idle_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	struct busypoll *bp = w->data;

	(void)revents;
	if (ev_now(loop) - bp->last_active >= bp->window) {
		ev_idle_stop(loop, w);
		bp->sleeps++;
	} else
		bp->empty_passes++;
}

static void
invoke_pending(struct ev_loop *loop)
{
	struct busypoll	*bp = ev_userdata(loop);
	unsigned	 ours = ev_is_pending(&bp->idle) ? 1u : 0u;

	if (ev_pending_count(loop) > ours) {
		bp->last_active = ev_now(loop);
		if (!ev_is_active(&bp->idle))
			ev_idle_start(loop, &bp->idle);
	}
	ev_invoke_pending(loop);
}

struct busypoll *
busypoll_new(struct ev_loop *loop, double window)
{
	struct busypoll *bp;

	if (!(window > 0) || !isfinite(window))
		return NULL;
	if ((bp = calloc(1, sizeof(*bp))) == NULL)
		return NULL;
	bp->loop = loop;
	bp->window = window;
	bp->last_active = ev_now(loop);
	ev_idle_init(&bp->idle, idle_cb);
	ev_set_priority(&bp->idle, EV_MINPRI);
	bp->idle.data = bp;
	ev_set_userdata(loop, bp);
	ev_set_invoke_pending_cb(loop, invoke_pending);
	return bp;
}

void
busypoll_free(struct busypoll *bp)
{
	if (bp == NULL)
		return;
	ev_idle_stop(bp->loop, &bp->idle);
	ev_set_invoke_pending_cb(bp->loop, ev_invoke_pending);
	ev_set_userdata(bp->loop, NULL);
	free(bp);
}

uint64_t
busypoll_empty_passes(const struct busypoll *bp)
{
	return bp->empty_passes;
}

uint64_t
busypoll_sleeps(const struct busypoll *bp)
{
	return bp->sleeps;
}

int
busypoll_spinning(const struct busypoll *bp)
{
	return ev_is_active(&bp->idle);
}
