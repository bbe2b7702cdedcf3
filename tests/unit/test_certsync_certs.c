/*
 * test_certsync_certs.c - leaf and roots decoding, PEM normalization, chain check, atomic PEM files.
 * Certificates are made here with OpenSSL (EC P-256, like Consul's CA).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "certs.h"

static EVP_PKEY *
make_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	assert_non_null(k);
	return k;
}

/* A certificate for cn with key, signed by issuer/ikey (self-signed when issuer is NULL). */
static X509 *
make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *ikey, int ca, long serial)
{
	X509 *x = X509_new();
	X509_NAME *name;
	X509V3_CTX v3;
	X509_EXTENSION *ext;

	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name);
	X509_set_pubkey(x, key);
	X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
	assert_non_null(ext);
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	if (ca) {
		ext = X509V3_EXT_conf_nid(NULL, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
		X509_add_ext(x, ext, -1);
		X509_EXTENSION_free(ext);
	}
	assert_true(X509_sign(x, issuer != NULL ? ikey : key, EVP_sha256()) > 0);
	return x;
}

static char *
cert_pem(X509 *x)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p, *s;
	long n;

	PEM_write_bio_X509(b, x);
	n = BIO_get_mem_data(b, &p);
	s = strndup(p, (size_t)n);
	BIO_free(b);
	return s;
}

static char *
key_pem(EVP_PKEY *k)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p, *s;
	long n;

	/* Consul writes "EC PRIVATE KEY" (SEC1). */
	PEM_write_bio_PrivateKey_traditional(b, k, NULL, NULL, 0, NULL, NULL);
	n = BIO_get_mem_data(b, &p);
	s = strndup(p, (size_t)n);
	BIO_free(b);
	return s;
}

struct pki {
	EVP_PKEY *root_key, *root2_key, *leaf_key, *other_key;
	X509 *root, *root2, *cross, *leaf, *leaf2;
};

static struct pki pki;

static int
setup(void **state)
{
	pki.root_key = make_key();
	pki.root2_key = make_key();
	pki.leaf_key = make_key();
	pki.other_key = make_key();
	pki.root = make_cert("Consul CA 1", pki.root_key, NULL, NULL, 1, 1);
	pki.root2 = make_cert("Consul CA 2", pki.root2_key, NULL, NULL, 1, 2);
	/* The new root's key cross-signed by the old root, as Consul's CA rotation does. */
	pki.cross = make_cert("Consul CA 2", pki.root2_key, pki.root, pki.root_key, 1, 3);
	pki.leaf = make_cert("web", pki.leaf_key, pki.root, pki.root_key, 0, 8);
	pki.leaf2 = make_cert("web", pki.leaf_key, pki.root2, pki.root2_key, 0, 9);
	return 0;
}

static int
teardown(void **state)
{
	EVP_PKEY_free(pki.root_key);
	EVP_PKEY_free(pki.root2_key);
	EVP_PKEY_free(pki.leaf_key);
	EVP_PKEY_free(pki.other_key);
	X509_free(pki.root);
	X509_free(pki.root2);
	X509_free(pki.cross);
	X509_free(pki.leaf);
	X509_free(pki.leaf2);
	return 0;
}

/* The agent's leaf JSON for a CertPEM text and a key. */
static char *
leaf_json(const char *certpem, const char *keypem)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i}",
	    "SerialNumber", "08", "CertPEM", certpem, "PrivateKeyPEM", keypem, "Service", "web",
	    "ServiceURI", "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web",
	    "ValidBefore", "2026-11-30T15:00:00Z", "ModifyIndex", 42);
	char *s;

	assert_non_null(o);
	s = json_dumps(o, 0);
	json_decref(o);
	return s;
}

static int
count(const char *hay, const char *needle)
{
	int n = 0;

	while ((hay = strstr(hay, needle)) != NULL) {
		n++;
		hay++;
	}
	return n;
}

