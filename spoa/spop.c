/*
 * spop.c - SPOP 2.0 wire codec. See spop.h for the contracts and /work/shared/docs/spop.md for the
 * protocol facts (checked against HAProxy 2.6's doc/SPOE.txt and src/flt_spoe.c).
 *
 * Every read checks `len - off < need` before touching a byte; lengths from the wire are compared
 * with what is left, never added to a pointer first.
 */
#include <string.h>

#include "spop.h"

const char *
spop_strerror(enum spop_err e)
{
	switch (e) {
	case SPOP_OK:			return "normal";
	case SPOP_ERR_IO:		return "I/O error";
	case SPOP_ERR_TIMEOUT:		return "a timeout occurred";
	case SPOP_ERR_TOO_BIG:		return "frame is too big";
	case SPOP_ERR_INVALID:		return "invalid frame received";
	case SPOP_ERR_NO_VSN:		return "version value not found";
	case SPOP_ERR_NO_FRAME_SIZE:	return "max-frame-size value not found";
	case SPOP_ERR_NO_CAP:		return "capabilities value not found";
	case SPOP_ERR_BAD_VSN:		return "unsupported version";
	case SPOP_ERR_BAD_FRAME_SIZE:	return "max-frame-size too big or too small";
	case SPOP_ERR_FRAG:		return "payload fragmentation is not supported";
	case SPOP_ERR_INTERLACED:	return "invalid interlaced frames";
	case SPOP_ERR_FRAMEID:		return "frame-id not found";
	case SPOP_ERR_RES:		return "resource allocation error";
	case SPOP_ERR_UNKNOWN:		break;
	}
	return "an unknown error occurred";
}

/* ---- varints ---- */

int
spop_varint_decode(const uint8_t *buf, size_t len, uint64_t *v)
{
	uint64_t	r, add;
	unsigned	shift;
	size_t		i;

	if (len < 1)
		return -1;
	r = buf[0];
	if (r < 240) {
		*v = r;
		return 1;
	}
	shift = 4;
	for (i = 1; ; i++) {
		if (i >= len || i >= SPOP_VARINT_MAX)
			return -1;	/* truncated, or longer than any 64-bit value needs */
		if (shift >= 64 || ((uint64_t)buf[i] >> (64 - shift)) != 0)
			return -1;	/* bits shifted out: overflow */
		add = (uint64_t)buf[i] << shift;
		if (r > UINT64_MAX - add)
			return -1;
		r += add;
		shift += 7;
		if (buf[i] < 128)
			break;
	}
	*v = r;
	return (int)(i + 1);
}

size_t
spop_varint_encode(uint64_t v, uint8_t *out)
{
	size_t n = 0;

	if (v < 240) {
		out[0] = (uint8_t)v;
		return 1;
	}
	out[n++] = (uint8_t)((v & 0xff) | 0xf0);
	v = (v - 240) >> 4;
	while (v >= 128) {
		out[n++] = (uint8_t)((v & 0xff) | 0x80);
		v = (v - 128) >> 7;
	}
	out[n++] = (uint8_t)v;
	return n;
}

/* ---- cursor ---- */

void
spop_cursor_init(struct spop_cursor *c, const uint8_t *buf, size_t len)
{
	c->buf = buf;
	c->len = len;
	c->off = 0;
	c->err = SPOP_OK;
}

size_t
spop_cursor_left(const struct spop_cursor *c)
{
	return c->len - c->off;
}

static int
cursor_fail(struct spop_cursor *c, enum spop_err e)
{
	if (c->err == SPOP_OK)
		c->err = e;
	return -1;
}

int
spop_get_u8(struct spop_cursor *c, uint8_t *v)
{
	if (c->err != SPOP_OK || c->len - c->off < 1)
		return cursor_fail(c, SPOP_ERR_INVALID);
	*v = c->buf[c->off++];
	return 0;
}

