/*
 * test_spoa_spiffe.c - caller identity from certificates made here with OpenSSL, and from URIs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "spiffe.h"

#define TD "11111111-2222-3333-4444-555555555555.consul"
#define WEB "spiffe://" TD "/ns/default/dc/dc1/svc/web"

static EVP_PKEY *key;

/* A self-signed P-256 certificate with the given SANs (e.g. "URI:spiffe://..", "DNS:x") and serial. */
static uint8_t *
make_cert(const char *const *sans, size_t nsans, const char *serial_hex, size_t *lenp)
{
	X509 *x = X509_new();
	BIGNUM *bn = NULL;
	X509V3_CTX ctx;
	uint8_t *der = NULL;
	size_t i;
	int len;

	assert_non_null(x);
	assert_int_equal(X509_set_version(x, 2), 1);
	assert_true(BN_hex2bn(&bn, serial_hex) > 0);
	assert_non_null(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)));
	BN_free(bn);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	    (const unsigned char *)"web", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_set_pubkey(x, key);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	for (i = 0; i < nsans; i++) {
		X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, sans[i]);

		assert_non_null(ext);
		assert_int_equal(X509_add_ext(x, ext, -1), 1);
		X509_EXTENSION_free(ext);
	}
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	len = i2d_X509(x, &der);
	assert_true(len > 0);
	X509_free(x);
	*lenp = (size_t)len;
	return der;
}

static int
setup(void **state)
{
	key = EVP_EC_gen("P-256");
	return key == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
	EVP_PKEY_free(key);
	return 0;
}

static void
test_one_uri(void **state)
{
	const char *sans[] = { "URI:" WEB ",DNS:web.example" };
	struct spiffe_id id;
	char err[256];
	size_t len;
	uint8_t *der = make_cert(sans, 1, "0E16B2", &len);

	assert_int_equal(spiffe_from_der(der, len, &id, err, sizeof(err)), 0);
	assert_string_equal(id.uri, WEB);
	assert_string_equal(id.trust_domain, TD);
	assert_string_equal(id.ns, "default");
	assert_string_equal(id.dc, "dc1");
	assert_string_equal(id.service, "web");
	assert_string_equal(id.serial, "0e:16:b2");
	OPENSSL_free(der);
}

static void
test_serial_forms(void **state)
{
	const char *sans[] = { "URI:" WEB };
	struct spiffe_id id;
	char err[256];
	size_t len;
	uint8_t *der;

	/* High bit set: DER pads with 00, Consul's big.Int.Bytes() does not. */
	der = make_cert(sans, 1, "8F0102", &len);
	assert_int_equal(spiffe_from_der(der, len, &id, err, sizeof(err)), 0);
	assert_string_equal(id.serial, "8f:01:02");
	OPENSSL_free(der);
	der = make_cert(sans, 1, "4", &len);
	assert_int_equal(spiffe_from_der(der, len, &id, err, sizeof(err)), 0);
	assert_string_equal(id.serial, "04");
	OPENSSL_free(der);
	der = make_cert(sans, 1, "0102030405060708090A0B0C0D0E0F1011121314", &len);
	assert_int_equal(spiffe_from_der(der, len, &id, err, sizeof(err)), 0);
	assert_string_equal(id.serial, "01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10:11:12:13:14");
	OPENSSL_free(der);
}

static void
expect_deny(const char *const *sans, size_t n, const char *want_prefix)
{
	struct spiffe_id id;
	char err[256];
	size_t len;
	uint8_t *der = make_cert(sans, n, "01", &len);

	memset(err, 0, sizeof(err));
	assert_int_equal(spiffe_from_der(der, len, &id, err, sizeof(err)), -1);
	if (strncmp(err, want_prefix, strlen(want_prefix)) != 0)
		fail_msg("error \"%s\" does not start with \"%s\"", err, want_prefix);
	assert_string_equal(id.service, "");
	OPENSSL_free(der);
}

static void
test_no_uri(void **state)
{
	const char *dns[] = { "DNS:web.example,IP:127.0.0.1" };

	expect_deny(NULL, 0, "no URI SAN");
	expect_deny(dns, 1, "no URI SAN");
}

static void
test_two_uris(void **state)
{
	const char *two[] = { "URI:" WEB ",URI:spiffe://" TD "/ns/default/dc/dc1/svc/db" };
	const char *three[] = { "URI:" WEB ",URI:" WEB ",URI:https://x.example/" };

	expect_deny(two, 1, "2 URI SANs");
	expect_deny(three, 1, "3 URI SANs");
}

static void
test_duplicate_san_extension(void **state)
{
	const char *sans[] = { "URI:" WEB, "URI:spiffe://" TD "/ns/default/dc/dc1/svc/db" };

	expect_deny(sans, 2, "bad certificate");
}

static void
test_not_spiffe(void **state)
{
	const char *https[] = { "URI:https://" TD "/ns/default/dc/dc1/svc/web" };
	const char *agent[] = { "URI:spiffe://" TD "/agent/client/dc/dc1/id/abc" };
	const char *root[] = { "URI:spiffe://" TD };

	expect_deny(https, 1, "not a SPIFFE service identity");
	expect_deny(agent, 1, "not a SPIFFE service identity");
	expect_deny(root, 1, "not a SPIFFE service identity");
}

