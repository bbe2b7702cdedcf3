/*
 * test_spoa_spop.c - the SPOP codec: varint vectors, typed data, the golden frames captured from
 * HAProxy 2.6.12 (docs/spop-golden-frames.txt), our frames byte for byte, and malformed input.
 * Inputs are copied into exactly-sized heap buffers so that ASan catches any read past them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "spop.h"

/* ---- golden frames (hex, length prefix included) ---- */

static const char GOLD_HELLO_HC[] =
    "0000004e0100000001000012737570706f727465642d76657273696f6e730803322e300e6d61782d6672616d652d73697a65"
    "03fcf0060c6361706162696c697469657308000b6865616c7468636865636b11";
static const char GOLD_HELLO[] =
    "000000810100000001000012737570706f727465642d76657273696f6e730803322e300e6d61782d6672616d652d73697a65"
    "03fcf0060c6361706162696c69746965730810706970656c696e696e672c6173796e6309656e67696e652d69640824656335"
    "31356664662d653638302d346139362d616233392d303263626431363630646166";
static const char GOLD_AGENT_HELLO[] =
    "00000046650000000100000776657273696f6e0803322e300e6d61782d6672616d652d73697a6503fcf0060c636170616269"
    "6c69746965730810706970656c696e696e672c6173796e63";
static const char GOLD_AGENT_HELLO_NOCAPS[] =
    "00000036650000000100000776657273696f6e0803322e300e6d61782d6672616d652d73697a6503fcf0060c636170616269"
    "6c69746965730800";
static const char GOLD_ACK[] =
    "0000005e6700000001000101030105616c6c6f771101030206737069666665082d7370696666653a2f2f6463312e636f6e73"
    "756c2f6e732f64656661756c742f64632f6463312f7376632f7765620103020e756e726567697374657265645f780307";
static const char GOLD_DISCONNECT[] =
    "00000025660000000100000b7374617475732d636f64650300076d65737361676508066e6f726d616c";
static const char GOLD_NOTIFY[] =
    "00000235030000000100010a636865636b2d636f6e6e0b0364657209fb0b308201a73082014ea00302010202144f13563d7b"
    "354662c4f4b37802450d457900a774300a06082a8648ce3d040302300e310c300a06035504030c03636141301e170d323631"
    "3132373133333730335a170d3236313230323133333730335a300f310d300b06035504030c04636c69413059301306072a86"
    "48ce3d020106082a8648ce3d030107034200048f2f47d1e5663830bd5aa148092978b6f2e534d0b8119ac985d09f32880886"
    "779b15b2c1183793410df16101ddf13df2787d27b1bdc4beb2d49ce8aa5907fe52a3818830818530380603551d110431302f"
    "862d7370696666653a2f2f6463312e636f6e73756c2f6e732f64656661756c742f64632f6463312f7376632f776562300906"
    "03551d1304023000301d0603551d0e0416041462f629601450dde39b02b983053c21ee2532f1b7301f0603551d2304183016"
    "80143c273ec848aa43efa1697baf43b7f309db88171c300a06082a8648ce3d040302034700304402200ce441b4e51ea9f7f1"
    "8aff2b088de99d979576f2aba9938e1e10ada83ce153a602200dcaee2d9a5a752115b9c91f65f3fa78844533aa519fc72ae8"
    "388d4ca7e4ffcd0373646e08082f434e3d636c69410673657269616c09144f13563d7b354662c4f4b37802450d457900a774"
    "04757365641106766572696679040003737263067f0000010573706f727404f4801b03736e6900036e656704fff0fefefefe"
    "fefefe0e0362696704f0f1fefe7e036e756c00";

/* Decodes hex into a new exactly-sized heap buffer. */
static uint8_t *
unhex(const char *hex, size_t *len)
{
	size_t	 n = strlen(hex) / 2, i;
	uint8_t	*b = malloc(n > 0 ? n : 1);
	unsigned v;

	assert_non_null(b);
	assert_int_equal(strlen(hex) % 2, 0);
	for (i = 0; i < n; i++) {
		assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
		b[i] = (uint8_t)v;
	}
	*len = n;
	return b;
}