int
spop_get_u32(struct spop_cursor *c, uint32_t *v)
{
	const uint8_t *p;

	if (c->err != SPOP_OK || c->len - c->off < 4)
		return cursor_fail(c, SPOP_ERR_INVALID);
	p = c->buf + c->off;
	*v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
	c->off += 4;
	return 0;
}

int
spop_get_varint(struct spop_cursor *c, uint64_t *v)
{
	int n;

	if (c->err != SPOP_OK)
		return -1;
	n = spop_varint_decode(c->buf + c->off, c->len - c->off, v);
	if (n == -1)
		return cursor_fail(c, SPOP_ERR_INVALID);
	c->off += (size_t)n;
	return 0;
}

int
spop_get_bytes(struct spop_cursor *c, size_t n, const uint8_t **p)
{
	if (c->err != SPOP_OK || c->len - c->off < n)
		return cursor_fail(c, SPOP_ERR_INVALID);
	*p = c->buf + c->off;
	c->off += n;
	return 0;
}

int
spop_get_str(struct spop_cursor *c, struct spop_str *s)
{
	uint64_t	 n;
	const uint8_t	*p;

	if (spop_get_varint(c, &n) == -1)
		return -1;
	if (n > c->len - c->off)
		return cursor_fail(c, SPOP_ERR_INVALID);
	if (spop_get_bytes(c, (size_t)n, &p) == -1)
		return -1;
	s->ptr = (const char *)p;
	s->len = (size_t)n;
	return 0;
}

int
spop_get_data(struct spop_cursor *c, struct spop_data *d)
{
	uint8_t		 t;
	uint64_t	 v;
	const uint8_t	*p;

	if (spop_get_u8(c, &t) == -1)
		return -1;
	memset(d, 0, sizeof(*d));
	d->type = (enum spop_dtype)(t & 0x0f);
	switch (t & 0x0f) {
	case SPOP_DT_NULL:
		return 0;
	case SPOP_DT_BOOL:
		d->u.b = (t & 0x10) != 0;
		return 0;
	case SPOP_DT_INT32:
		if (spop_get_varint(c, &v) == -1)
			return -1;
		if (v <= UINT32_MAX)		/* 32-bit two's complement */
			d->u.i32 = (int32_t)(uint32_t)v;
		else if ((int64_t)v < 0 && (int64_t)v >= INT32_MIN)	/* sign-extended to 64 bits */
			d->u.i32 = (int32_t)(int64_t)v;
		else
			return cursor_fail(c, SPOP_ERR_INVALID);
		return 0;
	case SPOP_DT_UINT32:
		if (spop_get_varint(c, &v) == -1)
			return -1;
		if (v > UINT32_MAX)
			return cursor_fail(c, SPOP_ERR_INVALID);
		d->u.u32 = (uint32_t)v;
		return 0;
	case SPOP_DT_INT64:
		if (spop_get_varint(c, &v) == -1)
			return -1;
		d->u.i64 = (int64_t)v;
		return 0;
	case SPOP_DT_UINT64:
		if (spop_get_varint(c, &v) == -1)
			return -1;
		d->u.u64 = v;
		return 0;
	case SPOP_DT_IPV4:
		if (spop_get_bytes(c, 4, &p) == -1)
			return -1;
		memcpy(d->u.ipv4, p, 4);
		return 0;
	case SPOP_DT_IPV6:
		if (spop_get_bytes(c, 16, &p) == -1)
			return -1;
		memcpy(d->u.ipv6, p, 16);
		return 0;
	case SPOP_DT_STRING:
	case SPOP_DT_BINARY:
		return spop_get_str(c, &d->u.str);
	default:
		return cursor_fail(c, SPOP_ERR_INVALID);
	}
}

/* ---- frames ---- */

