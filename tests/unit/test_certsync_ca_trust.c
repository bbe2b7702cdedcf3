/*
 * test_certsync_ca_trust.c - the checks behind a CA change without a reload (certs.h): which loaded
 * certificates a roots change removes, whether the new active root chains to the loaded bundle, the
 * served leaf chain with the bundle's cross-signed certificates, and HAProxy-like (full chain) verify.
 *
 * PKI: roots 1, 2, 3 (self-signed), x2 = root 2 signed by root 1, x3 = root 3 signed by root 2 (Consul's
 * cross-signed certificates), root 4 without a cross-signed one; leaf3 issued by root 3 with x3 (Consul's
 * chain for a leaf after two rotations).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "certs.h"

static struct {
	EVP_PKEY	*k1, *k2, *k3, *k4, *kl;
	X509		*r1, *r2, *r3, *r4, *x2, *x3, *leaf3;
} pki;

static X509 *
issue(const char *cn, EVP_PKEY *key, const char *issuer_cn, EVP_PKEY *ikey, int ca, long serial)
{
	X509 *x = X509_new();
	X509_NAME *subj, *iss;
	X509V3_CTX v3;
	X509_EXTENSION *ext;

	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 7200);
	subj = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(subj, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	iss = X509_NAME_new();
	X509_NAME_add_entry_by_txt(iss, "CN", MBSTRING_ASC, (const unsigned char *)issuer_cn, -1, -1, 0);
	X509_set_issuer_name(x, iss);
	X509_NAME_free(iss);
	X509_set_pubkey(x, key);
	X509V3_set_ctx(&v3, NULL, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
	assert_non_null(ext);
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	if (ca) {
		ext = X509V3_EXT_conf_nid(NULL, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
		X509_add_ext(x, ext, -1);
		X509_EXTENSION_free(ext);
	}
	assert_true(X509_sign(x, ikey, EVP_sha256()) > 0);
	return x;
}

/* PEM text of certificates (NULL-terminated list), malloc'd. */
static char *
pem_of(X509 *first, ...)
{
	BIO *b = BIO_new(BIO_s_mem());
	va_list ap;
	X509 *x;
	char *p, *s;
	long n;

	va_start(ap, first);
	for (x = first; x != NULL; x = va_arg(ap, X509 *))
		PEM_write_bio_X509(b, x);
	va_end(ap);
	n = BIO_get_mem_data(b, &p);
	s = strndup(p, (size_t)n);
	BIO_free(b);
	return s;
}

static int
setup(void **state)
{
	pki.k1 = EVP_EC_gen("P-256");
	pki.k2 = EVP_EC_gen("P-256");
	pki.k3 = EVP_EC_gen("P-256");
	pki.k4 = EVP_EC_gen("P-256");
	pki.kl = EVP_EC_gen("P-256");
	pki.r1 = issue("Consul CA 1", pki.k1, "Consul CA 1", pki.k1, 1, 1);
	pki.r2 = issue("Consul CA 2", pki.k2, "Consul CA 2", pki.k2, 1, 2);
	pki.r3 = issue("Consul CA 3", pki.k3, "Consul CA 3", pki.k3, 1, 3);
	pki.r4 = issue("Consul CA 4", pki.k4, "Consul CA 4", pki.k4, 1, 4);
	pki.x2 = issue("Consul CA 2", pki.k2, "Consul CA 1", pki.k1, 1, 2);
	pki.x3 = issue("Consul CA 3", pki.k3, "Consul CA 2", pki.k2, 1, 3);
	pki.leaf3 = issue("web", pki.kl, "Consul CA 3", pki.k3, 0, 100);
	return 0;
}

static int
teardown(void **state)
{
	EVP_PKEY_free(pki.k1);
	EVP_PKEY_free(pki.k2);
	EVP_PKEY_free(pki.k3);
	EVP_PKEY_free(pki.k4);
	EVP_PKEY_free(pki.kl);
	X509_free(pki.r1);
	X509_free(pki.r2);
	X509_free(pki.r3);
	X509_free(pki.r4);
	X509_free(pki.x2);
	X509_free(pki.x3);
	X509_free(pki.leaf3);
	return 0;
}