/* An exactly-sized heap copy of the first n bytes of p (ASan catches reads past it). */
static uint8_t *
dup_exact(const uint8_t *p, size_t n)
{
	uint8_t *b = malloc(n > 0 ? n : 1);

	assert_non_null(b);
	memcpy(b, p, n);
	return b;
}

/* Checks a golden frame's length prefix and decodes its header. */
static void
decode_golden(const uint8_t *b, size_t n, struct spop_frame *f)
{
	assert_true(n >= 4);
	assert_int_equal(((uint32_t)b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]), n - 4);
	assert_int_equal(spop_frame_decode(b + 4, n - 4, f), SPOP_OK);
}

/* ---- varints ---- */

struct vec {
	uint64_t	 v;
	const char	*hex;
};

static const struct vec VECS[] = {
	{ 0, "00" }, { 239, "ef" }, { 240, "f000" }, { 256, "f001" }, { 2287, "ff7f" }, { 2288, "f08000" },
	{ 16380, "fcf006" }, { 4294967296ull, "f0f1fefe7e" }, { UINT64_MAX, "fff0fefefefefefefe0e" },
};

static void
test_varint_vectors(void **state)
{
	size_t	i, n, elen;
	uint8_t	out[SPOP_VARINT_MAX], *exp;
	uint64_t v;

	for (i = 0; i < sizeof(VECS) / sizeof(VECS[0]); i++) {
		exp = unhex(VECS[i].hex, &elen);
		n = spop_varint_encode(VECS[i].v, out);
		assert_int_equal(n, elen);
		assert_memory_equal(out, exp, n);
		assert_int_equal(spop_varint_decode(exp, elen, &v), (int)elen);
		assert_true(v == VECS[i].v);
		/* every truncation of a multi-byte varint is an error */
		for (n = 0; n < elen; n++)
			assert_int_equal(spop_varint_decode(exp, n, &v), -1);
		free(exp);
	}
	/* every value around the byte-count boundaries survives a round trip */
	for (v = 0; v < 70000; v += 7) {
		uint64_t back;

		n = spop_varint_encode(v, out);
		assert_int_equal(spop_varint_decode(out, n, &back), (int)n);
		assert_true(back == v);
	}
}

static void
test_varint_overflow(void **state)
{
	uint64_t v;
	/* 11 bytes: longer than any 64-bit value */
	const uint8_t eleven[] = { 0xf0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00 };
	/* 10 bytes whose last one carries bits beyond 2^64 */
	const uint8_t big[] = { 0xff, 0xf0, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0x7f };
	/* 2^64-1 plus one */
	const uint8_t plus1[] = { 0xf0, 0xf1, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0x0f };
	uint8_t *p;

	p = dup_exact(eleven, sizeof(eleven));
	assert_int_equal(spop_varint_decode(p, sizeof(eleven), &v), -1);
	free(p);
	p = dup_exact(big, sizeof(big));
	assert_int_equal(spop_varint_decode(p, sizeof(big), &v), -1);
	free(p);
	p = dup_exact(plus1, sizeof(plus1));
	assert_int_equal(spop_varint_decode(p, sizeof(plus1), &v), -1);
	free(p);
	/* continuation bytes forever: stops at 10 */
	uint8_t many[64];
	memset(many, 0xff, sizeof(many));
	assert_int_equal(spop_varint_decode(many, sizeof(many), &v), -1);
}

/* ---- typed data ---- */