enum spop_err
spop_frame_decode(const uint8_t *buf, size_t len, struct spop_frame *f)
{
	struct spop_cursor c;

	spop_cursor_init(&c, buf, len);
	spop_get_u8(&c, &f->type);
	spop_get_u32(&c, &f->flags);
	spop_get_varint(&c, &f->stream_id);
	spop_get_varint(&c, &f->frame_id);
	if (c.err != SPOP_OK)
		return c.err;
	f->payload = buf + c.off;
	f->payload_len = c.len - c.off;
	if (f->type == SPOP_FRM_UNSET || (f->flags & SPOP_FL_FIN) == 0)
		return SPOP_ERR_FRAG;
	return SPOP_OK;
}

int
spop_kv_next(struct spop_cursor *c, struct spop_kv *kv)
{
	if (c->err != SPOP_OK)
		return -1;
	if (c->off == c->len)
		return 0;
	if (spop_get_str(c, &kv->name) == -1 || spop_get_data(c, &kv->value) == -1)
		return -1;
	return 1;
}

void
spop_notify_init(struct spop_notify_iter *it, const uint8_t *payload, size_t len)
{
	spop_cursor_init(&it->c, payload, len);
	it->args_left = 0;
}

int
spop_notify_next_arg(struct spop_notify_iter *it, struct spop_kv *arg)
{
	if (it->c.err != SPOP_OK)
		return -1;
	if (it->args_left == 0)
		return 0;
	if (spop_get_str(&it->c, &arg->name) == -1 || spop_get_data(&it->c, &arg->value) == -1)
		return -1;
	it->args_left--;
	return 1;
}

int
spop_notify_next_msg(struct spop_notify_iter *it, struct spop_str *name, unsigned *nargs)
{
	struct spop_kv	skip;
	uint8_t		n;
	int		r;

	while ((r = spop_notify_next_arg(it, &skip)) == 1)
		;
	if (r == -1)
		return -1;
	if (it->c.off == it->c.len)
		return 0;
	if (spop_get_str(&it->c, name) == -1 || spop_get_u8(&it->c, &n) == -1)
		return -1;
	it->args_left = n;
	*nargs = n;
	return 1;
}

/* ---- HELLO ---- */

static bool
str_eq(const struct spop_str *s, const char *lit)
{
	size_t n = strlen(lit);

	return s->len == n && memcmp(s->ptr, lit, n) == 0;
}

/*
 * Calls fn on each comma-separated item of s with surrounding spaces and tabs removed.
 */
static void
list_each(const struct spop_str *s, void (*fn)(const struct spop_str *item, void *arg), void *arg)
{
	size_t		i = 0, start, end;
	struct spop_str	item;

	while (i <= s->len) {
		start = i;
		while (i < s->len && s->ptr[i] != ',')
			i++;
		end = i;
		while (start < end && (s->ptr[start] == ' ' || s->ptr[start] == '\t'))
			start++;
		while (end > start && (s->ptr[end - 1] == ' ' || s->ptr[end - 1] == '\t'))
			end--;
		item.ptr = s->ptr + start;
		item.len = end - start;
		if (item.len > 0)
			fn(&item, arg);
		i++;	/* past the comma (or past the end) */
	}
}

static void
version_item(const struct spop_str *item, void *arg)
{
	struct spop_hello *h = arg;

	if (str_eq(item, "2.0"))
		h->version_ok = true;
}

static void
cap_item(const struct spop_str *item, void *arg)
{
	struct spop_hello *h = arg;

	if (str_eq(item, "pipelining"))
		h->cap_pipelining = true;
	else if (str_eq(item, "async"))
		h->cap_async = true;
	else if (str_eq(item, "fragmentation"))
		h->cap_fragmentation = true;
}

/* The value of any SPOP integer type as an unsigned 64-bit number; -1 for negatives and other types. */
static int
data_to_u64(const struct spop_data *d, uint64_t *v)
{
	switch (d->type) {
	case SPOP_DT_INT32:
		if (d->u.i32 < 0)
			return -1;
		*v = (uint64_t)d->u.i32;
		return 0;
	case SPOP_DT_UINT32:
		*v = d->u.u32;
		return 0;
	case SPOP_DT_INT64:
		if (d->u.i64 < 0)
			return -1;
		*v = (uint64_t)d->u.i64;
		return 0;
	case SPOP_DT_UINT64:
		*v = d->u.u64;
		return 0;
	default:
		return -1;
	}
}

