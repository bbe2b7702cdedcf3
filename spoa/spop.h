/*
 * spop.h - SPOP (HAProxy's Stream Processing Offload Protocol, version 2.0) wire codec.
 *
 * Pure functions over (const uint8_t *buf, size_t len): no I/O, no globals, no logging. Decoding
 * goes through a cursor with a sticky error: every read checks what is left before touching a byte,
 * and once an error is set every further read fails and returns nothing. Decoded strings and binaries
 * point into the caller's buffer (no copy), so they live as long as it does.
 *
 * Encoding writes whole frames, 4-byte length prefix included, into a caller's buffer through a
 * writer with a sticky overflow flag; nothing is ever written past its capacity.
 */
#ifndef HC_SPOA_SPOP_H
#define HC_SPOA_SPOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest frame accepted before HELLO: HAProxy's default max-frame-size (tune.bufsize 16384 - 4). */
#define SPOP_HELLO_MAX_FRAME	16380u
/*
 * Largest frame size we negotiate (HAProxy's tune.bufsize up to 1 MiB). Announcing less than HAProxy
 * makes its first NOTIFY per thread fail, so the cap is generous; it bounds memory per connection, and
 * a connection's input buffer only grows to the size of a frame actually received.
 */
#define SPOP_MAX_FRAME_CAP	1048572u
/* Smallest max-frame-size SPOP allows. */
#define SPOP_MIN_FRAME_SIZE	256u
/* A varint never takes more than this many bytes (2^64-1 takes 10). */
#define SPOP_VARINT_MAX		10u
/* DISCONNECT messages are at most this long. */
#define SPOP_DISCONNECT_MSG_MAX	255u

/* Frame types. */
enum spop_frame_type {
	SPOP_FRM_UNSET		= 0,
	SPOP_FRM_HAPROXY_HELLO	= 1,
	SPOP_FRM_HAPROXY_DISCON	= 2,
	SPOP_FRM_NOTIFY		= 3,
	SPOP_FRM_AGENT_HELLO	= 101,
	SPOP_FRM_AGENT_DISCON	= 102,
	SPOP_FRM_ACK		= 103,
};

#define SPOP_FL_FIN	0x00000001u
#define SPOP_FL_ABORT	0x00000002u

/* Typed data: type in the low nibble, flags in the high nibble. */
enum spop_dtype {
	SPOP_DT_NULL	= 0,
	SPOP_DT_BOOL	= 1,
	SPOP_DT_INT32	= 2,
	SPOP_DT_UINT32	= 3,
	SPOP_DT_INT64	= 4,
	SPOP_DT_UINT64	= 5,
	SPOP_DT_IPV4	= 6,
	SPOP_DT_IPV6	= 7,
	SPOP_DT_STRING	= 8,
	SPOP_DT_BINARY	= 9,
};

/* Variable scopes of set-var / unset-var actions. */
enum spop_scope {
	SPOP_SCOPE_PROC	= 0,
	SPOP_SCOPE_SESS	= 1,
	SPOP_SCOPE_TXN	= 2,
	SPOP_SCOPE_REQ	= 3,
	SPOP_SCOPE_RES	= 4,
};

/* Errors; each value is the SPOP DISCONNECT status-code it maps to. */
enum spop_err {
	SPOP_OK			= 0,
	SPOP_ERR_IO		= 1,
	SPOP_ERR_TIMEOUT	= 2,
	SPOP_ERR_TOO_BIG	= 3,
	SPOP_ERR_INVALID	= 4,
	SPOP_ERR_NO_VSN		= 5,
	SPOP_ERR_NO_FRAME_SIZE	= 6,
	SPOP_ERR_NO_CAP		= 7,
	SPOP_ERR_BAD_VSN	= 8,
	SPOP_ERR_BAD_FRAME_SIZE	= 9,
	SPOP_ERR_FRAG		= 10,
	SPOP_ERR_INTERLACED	= 11,
	SPOP_ERR_FRAMEID	= 12,
	SPOP_ERR_RES		= 13,
	SPOP_ERR_UNKNOWN	= 99,
};