static void
roundtrip(const struct spop_data *in, const char *hex)
{
	uint8_t			 buf[64], *exact, *exp;
	struct spop_writer	 w;
	struct spop_cursor	 c;
	struct spop_data	 out;
	size_t			 elen, i;

	spop_writer_init(&w, buf, sizeof(buf));
	spop_put_data(&w, in);
	assert_false(w.overflow);
	if (hex != NULL) {
		exp = unhex(hex, &elen);
		assert_int_equal(w.off, elen);
		assert_memory_equal(buf, exp, elen);
		free(exp);
	}
	exact = dup_exact(buf, w.off);
	spop_cursor_init(&c, exact, w.off);
	assert_int_equal(spop_get_data(&c, &out), 0);
	assert_int_equal(c.off, w.off);
	assert_int_equal(out.type, in->type);
	switch (in->type) {
	case SPOP_DT_BOOL:	assert_int_equal(out.u.b, in->u.b); break;
	case SPOP_DT_INT32:	assert_int_equal(out.u.i32, in->u.i32); break;
	case SPOP_DT_UINT32:	assert_int_equal(out.u.u32, in->u.u32); break;
	case SPOP_DT_INT64:	assert_true(out.u.i64 == in->u.i64); break;
	case SPOP_DT_UINT64:	assert_true(out.u.u64 == in->u.u64); break;
	case SPOP_DT_IPV4:	assert_memory_equal(out.u.ipv4, in->u.ipv4, 4); break;
	case SPOP_DT_IPV6:	assert_memory_equal(out.u.ipv6, in->u.ipv6, 16); break;
	case SPOP_DT_STRING:
	case SPOP_DT_BINARY:
		assert_int_equal(out.u.str.len, in->u.str.len);
		if (in->u.str.len > 0)
			assert_memory_equal(out.u.str.ptr, in->u.str.ptr, in->u.str.len);
		/* points into the buffer, no copy */
		assert_ptr_equal(out.u.str.ptr, (const char *)exact + w.off - in->u.str.len);
		break;
	default:
		break;
	}
	/* every truncation fails cleanly */
	for (i = 0; i < w.off; i++) {
		uint8_t *t = dup_exact(buf, i);

		spop_cursor_init(&c, t, i);
		assert_int_equal(spop_get_data(&c, &out), -1);
		assert_int_equal(c.err, SPOP_ERR_INVALID);
		free(t);
	}
	free(exact);
}

static void
test_typed_data(void **state)
{
	struct spop_data d;
	const uint8_t v6[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };

	d.type = SPOP_DT_NULL;
	roundtrip(&d, "00");
	d = spop_bool(true);
	roundtrip(&d, "11");
	d = spop_bool(false);
	roundtrip(&d, "01");	/* not 0x10 (negasus/haproxy-spoe-go#22) */
	d = spop_int32(1);
	roundtrip(&d, "0201");
	d = spop_int32(0);
	roundtrip(&d, "0200");
	d = spop_int32(-1);
	roundtrip(&d, NULL);
	d = spop_int32(INT32_MIN);
	roundtrip(&d, NULL);
	d = spop_uint32(16380);
	roundtrip(&d, "03fcf006");
	d = spop_uint32(UINT32_MAX);
	roundtrip(&d, NULL);
	d = spop_int64(-1);
	roundtrip(&d, "04fff0fefefefefefefe0e");
	d = spop_int64(INT64_MIN);
	roundtrip(&d, NULL);
	d = spop_uint64(4294967296ull);
	roundtrip(&d, "05f0f1fefe7e");
	d.type = SPOP_DT_IPV4;
	memcpy(d.u.ipv4, "\x7f\x00\x00\x01", 4);
	roundtrip(&d, "067f000001");
	d.type = SPOP_DT_IPV6;
	memcpy(d.u.ipv6, v6, 16);
	roundtrip(&d, "0720010db8000000000000000000000001");
	d = spop_string("web", 3);
	roundtrip(&d, "0803776562");
	d = spop_string("", 0);
	roundtrip(&d, "0800");
	d = spop_binary("\x00\x01\xff", 3);
	roundtrip(&d, "09030001ff");
}

static void
test_typed_data_bad(void **state)
{
	struct spop_cursor	c;
	struct spop_data	d;
	uint8_t			*p;
	size_t			 n;
	const char		*bad[] = {
		"0a", "0b00", "0c", "0d", "0e", "0f",	/* unknown types */
		"0805616263",				/* string longer than the buffer */
		"08fff0fefefefefefefe0e",		/* string length 2^64-1 */
		"09f0f1fefe7e00",			/* binary length 2^32 */
		"03f0f1fefe7e",				/* UINT32 above 2^32-1 */
		"02f0f1fefe7e",				/* INT32 that fits neither 32 bits nor a sign extension */
		"",					/* empty: no type byte */
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		p = unhex(bad[i], &n);
		spop_cursor_init(&c, p, n);
		assert_int_equal(spop_get_data(&c, &d), -1);
		assert_int_equal(c.err, SPOP_ERR_INVALID);
		/* sticky: a later read fails too */
		assert_int_equal(spop_get_data(&c, &d), -1);
		free(p);
	}
	/* the flags nibble of a non-BOOL type is ignored; a BOOL takes its value from bit 0x10 */
	p = unhex("1803616263", &n);
	spop_cursor_init(&c, p, n);
	assert_int_equal(spop_get_data(&c, &d), 0);
	assert_int_equal(d.type, SPOP_DT_STRING);
	free(p);
}