static void
test_leaf_ok(void **state)
{
	char *lp = cert_pem(pki.leaf2), *cp = cert_pem(pki.cross), *kp = key_pem(pki.leaf_key);
	char chain[8192], *j;
	struct leaf_cert l;
	char err[256];

	/* leaf + the cross-signed intermediate, with a blank line between them as a sloppy agent might */
	snprintf(chain, sizeof(chain), "%s\n\n%s", lp, cp);
	j = leaf_json(chain, kp);
	assert_int_equal(certs_decode_leaf(j, strlen(j), &l, err, sizeof(err)), 0);
	assert_string_equal(l.serial, "08");
	assert_string_equal(l.service, "web");
	assert_int_equal(l.modify_index, 42);
	assert_int_equal(l.ncerts, 2);
	assert_int_equal(count(l.pem, "BEGIN CERTIFICATE"), 2);
	assert_int_equal(count(l.pem, "PRIVATE KEY-----"), 2);
	assert_null(strstr(l.pem, "\n\n"));	/* HAProxy's "<<" payload would end there */
	assert_int_equal(l.pem[l.pem_len - 1], '\n');
	assert_int_equal(strlen(l.pem), l.pem_len);
	/* the leaf comes first, then the chain, then the key */
	assert_true(strstr(l.pem, "PRIVATE KEY") > strstr(l.pem + 30, "BEGIN CERTIFICATE"));
	assert_int_equal(strncmp(l.pem, lp, strlen(lp)), 0);
	leaf_cert_free(&l);
	free(j);
	free(lp);
	free(cp);
	free(kp);
}

static void
test_leaf_errors(void **state)
{
	char *lp = cert_pem(pki.leaf), *kp = key_pem(pki.leaf_key), *okp = key_pem(pki.other_key);
	char *j, err[256], trunc[4096];
	struct leaf_cert l;

	j = leaf_json(lp, okp);
	assert_int_equal(certs_decode_leaf(j, strlen(j), &l, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "does not match"));
	assert_null(l.pem);
	free(j);

	j = leaf_json("not a pem", kp);
	assert_int_equal(certs_decode_leaf(j, strlen(j), &l, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "CertPEM: no certificate"));
	free(j);

	/* a PEM cut in the middle of its base64 */
	snprintf(trunc, sizeof(trunc), "%.*s", (int)strlen(lp) / 2, lp);
	j = leaf_json(trunc, kp);
	assert_int_equal(certs_decode_leaf(j, strlen(j), &l, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "CertPEM"));
	free(j);

	j = leaf_json(lp, "");
	assert_int_equal(certs_decode_leaf(j, strlen(j), &l, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "PrivateKeyPEM"));
	free(j);

	assert_int_equal(certs_decode_leaf("{\"CertPEM\":1}", 13, &l, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "must be strings"));
	assert_int_equal(certs_decode_leaf("[]", 2, &l, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "expected a JSON object"));
	assert_int_equal(certs_decode_leaf("{", 1, &l, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "invalid JSON"));
	free(lp);
	free(kp);
	free(okp);
}

static char *
roots_json(int rotated)
{
	char *r1 = cert_pem(pki.root), *r2 = cert_pem(pki.root2), *cr = cert_pem(pki.cross), *s;
	json_t *o;

	if (rotated)
		o = json_pack("{s:s, s:s, s:[{s:s, s:s, s:n, s:b}, {s:s, s:s, s:[s, s], s:b}]}",
		    "ActiveRootID", "bb", "TrustDomain", "x.consul", "Roots",
		    "ID", "aa", "RootCert", r1, "IntermediateCerts", "Active", 0,
		    "ID", "bb", "RootCert", r2, "IntermediateCerts", cr, cr, "Active", 1);
	else
		o = json_pack("{s:s, s:s, s:[{s:s, s:s, s:n, s:b}]}",
		    "ActiveRootID", "aa", "TrustDomain", "x.consul", "Roots",
		    "ID", "aa", "RootCert", r1, "IntermediateCerts", "Active", 1);
	assert_non_null(o);
	s = json_dumps(o, 0);
	json_decref(o);
	free(r1);
	free(r2);
	free(cr);
	return s;
}

static void
test_roots(void **state)
{
	char *j1 = roots_json(0), *j2 = roots_json(1), err[256];
	struct ca_roots a, b, c;

	assert_int_equal(certs_decode_roots(j1, strlen(j1), &a, err, sizeof(err)), 0);
	assert_string_equal(a.active_root_id, "aa");
	assert_string_equal(a.trust_domain, "x.consul");
	assert_int_equal(a.nroots, 1);
	assert_int_equal(a.ncerts, 1);
	assert_int_equal(certs_decode_roots(j2, strlen(j2), &b, err, sizeof(err)), 0);
	assert_int_equal(b.nroots, 2);
	/* both roots and the cross-signed intermediate, the duplicate listed once */
	assert_int_equal(b.ncerts, 3);
	assert_int_equal(count(b.pem, "BEGIN CERTIFICATE"), 3);
	assert_null(strstr(b.pem, "\n\n"));
	assert_false(certs_roots_equal(&a, &b));
	assert_int_equal(certs_decode_roots(j1, strlen(j1), &c, err, sizeof(err)), 0);
	assert_true(certs_roots_equal(&a, &c));
	ca_roots_free(&a);
	ca_roots_free(&b);
	ca_roots_free(&c);
	free(j1);
	free(j2);
}