/* A short text for an error (also the DISCONNECT message we send). Never NULL. */
const char *spop_strerror(enum spop_err e);

/* Bytes pointing into a decoded buffer. Not NUL-terminated. */
struct spop_str {
	const char	*ptr;
	size_t		 len;
};

struct spop_data {
	enum spop_dtype	type;
	union {
		bool		b;
		int32_t		i32;
		uint32_t	u32;
		int64_t		i64;
		uint64_t	u64;
		uint8_t		ipv4[4];
		uint8_t		ipv6[16];
		struct spop_str	str;	/* STRING and BINARY */
	} u;
};

struct spop_cursor {
	const uint8_t	*buf;
	size_t		 len;
	size_t		 off;
	enum spop_err	 err;	/* sticky: first error wins */
};

void	spop_cursor_init(struct spop_cursor *c, const uint8_t *buf, size_t len);
size_t	spop_cursor_left(const struct spop_cursor *c);
/* Each returns 0, or -1 with c->err set (SPOP_ERR_INVALID unless said otherwise). */
int	spop_get_u8(struct spop_cursor *c, uint8_t *v);
int	spop_get_u32(struct spop_cursor *c, uint32_t *v);	/* big-endian */
int	spop_get_varint(struct spop_cursor *c, uint64_t *v);	/* capped at 10 bytes, overflow rejected */
int	spop_get_bytes(struct spop_cursor *c, size_t n, const uint8_t **p);
int	spop_get_str(struct spop_cursor *c, struct spop_str *s);	/* varint length + bytes */
int	spop_get_data(struct spop_cursor *c, struct spop_data *d);	/* type byte + value */

/* Standalone varint helpers. decode returns bytes consumed or -1 (truncated, too long, overflow). */
int	spop_varint_decode(const uint8_t *buf, size_t len, uint64_t *v);
/* Writes at most SPOP_VARINT_MAX bytes into out; returns the count. */
size_t	spop_varint_encode(uint64_t v, uint8_t *out);

/* ---- frames ---- */

struct spop_frame {
	uint8_t		 type;
	uint32_t	 flags;
	uint64_t	 stream_id;
	uint64_t	 frame_id;
	const uint8_t	*payload;
	size_t		 payload_len;
};

/*
 * Decodes a frame's header; buf holds exactly one frame WITHOUT its 4-byte length prefix.
 * Returns SPOP_OK, SPOP_ERR_INVALID (truncated or empty), or SPOP_ERR_FRAG (no FIN, or type UNSET).
 */
enum spop_err spop_frame_decode(const uint8_t *buf, size_t len, struct spop_frame *f);

/* KV-list (HELLO, DISCONNECT payloads): repeated name + typed value to the end. */
struct spop_kv {
	struct spop_str		name;
	struct spop_data	value;
};
/* 1 when one was read, 0 at the end of the list, -1 on error (c->err). */
int	spop_kv_next(struct spop_cursor *c, struct spop_kv *kv);

/* NOTIFY payload: repeated {message name, nargs:u8, nargs x (name, typed value)}. */
struct spop_notify_iter {
	struct spop_cursor	c;
	unsigned		args_left;	/* arguments of the current message not yet read */
};
void	spop_notify_init(struct spop_notify_iter *it, const uint8_t *payload, size_t len);
/* Next message (skipping the unread arguments of the previous one): 1, 0 at the end, -1 on error. */
int	spop_notify_next_msg(struct spop_notify_iter *it, struct spop_str *name, unsigned *nargs);
/* Next argument of the current message: 1, 0 when none is left, -1 on error. */
int	spop_notify_next_arg(struct spop_notify_iter *it, struct spop_kv *arg);