/* ---- golden frames ---- */

static void
test_golden_hello(void **state)
{
	uint8_t			*b;
	size_t			 n;
	struct spop_frame	 f;
	struct spop_hello	 h;
	uint32_t		 fs = 0;

	b = unhex(GOLD_HELLO, &n);
	decode_golden(b, n, &f);
	assert_int_equal(f.type, SPOP_FRM_HAPROXY_HELLO);
	assert_int_equal(f.flags, SPOP_FL_FIN);
	assert_true(f.stream_id == 0 && f.frame_id == 0);
	assert_int_equal(spop_hello_parse(f.payload, f.payload_len, SPOP_MAX_FRAME_CAP, &h, &fs), SPOP_OK);
	assert_true(h.version_ok);
	assert_int_equal(h.max_frame_size, 16380);
	assert_int_equal(fs, 16380);	/* echoed */
	assert_true(h.cap_pipelining);
	assert_true(h.cap_async);
	assert_false(h.cap_fragmentation);
	assert_false(h.healthcheck);
	assert_int_equal(h.engine_id.len, 36);
	assert_memory_equal(h.engine_id.ptr, "ec515fdf-e680-4a96-ab39-02cbd1660daf", 36);
	/* a smaller cap wins */
	assert_int_equal(spop_hello_parse(f.payload, f.payload_len, 4096, &h, &fs), SPOP_OK);
	assert_int_equal(fs, 4096);
	free(b);

	b = unhex(GOLD_HELLO_HC, &n);
	decode_golden(b, n, &f);
	assert_int_equal(spop_hello_parse(f.payload, f.payload_len, SPOP_MAX_FRAME_CAP, &h, &fs), SPOP_OK);
	assert_true(h.healthcheck);
	assert_true(h.has_capabilities);
	assert_false(h.cap_pipelining);
	assert_int_equal(h.engine_id.len, 0);
	free(b);
}

static void
test_golden_notify(void **state)
{
	uint8_t			*b;
	size_t			 n;
	struct spop_frame	 f;
	struct spop_notify_iter	 it;
	struct spop_str		 name;
	struct spop_kv		 a;
	unsigned		 nargs;
	static const char	*names[] = { "der", "sdn", "serial", "used", "verify", "src", "sport", "sni",
	    "neg", "big", "nul" };
	static const enum spop_dtype types[] = { SPOP_DT_BINARY, SPOP_DT_STRING, SPOP_DT_BINARY, SPOP_DT_BOOL,
	    SPOP_DT_INT64, SPOP_DT_IPV4, SPOP_DT_INT64, SPOP_DT_NULL, SPOP_DT_INT64, SPOP_DT_INT64, SPOP_DT_NULL };
	int			 i = 0;

	b = unhex(GOLD_NOTIFY, &n);
	decode_golden(b, n, &f);
	assert_int_equal(f.type, SPOP_FRM_NOTIFY);
	assert_true(f.stream_id == 0 && f.frame_id == 1);
	spop_notify_init(&it, f.payload, f.payload_len);
	assert_int_equal(spop_notify_next_msg(&it, &name, &nargs), 1);
	assert_int_equal(name.len, 10);
	assert_memory_equal(name.ptr, "check-conn", 10);
	assert_int_equal(nargs, 11);
	while (spop_notify_next_arg(&it, &a) == 1) {
		assert_true(i < 11);
		assert_int_equal(a.name.len, strlen(names[i]));
		assert_memory_equal(a.name.ptr, names[i], a.name.len);
		assert_int_equal(a.value.type, types[i]);
		switch (i) {
		case 0:	/* a DER certificate: SEQUENCE of 0x1a7 bytes */
			assert_int_equal(a.value.u.str.len, 427);
			assert_memory_equal(a.value.u.str.ptr, "\x30\x82\x01\xa7", 4);
			break;
		case 1:
			assert_int_equal(a.value.u.str.len, 8);
			assert_memory_equal(a.value.u.str.ptr, "/CN=cliA", 8);
			break;
		case 2: assert_int_equal(a.value.u.str.len, 20); break;
		case 3: assert_true(a.value.u.b); break;
		case 4: assert_true(a.value.u.i64 == 0); break;
		case 5: assert_memory_equal(a.value.u.ipv4, "\x7f\x00\x00\x01", 4); break;
		case 6: assert_true(a.value.u.i64 == 57588); break;
		case 8: assert_true(a.value.u.i64 == -1); break;
		case 9: assert_true(a.value.u.i64 == 4294967296ll); break;
		default: break;
		}
		i++;
	}
	assert_int_equal(i, 11);
	assert_int_equal(spop_notify_next_msg(&it, &name, &nargs), 0);
	assert_int_equal(it.c.err, SPOP_OK);

	/* skipping: without reading any argument, the next message call skips all 11 */
	spop_notify_init(&it, f.payload, f.payload_len);
	assert_int_equal(spop_notify_next_msg(&it, &name, &nargs), 1);
	assert_int_equal(spop_notify_next_msg(&it, &name, &nargs), 0);
	assert_int_equal(it.c.err, SPOP_OK);
	free(b);
}