/* Roots answer: roots "1".."4" as asked (mask bit i-1), root i with its cross-signed cert, active = last. */
static void
roots(unsigned mask, struct ca_roots *out)
{
	json_t *top = json_object(), *arr = json_array();
	X509 *r[] = { pki.r1, pki.r2, pki.r3, pki.r4 }, *x[] = { NULL, pki.x2, pki.x3, NULL };
	char id[8], err[256], *s;
	unsigned i;

	for (i = 0; i < 4; i++) {
		json_t *o, *ic;

		if (!(mask & (1u << i)))
			continue;
		snprintf(id, sizeof(id), "%u", i + 1);
		o = json_object();
		json_object_set_new(o, "ID", json_string(id));
		s = pem_of(r[i], NULL);
		json_object_set_new(o, "RootCert", json_string(s));
		free(s);
		if (x[i] != NULL) {
			ic = json_array();
			s = pem_of(x[i], NULL);
			json_array_append_new(ic, json_string(s));
			free(s);
			json_object_set_new(o, "IntermediateCerts", ic);
		} else {
			json_object_set_new(o, "IntermediateCerts", json_null());
		}
		json_array_append_new(arr, o);
		json_object_set_new(top, "ActiveRootID", json_string(id));
	}
	json_object_set_new(top, "TrustDomain", json_string("11111111-2222-3333-4444-555555555555.consul"));
	json_object_set_new(top, "Roots", arr);
	s = json_dumps(top, 0);
	json_decref(top);
	assert_int_equal(certs_decode_roots(s, strlen(s), out, err, sizeof(err)), 0);
	free(s);
}

static void
leaf(struct leaf_cert *l, X509 *first, ...)
{
	BIO *b = BIO_new(BIO_s_mem());
	va_list ap;
	X509 *x;
	char *p;
	long n;

	va_start(ap, first);
	for (x = first; x != NULL; x = va_arg(ap, X509 *))
		PEM_write_bio_X509(b, x);
	va_end(ap);
	PEM_write_bio_PrivateKey(b, pki.kl, NULL, NULL, 0, NULL, NULL);
	n = BIO_get_mem_data(b, &p);
	memset(l, 0, sizeof(*l));
	l->pem = strndup(p, (size_t)n);
	l->pem_len = (size_t)n;
	BIO_free(b);
}

static void
test_active_pem(void **state)
{
	struct ca_roots r;
	char *want = pem_of(pki.r2, pki.x2, NULL);

	roots(0x3, &r);
	assert_non_null(r.active_pem);
	assert_int_equal(r.active_pem_len, strlen(want));
	assert_memory_equal(r.active_pem, want, r.active_pem_len);
	free(want);
	ca_roots_free(&r);
	assert_null(r.active_pem);
}

static void
test_removed(void **state)
{
	struct ca_roots one, one_two, two, all;
	char which[256], err[256];

	roots(0x1, &one);
	roots(0x3, &one_two);
	roots(0x2, &two);
	roots(0x7, &all);
	assert_int_equal(certs_roots_removed(&one, &one_two, which, sizeof(which), err, sizeof(err)), 0);
	assert_int_equal(certs_roots_removed(&one_two, &all, which, sizeof(which), err, sizeof(err)), 0);
	/* Consul pruned root 1: the loaded bundle loses it (x2 stays with root 2) */
	assert_int_equal(certs_roots_removed(&one_two, &two, which, sizeof(which), err, sizeof(err)), 1);
	assert_non_null(strstr(which, "Consul CA 1"));
	assert_int_equal(certs_roots_removed(&all, &one, which, sizeof(which), err, sizeof(err)), 4);
	ca_roots_free(&one);
	ca_roots_free(&one_two);
	ca_roots_free(&two);
	ca_roots_free(&all);
}