static void
test_roots_errors(void **state)
{
	static const struct {
		const char *json;
		const char *msg;
	} cases[] = {
		{ "{\"Roots\":[]}", "Roots: empty" },
		{ "{\"Roots\":null}", "Roots: expected an array" },
		{ "{\"Roots\":[1]}", "Roots[0]: expected an object" },
		{ "{\"Roots\":[{\"RootCert\":null}]}", "Roots[0].RootCert: expected a string" },
		{ "{\"Roots\":[{\"RootCert\":\"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n\"}]}",
		  "Roots[0].RootCert" },
		{ "{\"ActiveRootID\":5,\"Roots\":[]}", "must be strings" },
		{ "", "invalid JSON" },
	};
	struct ca_roots r;
	char err[256];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		if (certs_decode_roots(cases[i].json, strlen(cases[i].json), &r, err, sizeof(err)) != -1)
			fail_msg("case %zu accepted", i);
		if (strstr(err, cases[i].msg) == NULL)
			fail_msg("case %zu: err \"%s\" lacks \"%s\"", i, err, cases[i].msg);
		assert_null(r.pem);
	}
}

static void
test_verify(void **state)
{
	char *j1 = roots_json(0), *j2 = roots_json(1), *lp, *cp, *kp = key_pem(pki.leaf_key), *lj;
	char chain[8192], err[256];
	struct ca_roots old, rot;
	struct leaf_cert l1, l2;

	assert_int_equal(certs_decode_roots(j1, strlen(j1), &old, err, sizeof(err)), 0);
	assert_int_equal(certs_decode_roots(j2, strlen(j2), &rot, err, sizeof(err)), 0);
	lp = cert_pem(pki.leaf);
	lj = leaf_json(lp, kp);
	assert_int_equal(certs_decode_leaf(lj, strlen(lj), &l1, err, sizeof(err)), 0);
	free(lj);
	free(lp);
	/* a new leaf alone (no cross-signed cert) does not verify against the old root only */
	lp = cert_pem(pki.leaf2);
	lj = leaf_json(lp, kp);
	assert_int_equal(certs_decode_leaf(lj, strlen(lj), &l2, err, sizeof(err)), 0);
	assert_int_equal(certs_leaf_verify(&l1, &old, err, sizeof(err)), 0);
	assert_int_equal(certs_leaf_verify(&l1, &rot, err, sizeof(err)), 0);
	assert_int_equal(certs_leaf_verify(&l2, &rot, err, sizeof(err)), 0);
	assert_int_equal(certs_leaf_verify(&l2, &old, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "does not verify"));
	leaf_cert_free(&l2);
	free(lj);
	/* with the cross-signed intermediate appended (Consul does), it verifies against the old root */
	cp = cert_pem(pki.cross);
	snprintf(chain, sizeof(chain), "%s%s", lp, cp);
	lj = leaf_json(chain, kp);
	assert_int_equal(certs_decode_leaf(lj, strlen(lj), &l2, err, sizeof(err)), 0);
	assert_int_equal(certs_leaf_verify(&l2, &old, err, sizeof(err)), 0);
	assert_false(certs_leaf_equal(&l1, &l2));
	leaf_cert_free(&l1);
	leaf_cert_free(&l2);
	ca_roots_free(&old);
	ca_roots_free(&rot);
	free(lj);
	free(lp);
	free(cp);
	free(kp);
	free(j1);
	free(j2);
}

static void
test_write(void **state)
{
	char dir[] = "/tmp/test_certs_XXXXXX", path[256], buf[64], err[256];
	struct stat st;
	FILE *f;
	size_t n;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/leaf.pem", dir);
	assert_int_equal(certs_write_pem(path, "abc\n", 4, 0600, err, sizeof(err)), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(certs_write_pem(path, "second\n", 7, 0600, err, sizeof(err)), 0);
	f = fopen(path, "r");
	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	assert_int_equal(n, 7);
	assert_memory_equal(buf, "second\n", 7);
	/* into a directory that does not exist: an error, no crash */
	snprintf(path, sizeof(path), "%s/nope/leaf.pem", dir);
	assert_int_equal(certs_write_pem(path, "x", 1, 0600, err, sizeof(err)), -1);
	assert_true(err[0] != '\0');
	snprintf(path, sizeof(path), "%s/leaf.pem", dir);
	unlink(path);
	rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_leaf_ok),
		cmocka_unit_test(test_leaf_errors),
		cmocka_unit_test(test_roots),
		cmocka_unit_test(test_roots_errors),
		cmocka_unit_test(test_verify),
		cmocka_unit_test(test_write),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