static void
test_golden_disconnect_parse(void **state)
{
	uint8_t			*b;
	size_t			 n;
	struct spop_frame	 f;
	uint32_t		 st;
	struct spop_str		 msg;

	b = unhex(GOLD_DISCONNECT, &n);
	decode_golden(b, n, &f);
	assert_int_equal(f.type, SPOP_FRM_AGENT_DISCON);
	assert_int_equal(spop_disconnect_parse(f.payload, f.payload_len, &st, &msg), SPOP_OK);
	assert_int_equal(st, 0);
	assert_int_equal(msg.len, 6);
	assert_memory_equal(msg.ptr, "normal", 6);
	free(b);
}

static void
test_build_matches_golden(void **state)
{
	uint8_t			 buf[512], *exp;
	size_t			 elen;
	long			 n;
	struct spop_writer	 w;
	struct spop_data	 d;
	const char		*spiffe = "spiffe://dc1.consul/ns/default/dc/dc1/svc/web";

	exp = unhex(GOLD_AGENT_HELLO, &elen);
	n = spop_build_agent_hello(buf, sizeof(buf), 16380, "pipelining,async");
	assert_int_equal(n, (long)elen);
	assert_memory_equal(buf, exp, elen);
	free(exp);

	exp = unhex(GOLD_AGENT_HELLO_NOCAPS, &elen);
	n = spop_build_agent_hello(buf, sizeof(buf), 16380, "");
	assert_int_equal(n, (long)elen);
	assert_memory_equal(buf, exp, elen);
	free(exp);

	exp = unhex(GOLD_DISCONNECT, &elen);
	n = spop_build_agent_disconnect(buf, sizeof(buf), 0, "normal");
	assert_int_equal(n, (long)elen);
	assert_memory_equal(buf, exp, elen);
	free(exp);

	exp = unhex(GOLD_ACK, &elen);
	spop_writer_init(&w, buf, sizeof(buf));
	spop_ack_begin(&w, 0, 1);
	d = spop_bool(true);
	spop_ack_set_var(&w, SPOP_SCOPE_SESS, "allow", 5, &d);
	d = spop_string(spiffe, strlen(spiffe));
	spop_ack_set_var(&w, SPOP_SCOPE_TXN, "spiffe", 6, &d);
	d = spop_uint32(7);
	spop_ack_set_var(&w, SPOP_SCOPE_TXN, "unregistered_x", 14, &d);
	n = spop_frame_end(&w);
	assert_int_equal(n, (long)elen);
	assert_memory_equal(buf, exp, elen);
	free(exp);

	/* our own AGENT-HELLO decodes back */
	{
		struct spop_frame	f;
		struct spop_cursor	c;
		struct spop_kv		kv;
		int			seen = 0;

		n = spop_build_agent_hello(buf, sizeof(buf), 65532, "pipelining");
		assert_true(n > 0);
		decode_golden(buf, (size_t)n, &f);
		assert_int_equal(f.type, SPOP_FRM_AGENT_HELLO);
		spop_cursor_init(&c, f.payload, f.payload_len);
		while (spop_kv_next(&c, &kv) == 1) {
			if (kv.name.len == 14 && memcmp(kv.name.ptr, "max-frame-size", 14) == 0) {
				assert_int_equal(kv.value.type, SPOP_DT_UINT32);
				assert_int_equal(kv.value.u.u32, 65532);
				seen++;
			}
		}
		assert_int_equal(c.err, SPOP_OK);
		assert_int_equal(seen, 1);
	}
}

