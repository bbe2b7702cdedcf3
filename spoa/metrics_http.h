/*
 * metrics_http.h - the -metrics-addr endpoint: a minimal non-blocking HTTP/1.0 responder on libev.
 *
 * GET /metrics answers the Prometheus text of metrics_render(); anything else 404 (405 for another
 * method, 400 for garbage, 431 for a request head over 4 KiB). One response per connection, then close;
 * a client that sends nothing for 10 s is dropped.
 */
#ifndef HC_SPOA_METRICS_HTTP_H
#define HC_SPOA_METRICS_HTTP_H

#include <stddef.h>

struct ev_loop;
struct metrics_http;

/* addr is "host:port" or "[v6]:port". NULL with err filled on failure (bad address, port in use). */
struct metrics_http *metrics_http_new(struct ev_loop *loop, const char *addr, char *err, size_t errlen);
void metrics_http_free(struct metrics_http *m);

/* Splits "host:port" / "[v6]:port" into host and port buffers. 0, or -1 with err filled. */
int hostport_split(const char *addr, char *host, size_t hostlen, char *port, size_t portlen,
    char *err, size_t errlen);

#endif
