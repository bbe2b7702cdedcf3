/*
 * busypoll.h - adaptive busy polling for a libev loop.
 *
 * On a virtual machine an idle vCPU that halts in epoll_wait can take hundreds of microseconds to be
 * woken for a loopback packet (measured on our CI VMs: ~550 us at 2,000 decisions/s, for connect-spoa
 * and for a responder that does nothing alike). HAProxy's "busy-polling" answers this by never
 * sleeping. We do the same, but only while there is work: after any event the loop keeps polling with
 * a zero timeout for `window` seconds, then goes back to sleeping until the next event. A busy agent
 * pays for low latency with CPU; an idle one pays nothing.
 *
 * The loop's userdata and invoke-pending callback are taken (ev_set_userdata, ev_set_invoke_pending_cb);
 * nothing else in the process may set them.
 */
#ifndef SPOA_BUSYPOLL_H
#define SPOA_BUSYPOLL_H

#include <stdint.h>

#include <ev.h>

struct busypoll;

/* window: seconds, > 0 and finite. Returns NULL when out of memory or window is invalid. */
struct busypoll	*busypoll_new(struct ev_loop *, double window);
/* Gives the loop its default invoke-pending callback back. NULL is fine. */
void		 busypoll_free(struct busypoll *);

/* Loop passes that found nothing to do and polled again at once (spinning), since busypoll_new. */
uint64_t	 busypoll_empty_passes(const struct busypoll *);
/* Times the window ran out and the loop went back to sleeping in the poller. */
uint64_t	 busypoll_sleeps(const struct busypoll *);
/* 1 while the loop polls without sleeping. */
int		 busypoll_spinning(const struct busypoll *);

#endif