static void
test_active_trusted(void **state)
{
	struct ca_roots one, one_two, all, one_four;
	char err[256];

	roots(0x1, &one);
	roots(0x3, &one_two);
	roots(0x7, &all);
	roots(0x9, &one_four);
	/* unchanged, and one rotation: root 2 cross-signed by the loaded root 1 */
	assert_int_equal(certs_active_trusted(&one, &one, err, sizeof(err)), 0);
	assert_int_equal(certs_active_trusted(&one_two, &one, err, sizeof(err)), 0);
	/* two rotations: root 3 is cross-signed by root 2, which a worker on root 1 alone lacks */
	assert_int_equal(certs_active_trusted(&all, &one, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "does not chain"));
	assert_int_equal(certs_active_trusted(&all, &one_two, err, sizeof(err)), 0);
	/* a new CA without a cross-signed certificate */
	assert_int_equal(certs_active_trusted(&one_four, &one, err, sizeof(err)), -1);
	ca_roots_free(&one);
	ca_roots_free(&one_two);
	ca_roots_free(&all);
	ca_roots_free(&one_four);
}

static void
test_served_chain(void **state)
{
	struct ca_roots one, all;
	struct leaf_cert consul, served, bad;
	char err[256], *pem, *key;
	size_t len;

	roots(0x1, &one);
	roots(0x7, &all);
	leaf(&consul, pki.leaf3, pki.x3, NULL);
	/* Consul's chain (leaf, x3) does not reach root 1; partial verify would accept x3's issuer in "all" */
	assert_int_equal(certs_leaf_verify_full(&consul, &one, err, sizeof(err)), -1);
	assert_int_equal(certs_leaf_verify_full(&consul, &all, err, sizeof(err)), 0);
	/* served: leaf, x3, then x2 from the bundle (no root), then the key */
	assert_int_equal(certs_leaf_chain_pem(&consul, &all, &pem, &len, err, sizeof(err)), 0);
	assert_int_equal(strlen(pem), len);
	key = strstr(pem, "-----BEGIN PRIVATE KEY-----");
	assert_non_null(key);
	assert_null(strstr(key, "CERTIFICATE"));
	memset(&served, 0, sizeof(served));
	served.pem = pem;
	served.pem_len = len;
	{
		char *want = pem_of(pki.leaf3, pki.x3, pki.x2, NULL);

		assert_memory_equal(pem, want, strlen(want));
		free(want);
	}
	assert_int_equal(certs_leaf_verify_full(&served, &one, err, sizeof(err)), 0);
	/* nothing to add: the output is the input */
	free(pem);
	assert_int_equal(certs_leaf_chain_pem(&consul, &one, &pem, &len, err, sizeof(err)), 0);
	assert_int_equal(len, consul.pem_len);
	assert_memory_equal(pem, consul.pem, len);
	free(pem);
	/* a PEM without a certificate is refused */
	memset(&bad, 0, sizeof(bad));
	bad.pem = strstr(consul.pem, "-----BEGIN PRIVATE KEY-----");
	assert_non_null(bad.pem);
	bad.pem_len = strlen(bad.pem);
	assert_int_equal(certs_leaf_chain_pem(&bad, &all, &pem, &len, err, sizeof(err)), -1);
	assert_null(pem);
	free(consul.pem);
	ca_roots_free(&one);
	ca_roots_free(&all);
}

static void
test_full_vs_partial(void **state)
{
	struct ca_roots r;
	struct leaf_cert l;
	char err[256], *x3 = pem_of(pki.x3, NULL);

	/* a bundle holding only an intermediate: certs_leaf_verify accepts a chain ending there, HAProxy not */
	memset(&r, 0, sizeof(r));
	r.pem = x3;
	r.pem_len = strlen(x3);
	leaf(&l, pki.leaf3, NULL);
	assert_int_equal(certs_leaf_verify(&l, &r, err, sizeof(err)), 0);
	assert_int_equal(certs_leaf_verify_full(&l, &r, err, sizeof(err)), -1);
	free(l.pem);
	free(x3);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_active_pem),
		cmocka_unit_test(test_removed),
		cmocka_unit_test(test_active_trusted),
		cmocka_unit_test(test_served_chain),
		cmocka_unit_test(test_full_vs_partial),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