/* ---- HELLO ---- */

struct spop_hello {
	bool		has_versions;	/* supported-versions present */
	bool		version_ok;	/* "2.0" is among them */
	bool		has_max_frame_size;
	uint32_t	max_frame_size;
	bool		has_capabilities;
	bool		cap_pipelining;
	bool		cap_async;
	bool		cap_fragmentation;
	bool		healthcheck;
	struct spop_str	engine_id;	/* len 0 when absent */
};

/*
 * Parses a HAPROXY-HELLO payload and checks it. On success fills h and sets *frame_size to the size we
 * announce: HAProxy's value, capped at cap (at least SPOP_MIN_FRAME_SIZE). Errors: SPOP_ERR_INVALID,
 * NO_VSN (5), BAD_VSN (8), NO_FRAME_SIZE (6), BAD_FRAME_SIZE (9), NO_CAP (7).
 */
enum spop_err spop_hello_parse(const uint8_t *payload, size_t len, uint32_t cap, struct spop_hello *h,
	    uint32_t *frame_size);

/*
 * Parses a HAPROXY-DISCONNECT (or AGENT-DISCONNECT) payload: status-code and message (message may be
 * absent: len 0). Returns SPOP_OK or SPOP_ERR_INVALID.
 */
enum spop_err spop_disconnect_parse(const uint8_t *payload, size_t len, uint32_t *status, struct spop_str *msg);

/* ---- encoding ---- */

struct spop_writer {
	uint8_t		*buf;
	size_t		 cap;
	size_t		 off;
	size_t		 frame_start;	/* offset of the current frame's length prefix */
	bool		 overflow;	/* sticky */
};

void	spop_writer_init(struct spop_writer *w, uint8_t *buf, size_t cap);
void	spop_put_u8(struct spop_writer *w, uint8_t v);
void	spop_put_u32(struct spop_writer *w, uint32_t v);
void	spop_put_varint(struct spop_writer *w, uint64_t v);
void	spop_put_bytes(struct spop_writer *w, const void *p, size_t n);
void	spop_put_str(struct spop_writer *w, const char *s, size_t n);	/* name: varint length + bytes */
void	spop_put_data(struct spop_writer *w, const struct spop_data *d);

/* Starts a frame at w->off: length placeholder, type, flags, stream-id, frame-id. */
void	spop_frame_begin(struct spop_writer *w, uint8_t type, uint32_t flags, uint64_t stream_id, uint64_t frame_id);
/* Patches the length prefix. Returns the whole frame's size (prefix included), or -1 on overflow. */
long	spop_frame_end(struct spop_writer *w);

/* Whole frames; each returns bytes written (prefix included) or -1 when cap is too small. */
long	spop_build_agent_hello(uint8_t *buf, size_t cap, uint32_t max_frame_size, const char *capabilities);
/* message is truncated to SPOP_DISCONNECT_MSG_MAX bytes. */
long	spop_build_agent_disconnect(uint8_t *buf, size_t cap, uint32_t status, const char *message);

/* ACK with set-var actions: spop_ack_begin, any number of spop_ack_set_var, then spop_frame_end. */
void	spop_ack_begin(struct spop_writer *w, uint64_t stream_id, uint64_t frame_id);
void	spop_ack_set_var(struct spop_writer *w, enum spop_scope scope, const char *name, size_t namelen,
	    const struct spop_data *value);
void	spop_ack_unset_var(struct spop_writer *w, enum spop_scope scope, const char *name, size_t namelen);

/* Convenience constructors for values. */
struct spop_data spop_bool(bool b);
struct spop_data spop_int32(int32_t v);
struct spop_data spop_uint32(uint32_t v);
struct spop_data spop_int64(int64_t v);
struct spop_data spop_uint64(uint64_t v);
struct spop_data spop_string(const char *s, size_t n);
struct spop_data spop_binary(const void *p, size_t n);

#endif