enum spop_err
spop_hello_parse(const uint8_t *payload, size_t len, uint32_t cap, struct spop_hello *h, uint32_t *frame_size)
{
	struct spop_cursor	c;
	struct spop_kv		kv;
	uint64_t		v;
	bool			bad_size = false;
	int			r;

	memset(h, 0, sizeof(*h));
	spop_cursor_init(&c, payload, len);
	while ((r = spop_kv_next(&c, &kv)) == 1) {
		if (str_eq(&kv.name, "supported-versions")) {
			if (kv.value.type != SPOP_DT_STRING)
				return SPOP_ERR_INVALID;
			h->has_versions = true;
			h->version_ok = false;
			list_each(&kv.value.u.str, version_item, h);
		} else if (str_eq(&kv.name, "max-frame-size")) {
			h->has_max_frame_size = true;
			bad_size = data_to_u64(&kv.value, &v) == -1 || v > UINT32_MAX;
			h->max_frame_size = bad_size ? 0 : (uint32_t)v;
		} else if (str_eq(&kv.name, "capabilities")) {
			if (kv.value.type != SPOP_DT_STRING)
				return SPOP_ERR_INVALID;
			h->has_capabilities = true;
			h->cap_pipelining = h->cap_async = h->cap_fragmentation = false;
			list_each(&kv.value.u.str, cap_item, h);
		} else if (str_eq(&kv.name, "healthcheck")) {
			if (kv.value.type != SPOP_DT_BOOL)
				return SPOP_ERR_INVALID;
			h->healthcheck = kv.value.u.b;
		} else if (str_eq(&kv.name, "engine-id")) {
			if (kv.value.type != SPOP_DT_STRING)
				return SPOP_ERR_INVALID;
			h->engine_id = kv.value.u.str;
		}
		/* Unknown keys are ignored: later versions may add some. */
	}
	if (r == -1)
		return c.err;
	if (!h->has_versions)
		return SPOP_ERR_NO_VSN;
	if (!h->version_ok)
		return SPOP_ERR_BAD_VSN;
	if (!h->has_max_frame_size)
		return SPOP_ERR_NO_FRAME_SIZE;
	if (bad_size || h->max_frame_size < SPOP_MIN_FRAME_SIZE)
		return SPOP_ERR_BAD_FRAME_SIZE;
	if (!h->has_capabilities)
		return SPOP_ERR_NO_CAP;
	/* Echo HAProxy's value (less makes its first NOTIFY per thread fail) unless it exceeds our cap. */
	if (cap < SPOP_MIN_FRAME_SIZE)
		cap = SPOP_MIN_FRAME_SIZE;
	*frame_size = h->max_frame_size < cap ? h->max_frame_size : cap;
	return SPOP_OK;
}

enum spop_err
spop_disconnect_parse(const uint8_t *payload, size_t len, uint32_t *status, struct spop_str *msg)
{
	struct spop_cursor	c;
	struct spop_kv		kv;
	uint64_t		v;
	int			r;

	*status = SPOP_ERR_UNKNOWN;
	msg->ptr = "";
	msg->len = 0;
	spop_cursor_init(&c, payload, len);
	while ((r = spop_kv_next(&c, &kv)) == 1) {
		if (str_eq(&kv.name, "status-code")) {
			if (data_to_u64(&kv.value, &v) == -1 || v > UINT32_MAX)
				return SPOP_ERR_INVALID;
			*status = (uint32_t)v;
		} else if (str_eq(&kv.name, "message")) {
			if (kv.value.type != SPOP_DT_STRING)
				return SPOP_ERR_INVALID;
			*msg = kv.value.u.str;
		}
	}
	return r == -1 ? c.err : SPOP_OK;
}

/* ---- encoding ---- */

