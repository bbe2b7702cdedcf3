/*
 * fuzz_spoa_frame.c - arbitrary bytes into the SPOP codec and into a whole server connection.
 *
 * 1. The codec: the input is cut into length-prefixed frames as a peer would send them, and each one
 *    goes through the frame decoder and the HELLO / NOTIFY / DISCONNECT / KV-list decoders; the raw
 *    input also goes straight into each decoder.
 * 2. The connection state machine: the input is written into one end of a socket pair whose other end
 *    the server adopts, our side is shut down, and the loop runs until the server has closed. The fake
 *    check allows, denies, or (target "async") stays pending until the connection closes, so the
 *    cancel path runs too; every pending check must be cancelled by the end of the input.
 */
#include <sys/socket.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "server.h"
#include "spop.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct ev_loop		*loop;
static struct spoa_server	*srv;
static long			 pending;	/* async checks not yet cancelled */

struct fake_pending {
	authz_done_cb	*done;
	void		*arg;
};

static struct authz_pending *
fake_check(void *ctx, const struct authz_query *q, authz_done_cb *done, void *arg)
{
	struct authz_decision	 d = { .allow = false, .source_app = "", .reason = "denied" };
	struct fake_pending	*p;

	/* touch every byte the server hands us: ASan checks they are inside the frame */
	if (q->der != NULL && q->der_len > 0)
		d.allow = (q->der[0] ^ q->der[q->der_len - 1]) == 0x5a;
	if (q->uri != NULL && q->uri_len > 0 && q->uri[q->uri_len - 1] == 'a')
		d.source_app = "web";
	if (q->target != NULL && q->target_len == 5 && memcmp(q->target, "async", 5) == 0) {
		if ((p = malloc(sizeof(*p))) == NULL)
			abort();
		p->done = done;
		p->arg = arg;
		pending++;
		return (struct authz_pending *)p;
	}
	done(arg, &d);
	return NULL;
}

static void
fake_cancel(void *ctx, struct authz_pending *h)
{
	pending--;
	free(h);
}

static void
fuzz_codec_frame(const uint8_t *p, size_t n)
{
	struct spop_frame	 f;
	struct spop_hello	 h;
	struct spop_notify_iter	 it;
	struct spop_cursor	 c;
	struct spop_str		 name;
	struct spop_kv		 kv;
	unsigned		 nargs;
	uint32_t		 fs, st;

	/* a frame refused for fragmentation only still has a payload to walk */
	if (spop_frame_decode(p, n, &f) == SPOP_ERR_INVALID)
		return;
	switch (f.type) {
	case SPOP_FRM_HAPROXY_HELLO:
		(void)spop_hello_parse(f.payload, f.payload_len, SPOP_MAX_FRAME_CAP, &h, &fs);
		break;
	case SPOP_FRM_NOTIFY:
		spop_notify_init(&it, f.payload, f.payload_len);
		while (spop_notify_next_msg(&it, &name, &nargs) == 1)
			while (spop_notify_next_arg(&it, &kv) == 1)
				;
		break;
	case SPOP_FRM_HAPROXY_DISCON:
	case SPOP_FRM_AGENT_DISCON:
		(void)spop_disconnect_parse(f.payload, f.payload_len, &st, &name);
		break;
	default:
		spop_cursor_init(&c, f.payload, f.payload_len);
		while (spop_kv_next(&c, &kv) == 1)
			;
		break;
	}
}

static void
fuzz_codec(const uint8_t *data, size_t size)
{
	size_t			 off = 0, len;
	struct spop_hello	 h;
	struct spop_notify_iter	 it;
	struct spop_cursor	 c;
	struct spop_str		 name;
	struct spop_kv		 kv;
	struct spop_data	 d;
	unsigned		 nargs;
	uint32_t		 fs;
	uint64_t		 v;
	uint8_t			 enc[SPOP_VARINT_MAX], out[1024];
	struct spop_writer	 w;

	/* as a stream of frames */
	while (size - off >= 4) {
		len = (size_t)data[off] << 24 | (size_t)data[off + 1] << 16 | (size_t)data[off + 2] << 8 | data[off + 3];
		off += 4;
		if (len > size - off)
			len = size - off;
		fuzz_codec_frame(data + off, len);
		off += len;
	}
	/* raw, into each decoder */
	fuzz_codec_frame(data, size);
	(void)spop_hello_parse(data, size, SPOP_MAX_FRAME_CAP, &h, &fs);
	spop_notify_init(&it, data, size);
	while (spop_notify_next_msg(&it, &name, &nargs) == 1)
		while (spop_notify_next_arg(&it, &kv) == 1)
			;
	spop_cursor_init(&c, data, size);
	while (spop_kv_next(&c, &kv) == 1)
		;
	/* typed data: whatever decodes can be encoded again */
	spop_cursor_init(&c, data, size);
	while (spop_get_data(&c, &d) == 0) {
		spop_writer_init(&w, out, sizeof(out));
		spop_put_data(&w, &d);
	}
	/* varints round-trip */
	if (spop_varint_decode(data, size, &v) > 0) {
		size_t n = spop_varint_encode(v, enc);
		uint64_t back;

		if (spop_varint_decode(enc, n, &back) != (int)n || back != v)
			abort();
	}
}

static void
fuzz_connection(const uint8_t *data, size_t size)
{
	int		sv[2];
	size_t		off = 0;
	ssize_t		n;
	uint8_t		sink[65536];
	long		spins = 0;
	bool		shut = false;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		abort();
	if (fcntl(sv[1], F_SETFL, O_NONBLOCK) == -1 || spoa_server_adopt(srv, sv[0]) == -1)
		abort();
	while (spoa_server_nconns(srv) > 0 || pending > 0) {
		if (off < size) {
			n = send(sv[1], data + off, size - off, MSG_NOSIGNAL);
			if (n > 0)
				off += (size_t)n;
			else if (n == -1 && errno == EPIPE)
				off = size;	/* the server has closed: the rest is never read */
		}
		if (off == size && !shut) {
			(void)shutdown(sv[1], SHUT_WR);
			shut = true;
		}
		while ((n = recv(sv[1], sink, sizeof(sink), 0)) > 0)
			;
		ev_run(loop, EVRUN_NOWAIT);
		if (++spins > 1000000) {
			fprintf(stderr, "connection never finished: %zu conns, %ld pending\n",
			    spoa_server_nconns(srv), pending);
			abort();
		}
	}
	/* let the reap timer free the connection */
	ev_run(loop, EVRUN_NOWAIT);
	close(sv[1]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spoa_server_opts	o = { 0 };
	char			err[256];

	if (loop == NULL) {
		loop = ev_loop_new(EVFLAG_AUTO);
		o.listen = "127.0.0.1:0";
		o.check = fake_check;
		o.cancel = fake_cancel;
		o.max_inflight = 1u << 20;	/* async checks never answer: never pause on them */
		if (loop == NULL || (srv = spoa_server_new(loop, &o, err, sizeof(err))) == NULL) {
			fprintf(stderr, "fuzz setup: %s\n", loop == NULL ? "no loop" : err);
			abort();
		}
	}
	fuzz_codec(data, size);
	fuzz_connection(data, size);
	if (pending != 0)
		abort();	/* a check the server forgot to cancel */
	return 0;
}