static void
test_bad_paths(void **state)
{
	static const char *const bad[] = {
		"spiffe://" TD "/ns/default/dc/dc1/svc/",
		"spiffe://" TD "/ns/default/dc/dc1/svc",
		"spiffe://" TD "/ns/default/svc/web",
		"spiffe://" TD "/ns/default/dc/dc1/svc/web/",
		"spiffe://" TD "/ns/default/dc/dc1/svc/web/extra",
		"spiffe://" TD "/ns//dc/dc1/svc/web",
		"spiffe://" TD "/ns/default/dc/dc1/svc/we%20b",
		"spiffe://" TD "/ns/default/dc/dc1/svc/we\"b",
		"spiffe://" TD "/ns/default/dc/dc1/svc/web?x=1",
		"spiffe://" TD "/ns/default/dc/dc1/svc/web#f",
		"spiffe://" TD "/ns/default/dc/dc1/svc/..",
		"spiffe://" TD "/ns/default/dc/dc1/svc/we b",
		"spiffe://" TD "/ns/default/dc/dc1/svc/web\n",
		"spiffe:///ns/default/dc/dc1/svc/web",
		"spiffe://us er@" TD "/ns/default/dc/dc1/svc/web",
		"spiffe://" TD ":8443/ns/default/dc/dc1/svc/web",
		"spiffe://.bad/ns/default/dc/dc1/svc/web",
		"spiffe:" TD "/ns/default/dc/dc1/svc/web",
		"",
	};
	struct spiffe_id id;
	char err[256];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (spiffe_parse_uri(bad[i], strlen(bad[i]), &id, err, sizeof(err)) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_true(strncmp(err, "not a SPIFFE service identity", 29) == 0);
	}
}

static void
test_uri_direct(void **state)
{
	static const char with_tail[] = WEB "XYZ";
	struct spiffe_id id;
	char err[256], longuri[SPIFFE_URI_MAX + 64];

	assert_int_equal(spiffe_parse_uri(WEB, strlen(WEB), &id, err, sizeof(err)), 0);
	assert_string_equal(id.service, "web");
	assert_string_equal(id.serial, "");
	/* Not NUL-terminated: only len bytes count. */
	assert_int_equal(spiffe_parse_uri(with_tail, strlen(WEB), &id, err, sizeof(err)), 0);
	assert_string_equal(id.uri, WEB);
	assert_string_equal(id.service, "web");
	/* Names with the characters Consul allows. */
	assert_int_equal(spiffe_parse_uri("spiffe://a.consul/ns/default/dc/dc-2/svc/my_svc.v2-x",
	    strlen("spiffe://a.consul/ns/default/dc/dc-2/svc/my_svc.v2-x"), &id, err, sizeof(err)), 0);
	assert_string_equal(id.service, "my_svc.v2-x");
	assert_string_equal(id.dc, "dc-2");
	memset(longuri, 'a', sizeof(longuri));
	memcpy(longuri, "spiffe://x/ns/default/dc/dc1/svc/", 33);
	assert_int_equal(spiffe_parse_uri(longuri, sizeof(longuri), &id, err, sizeof(err)), -1);
	assert_int_equal(spiffe_parse_uri(NULL, 0, &id, err, sizeof(err)), -1);
}

static void
test_bad_der(void **state)
{
	const char *sans[] = { "URI:" WEB };
	struct spiffe_id id;
	char err[256];
	size_t len, cut;
	uint8_t junk[64];
	uint8_t *der = make_cert(sans, 1, "01", &len);

	assert_int_equal(spiffe_from_der(NULL, 0, &id, err, sizeof(err)), -1);
	assert_string_equal(err, "no client certificate");
	memset(junk, 0x30, sizeof(junk));
	assert_int_equal(spiffe_from_der(junk, sizeof(junk), &id, err, sizeof(err)), -1);
	assert_true(strncmp(err, "bad certificate", 15) == 0);
	/* Every truncation fails cleanly (ASan watches the reads). */
	for (cut = 0; cut < len; cut++) {
		uint8_t *copy = malloc(cut + 1);

		memcpy(copy, der, cut);
		assert_int_equal(spiffe_from_der(copy, cut, &id, err, sizeof(err)), -1);
		free(copy);
	}
	OPENSSL_free(der);
}

static void
test_colon_hex(void **state)
{
	const uint8_t b[] = { 0x0e, 0x16, 0xb2 };
	char out[16];

	assert_int_equal(spiffe_colon_hex(b, 3, out, sizeof(out)), 0);
	assert_string_equal(out, "0e:16:b2");
	assert_int_equal(spiffe_colon_hex(b, 3, out, 9), 0);
	assert_int_equal(spiffe_colon_hex(b, 3, out, 8), -1);
	assert_int_equal(spiffe_colon_hex(b, 0, out, 1), 0);
	assert_string_equal(out, "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_uri),
		cmocka_unit_test(test_serial_forms),
		cmocka_unit_test(test_no_uri),
		cmocka_unit_test(test_two_uris),
		cmocka_unit_test(test_duplicate_san_extension),
		cmocka_unit_test(test_not_spiffe),
		cmocka_unit_test(test_bad_paths),
		cmocka_unit_test(test_uri_direct),
		cmocka_unit_test(test_bad_der),
		cmocka_unit_test(test_colon_hex),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