void
spop_writer_init(struct spop_writer *w, uint8_t *buf, size_t cap)
{
	w->buf = buf;
	w->cap = cap;
	w->off = 0;
	w->frame_start = 0;
	w->overflow = false;
}

void
spop_put_bytes(struct spop_writer *w, const void *p, size_t n)
{
	if (w->overflow || w->cap - w->off < n) {
		w->overflow = true;
		return;
	}
	if (n > 0)
		memcpy(w->buf + w->off, p, n);
	w->off += n;
}

void
spop_put_u8(struct spop_writer *w, uint8_t v)
{
	if (w->overflow || w->cap == w->off) {
		w->overflow = true;
		return;
	}
	w->buf[w->off++] = v;
}

void
spop_put_u32(struct spop_writer *w, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };

	spop_put_bytes(w, b, 4);
}

void
spop_put_varint(struct spop_writer *w, uint64_t v)
{
	uint8_t b[SPOP_VARINT_MAX];

	if (v < 240) {		/* one byte: lengths, ids, small integers: nearly every varint of an ACK */
		spop_put_u8(w, (uint8_t)v);
		return;
	}
	spop_put_bytes(w, b, spop_varint_encode(v, b));
}

void
spop_put_str(struct spop_writer *w, const char *s, size_t n)
{
	spop_put_varint(w, n);
	spop_put_bytes(w, s, n);
}

void
spop_put_data(struct spop_writer *w, const struct spop_data *d)
{
	switch (d->type) {
	case SPOP_DT_NULL:
		spop_put_u8(w, SPOP_DT_NULL);
		break;
	case SPOP_DT_BOOL:
		spop_put_u8(w, d->u.b ? 0x11 : 0x01);
		break;
	case SPOP_DT_INT32:
		spop_put_u8(w, SPOP_DT_INT32);
		spop_put_varint(w, (uint64_t)(int64_t)d->u.i32);
		break;
	case SPOP_DT_UINT32:
		spop_put_u8(w, SPOP_DT_UINT32);
		spop_put_varint(w, d->u.u32);
		break;
	case SPOP_DT_INT64:
		spop_put_u8(w, SPOP_DT_INT64);
		spop_put_varint(w, (uint64_t)d->u.i64);
		break;
	case SPOP_DT_UINT64:
		spop_put_u8(w, SPOP_DT_UINT64);
		spop_put_varint(w, d->u.u64);
		break;
	case SPOP_DT_IPV4:
		spop_put_u8(w, SPOP_DT_IPV4);
		spop_put_bytes(w, d->u.ipv4, 4);
		break;
	case SPOP_DT_IPV6:
		spop_put_u8(w, SPOP_DT_IPV6);
		spop_put_bytes(w, d->u.ipv6, 16);
		break;
	case SPOP_DT_STRING:
	case SPOP_DT_BINARY:
		spop_put_u8(w, (uint8_t)d->type);
		spop_put_str(w, d->u.str.ptr, d->u.str.len);
		break;
	default:
		w->overflow = true;	/* not a type we can encode: refuse the frame */
		break;
	}
}

void
spop_frame_begin(struct spop_writer *w, uint8_t type, uint32_t flags, uint64_t stream_id, uint64_t frame_id)
{
	w->frame_start = w->off;
	spop_put_u32(w, 0);
	spop_put_u8(w, type);
	spop_put_u32(w, flags);
	spop_put_varint(w, stream_id);
	spop_put_varint(w, frame_id);
}

long
spop_frame_end(struct spop_writer *w)
{
	size_t	len;
	uint8_t	*p;

	if (w->overflow || w->off - w->frame_start < 4)
		return -1;
	len = w->off - w->frame_start - 4;
	if (len > UINT32_MAX)
		return -1;
	p = w->buf + w->frame_start;
	p[0] = (uint8_t)(len >> 24);
	p[1] = (uint8_t)(len >> 16);
	p[2] = (uint8_t)(len >> 8);
	p[3] = (uint8_t)len;
	return (long)(w->off - w->frame_start);
}