static void
test_empty_ack_and_unset(void **state)
{
	uint8_t			buf[64];
	struct spop_writer	w;
	struct spop_frame	f;
	long			n;

	spop_writer_init(&w, buf, sizeof(buf));
	spop_ack_begin(&w, 300, 2);
	n = spop_frame_end(&w);
	/* 4 prefix + type + 4 flags + f0 03 (300) + 02: never an empty frame */
	assert_int_equal(n, 12);
	assert_memory_equal(buf, "\x00\x00\x00\x08\x67\x00\x00\x00\x01\xfc\x03\x02", 12);
	decode_golden(buf, (size_t)n, &f);
	assert_true(f.stream_id == 300 && f.frame_id == 2);
	assert_int_equal(f.payload_len, 0);

	spop_writer_init(&w, buf, sizeof(buf));
	spop_ack_begin(&w, 0, 1);
	spop_ack_unset_var(&w, SPOP_SCOPE_SESS, "auth", 4);
	n = spop_frame_end(&w);
	assert_int_equal(n, 4 + 7 + 3 + 5);
	assert_memory_equal(buf + 11, "\x02\x02\x01\x04" "auth", 8);
}

static void
test_writer_overflow(void **state)
{
	uint8_t	buf[80];
	long	n;
	size_t	cap;
	char	longmsg[400];

	/* every capacity below the size fails and leaves the bytes past it alone */
	for (cap = 0; cap < 0x46 + 4; cap++) {
		memset(buf, 0xaa, sizeof(buf));
		n = spop_build_agent_hello(buf, cap, 16380, "pipelining,async");
		assert_int_equal(n, -1);
		for (size_t i = cap; i < sizeof(buf); i++)
			assert_int_equal(buf[i], 0xaa);
	}
	assert_int_equal(spop_build_agent_hello(buf, 0x46 + 4, 16380, "pipelining,async"), 0x46 + 4);

	/* DISCONNECT messages are cut at 255 bytes */
	{
		uint8_t			big[600];
		struct spop_frame	f;
		uint32_t		st;
		struct spop_str		msg;

		memset(longmsg, 'x', sizeof(longmsg) - 1);
		longmsg[sizeof(longmsg) - 1] = '\0';
		n = spop_build_agent_disconnect(big, sizeof(big), 3, longmsg);
		assert_true(n > 0);
		decode_golden(big, (size_t)n, &f);
		assert_int_equal(spop_disconnect_parse(f.payload, f.payload_len, &st, &msg), SPOP_OK);
		assert_int_equal(st, 3);
		assert_int_equal(msg.len, 255);
	}
}

/* ---- malformed frames ---- */

static void
test_frame_header_errors(void **state)
{
	struct spop_frame	f;
	uint8_t			*p;
	size_t			 n;

	assert_int_equal(spop_frame_decode((const uint8_t *)"", 0, &f), SPOP_ERR_INVALID);
	p = unhex("03000000", &n);			/* flags cut */
	assert_int_equal(spop_frame_decode(p, n, &f), SPOP_ERR_INVALID);
	free(p);
	p = unhex("0300000001", &n);			/* no stream-id */
	assert_int_equal(spop_frame_decode(p, n, &f), SPOP_ERR_INVALID);
	free(p);
	p = unhex("030000000100", &n);			/* no frame-id */
	assert_int_equal(spop_frame_decode(p, n, &f), SPOP_ERR_INVALID);
	free(p);
	p = unhex("0300000001f0", &n);			/* stream-id cut */
	assert_int_equal(spop_frame_decode(p, n, &f), SPOP_ERR_INVALID);
	free(p);
	p = unhex("03000000000001", &n);		/* no FIN */
	assert_int_equal(spop_frame_decode(p, n, &f), SPOP_ERR_FRAG);
	free(p);
	p = unhex("00000000010001", &n);		/* UNSET: a fragment */
	assert_int_equal(spop_frame_decode(p, n, &f), SPOP_ERR_FRAG);
	free(p);
	p = unhex("03000000010001", &n);		/* minimal NOTIFY: fine, empty payload */
	assert_int_equal(spop_frame_decode(p, n, &f), SPOP_OK);
	assert_int_equal(f.payload_len, 0);
	free(p);
}

/* Every prefix of every golden frame: no read past the end, and truncated NOTIFYs are errors. */
static void
test_truncated_everywhere(void **state)
{
	const char *golden[] = { GOLD_HELLO, GOLD_HELLO_HC, GOLD_NOTIFY, GOLD_ACK, GOLD_DISCONNECT,
	    GOLD_AGENT_HELLO };
	size_t gi, n, cut;

	for (gi = 0; gi < sizeof(golden) / sizeof(golden[0]); gi++) {
		uint8_t *full = unhex(golden[gi], &n);
		int hello_ok = 0;

		for (cut = 0; cut < n - 4; cut++) {
			uint8_t			*p = dup_exact(full + 4, cut);
			struct spop_frame	 f;
			struct spop_hello	 h;
			struct spop_notify_iter	 it;
			struct spop_str		 name;
			struct spop_kv		 kv;
			unsigned		 nargs;
			uint32_t		 fs, st;
			enum spop_err		 e;
			int			 r;

			e = spop_frame_decode(p, cut, &f);
			if (e == SPOP_OK) {
				if (f.type == SPOP_FRM_HAPROXY_HELLO) {
					/* only the cut before the optional last key (engine-id, healthcheck) is whole */
					e = spop_hello_parse(f.payload, f.payload_len, SPOP_MAX_FRAME_CAP, &h, &fs);
					if (e == SPOP_OK)
						assert_int_equal(++hello_ok, 1);
				} else if (f.type == SPOP_FRM_NOTIFY) {
					spop_notify_init(&it, f.payload, f.payload_len);
					while ((r = spop_notify_next_msg(&it, &name, &nargs)) == 1)
						while (spop_notify_next_arg(&it, &kv) == 1)
							;
					/* an empty payload is a valid NOTIFY; any other cut is not */
					if (f.payload_len > 0)
						assert_int_equal(r, -1);
				} else {
					(void)spop_disconnect_parse(f.payload, f.payload_len, &st, &name);
				}
			}
			free(p);
		}
		free(full);
	}
}