static void
put_kv(struct spop_writer *w, const char *name, const struct spop_data *d)
{
	spop_put_str(w, name, strlen(name));
	spop_put_data(w, d);
}

long
spop_build_agent_hello(uint8_t *buf, size_t cap, uint32_t max_frame_size, const char *capabilities)
{
	struct spop_writer	w;
	struct spop_data	d;

	spop_writer_init(&w, buf, cap);
	spop_frame_begin(&w, SPOP_FRM_AGENT_HELLO, SPOP_FL_FIN, 0, 0);
	d = spop_string("2.0", 3);
	put_kv(&w, "version", &d);
	d = spop_uint32(max_frame_size);
	put_kv(&w, "max-frame-size", &d);
	d = spop_string(capabilities, strlen(capabilities));
	put_kv(&w, "capabilities", &d);
	return spop_frame_end(&w);
}

long
spop_build_agent_disconnect(uint8_t *buf, size_t cap, uint32_t status, const char *message)
{
	struct spop_writer	w;
	struct spop_data	d;
	size_t			n = strlen(message);

	if (n > SPOP_DISCONNECT_MSG_MAX)
		n = SPOP_DISCONNECT_MSG_MAX;
	spop_writer_init(&w, buf, cap);
	spop_frame_begin(&w, SPOP_FRM_AGENT_DISCON, SPOP_FL_FIN, 0, 0);
	d = spop_uint32(status);
	put_kv(&w, "status-code", &d);
	d = spop_string(message, n);
	put_kv(&w, "message", &d);
	return spop_frame_end(&w);
}

void
spop_ack_begin(struct spop_writer *w, uint64_t stream_id, uint64_t frame_id)
{
	spop_frame_begin(w, SPOP_FRM_ACK, SPOP_FL_FIN, stream_id, frame_id);
}

void
spop_ack_set_var(struct spop_writer *w, enum spop_scope scope, const char *name, size_t namelen,
    const struct spop_data *value)
{
	spop_put_u8(w, 1);	/* SET-VAR */
	spop_put_u8(w, 3);	/* 3 arguments: scope, name, value */
	spop_put_u8(w, (uint8_t)scope);
	spop_put_str(w, name, namelen);
	spop_put_data(w, value);
}

void
spop_ack_unset_var(struct spop_writer *w, enum spop_scope scope, const char *name, size_t namelen)
{
	spop_put_u8(w, 2);	/* UNSET-VAR */
	spop_put_u8(w, 2);	/* 2 arguments: scope, name */
	spop_put_u8(w, (uint8_t)scope);
	spop_put_str(w, name, namelen);
}

/* ---- value constructors ---- */

struct spop_data
spop_bool(bool b)
{
	struct spop_data d = { .type = SPOP_DT_BOOL, .u.b = b };
	return d;
}

struct spop_data
spop_int32(int32_t v)
{
	struct spop_data d = { .type = SPOP_DT_INT32, .u.i32 = v };
	return d;
}

struct spop_data
spop_uint32(uint32_t v)
{
	struct spop_data d = { .type = SPOP_DT_UINT32, .u.u32 = v };
	return d;
}

struct spop_data
spop_int64(int64_t v)
{
	struct spop_data d = { .type = SPOP_DT_INT64, .u.i64 = v };
	return d;
}

struct spop_data
spop_uint64(uint64_t v)
{
	struct spop_data d = { .type = SPOP_DT_UINT64, .u.u64 = v };
	return d;
}

struct spop_data
spop_string(const char *s, size_t n)
{
	struct spop_data d = { .type = SPOP_DT_STRING };

	d.u.str.ptr = s;
	d.u.str.len = n;
	return d;
}

struct spop_data
spop_binary(const void *p, size_t n)
{
	struct spop_data d = { .type = SPOP_DT_BINARY };

	d.u.str.ptr = p;
	d.u.str.len = n;
	return d;
}