static void
test_hello_errors(void **state)
{
	struct {
		const char	*versions;	/* NULL: key absent */
		int		 mfs;		/* -1: absent */
		const char	*caps;		/* NULL: absent */
		enum spop_err	 want;
	} cases[] = {
		{ NULL, 16380, "", SPOP_ERR_NO_VSN },
		{ "1.0", 16380, "", SPOP_ERR_BAD_VSN },
		{ "2.01", 16380, "", SPOP_ERR_BAD_VSN },
		{ "", 16380, "", SPOP_ERR_BAD_VSN },
		{ " 1.0 , 2.0 ", 16380, "", SPOP_OK },
		{ "2.0,3.0", 16380, "pipelining", SPOP_OK },
		{ "2.0", -1, "", SPOP_ERR_NO_FRAME_SIZE },
		{ "2.0", 255, "", SPOP_ERR_BAD_FRAME_SIZE },
		{ "2.0", 256, "", SPOP_OK },
		{ "2.0", 16380, NULL, SPOP_ERR_NO_CAP },
		{ "2.0", 1000000, "async", SPOP_OK },
		{ "2.0", 4000000, "pipelining", SPOP_OK },	/* above our cap: we answer the cap */
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t			 buf[256];
		struct spop_writer	 w;
		struct spop_data	 d;
		struct spop_hello	 h;
		uint32_t		 fs = 0;

		spop_writer_init(&w, buf, sizeof(buf));
		if (cases[i].versions != NULL) {
			spop_put_str(&w, "supported-versions", 18);
			d = spop_string(cases[i].versions, strlen(cases[i].versions));
			spop_put_data(&w, &d);
		}
		if (cases[i].mfs >= 0) {
			spop_put_str(&w, "max-frame-size", 14);
			d = spop_uint32((uint32_t)cases[i].mfs);
			spop_put_data(&w, &d);
		}
		if (cases[i].caps != NULL) {
			spop_put_str(&w, "capabilities", 12);
			d = spop_string(cases[i].caps, strlen(cases[i].caps));
			spop_put_data(&w, &d);
		}
		spop_put_str(&w, "future-key", 10);	/* unknown keys are ignored */
		d = spop_int64(-5);
		spop_put_data(&w, &d);
		assert_false(w.overflow);
		assert_int_equal(spop_hello_parse(buf, w.off, SPOP_MAX_FRAME_CAP, &h, &fs), cases[i].want);
		if (cases[i].want == SPOP_OK)
			assert_int_equal(fs, cases[i].mfs > (int)SPOP_MAX_FRAME_CAP ? SPOP_MAX_FRAME_CAP
			    : (uint32_t)cases[i].mfs);
	}
	/* wrong value types */
	{
		uint8_t *p;
		size_t n;
		struct spop_hello h;
		uint32_t fs;

		/* supported-versions as an INT32 */
		p = unhex("12737570706f727465642d76657273696f6e730201", &n);
		assert_int_equal(spop_hello_parse(p, n, SPOP_MAX_FRAME_CAP, &h, &fs), SPOP_ERR_INVALID);
		free(p);
		/* a key whose value type byte is missing */
		p = unhex("12737570706f727465642d76657273696f6e73", &n);
		assert_int_equal(spop_hello_parse(p, n, SPOP_MAX_FRAME_CAP, &h, &fs), SPOP_ERR_INVALID);
		free(p);
	}
}

static void
test_notify_bad(void **state)
{
	const char *bad[] = {
		"10636865636b2d696e74656e74696f6e73",		/* name, no nargs */
		"10636865636b2d696e74656e74696f6e7301",		/* 1 arg announced, none */
		"10636865636b2d696e74656e74696f6e73010463657274",	/* arg name, no value */
		"10636865636b2d696e74656e74696f6e730104636572740905aa",	/* binary longer than payload */
		"10636865636b2d696e74656e74696f6e730104636572740e",	/* unknown type 14 */
		"ff",						/* message name length cut */
		"20636865636b",					/* message name longer than payload */
	};
	size_t i, n;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t			*p = unhex(bad[i], &n);
		struct spop_notify_iter	 it;
		struct spop_str		 name;
		struct spop_kv		 a;
		unsigned		 nargs;
		int			 r;

		spop_notify_init(&it, p, n);
		while ((r = spop_notify_next_msg(&it, &name, &nargs)) == 1)
			while (spop_notify_next_arg(&it, &a) == 1)
				;
		assert_int_equal(r, -1);
		assert_int_equal(it.c.err, SPOP_ERR_INVALID);
		free(p);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_varint_vectors),
		cmocka_unit_test(test_varint_overflow),
		cmocka_unit_test(test_typed_data),
		cmocka_unit_test(test_typed_data_bad),
		cmocka_unit_test(test_golden_hello),
		cmocka_unit_test(test_golden_notify),
		cmocka_unit_test(test_golden_disconnect_parse),
		cmocka_unit_test(test_build_matches_golden),
		cmocka_unit_test(test_empty_ack_and_unset),
		cmocka_unit_test(test_writer_overflow),
		cmocka_unit_test(test_frame_header_errors),
		cmocka_unit_test(test_truncated_everywhere),
		cmocka_unit_test(test_hello_errors),
		cmocka_unit_test(test_notify_bad),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
