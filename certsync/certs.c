/*
 * certs.c - see certs.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "atomicfile.h"
#include "errbuf.h"
#include "certs.h"

/* OpenSSL's first queued error as text (and the queue cleared), for err messages. */
static const char *
ssl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();

	if (e == 0)
		snprintf(buf, len, "no PEM data");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

static char *
dup_opt(json_t *obj, const char *key, int *bad)
{
	json_t *v = json_object_get(obj, key);
	char *s;

	if (v == NULL || json_is_null(v))
		return strdup("");
	if (!json_is_string(v)) {
		*bad = 1;
		return NULL;
	}
	s = strdup(json_string_value(v));
	return s;
}

static json_t *
parse(const char *json, size_t len, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root;

	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		errbuf_set(err, errlen, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
		return NULL;
	}
	if (!json_is_object(root)) {
		errbuf_set(err, errlen, "expected a JSON object");
		json_decref(root);
		return NULL;
	}
	return root;
}

/*
 * Parses every certificate in pem text and appends each to sk (up to max). A text with no certificate or
 * with trailing garbage that is not a certificate is an error. where names the field for err.
 */
static int
read_certs(const char *pem, size_t len, STACK_OF(X509) *sk, unsigned max, const char *where,
    char *err, size_t errlen)
{
	BIO *bio;
	X509 *x;
	unsigned n = 0;
	char why[160];

	if (len == 0 || len > INT32_MAX) {
		errbuf_set(err, errlen, "%s: empty", where);
		return -1;
	}
	if ((bio = BIO_new_mem_buf(pem, (int)len)) == NULL) {
		errbuf_set(err, errlen, "out of memory");
		return -1;
	}
	ERR_clear_error();
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (n >= max || sk_X509_push(sk, x) == 0) {
			X509_free(x);
			BIO_free(bio);
			errbuf_set(err, errlen, "%s: more than %u certificates", where, max);
			return -1;
		}
		n++;
	}
	/* The loop ends with PEM_R_NO_START_LINE at a clean end of input; anything else is a bad block. */
	if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE || n == 0) {
		BIO_free(bio);
		errbuf_set(err, errlen, "%s: %s", where,
		    n == 0 ? "no certificate in PEM" : ssl_reason(why, sizeof(why)));
		ERR_clear_error();
		return -1;
	}
	ERR_clear_error();
	BIO_free(bio);
	return 0;
}

/* Appends the PEM of every certificate of sk to bio. */
static int
write_certs(BIO *bio, STACK_OF(X509) *sk)
{
	int i;

	for (i = 0; i < sk_X509_num(sk); i++) {
		if (PEM_write_bio_X509(bio, sk_X509_value(sk, i)) != 1)
			return -1;
	}
	return 0;
}

/* The content of a memory BIO as a fresh NUL-terminated string. */
static int
bio_take(BIO *bio, char **out, size_t *outlen)
{
	char *p;
	long n = BIO_get_mem_data(bio, &p);

	if (n <= 0 || (*out = malloc((size_t)n + 1)) == NULL)
		return -1;
	memcpy(*out, p, (size_t)n);
	(*out)[n] = '\0';
	*outlen = (size_t)n;
	return 0;
}

void
leaf_cert_free(struct leaf_cert *l)
{
	if (l == NULL)
		return;
	free(l->serial);
	free(l->service);
	free(l->service_uri);
	free(l->valid_before);
	if (l->pem != NULL)
		OPENSSL_cleanse(l->pem, l->pem_len);
	free(l->pem);
	memset(l, 0, sizeof(*l));
}

void
ca_roots_free(struct ca_roots *r)
{
	if (r == NULL)
		return;
	free(r->active_root_id);
	free(r->trust_domain);
	free(r->pem);
	free(r->active_pem);
	memset(r, 0, sizeof(*r));
}

int
certs_decode_leaf(const char *json, size_t len, struct leaf_cert *out, char *err, size_t errlen)
{
	json_t *root, *cert, *key, *mi;
	STACK_OF(X509) *sk = NULL;
	EVP_PKEY *pkey = NULL;
	BIO *bio = NULL, *outb = NULL;
	const char *s;
	char why[160];
	int bad = 0, rc = -1;

	memset(out, 0, sizeof(*out));
	if ((root = parse(json, len, err, errlen)) == NULL)
		return -1;
	cert = json_object_get(root, "CertPEM");
	key = json_object_get(root, "PrivateKeyPEM");
	if (!json_is_string(cert) || !json_is_string(key)) {
		errbuf_set(err, errlen, "CertPEM and PrivateKeyPEM must be strings");
		goto out;
	}
	out->serial = dup_opt(root, "SerialNumber", &bad);
	out->service = dup_opt(root, "Service", &bad);
	out->service_uri = dup_opt(root, "ServiceURI", &bad);
	out->valid_before = dup_opt(root, "ValidBefore", &bad);
	if (bad) {
		errbuf_set(err, errlen, "SerialNumber, Service, ServiceURI, ValidBefore must be strings");
		goto out;
	}
	if (out->serial == NULL || out->service == NULL || out->service_uri == NULL ||
	    out->valid_before == NULL) {
		errbuf_set(err, errlen, "out of memory");
		goto out;
	}
	mi = json_object_get(root, "ModifyIndex");
	if (mi != NULL && !json_is_null(mi)) {
		if (!json_is_integer(mi) || json_integer_value(mi) < 0) {
			errbuf_set(err, errlen, "ModifyIndex: expected a non-negative number");
			goto out;
		}
		out->modify_index = (uint64_t)json_integer_value(mi);
	}
	if ((sk = sk_X509_new_null()) == NULL) {
		errbuf_set(err, errlen, "out of memory");
		goto out;
	}
	s = json_string_value(cert);
	if (read_certs(s, json_string_length(cert), sk, CERTS_MAX_CHAIN, "CertPEM", err, errlen) == -1)
		goto out;
	s = json_string_value(key);
	if (json_string_length(key) == 0 || json_string_length(key) > INT32_MAX ||
	    (bio = BIO_new_mem_buf(s, (int)json_string_length(key))) == NULL) {
		errbuf_set(err, errlen, "PrivateKeyPEM: empty");
		goto out;
	}
	ERR_clear_error();
	if ((pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)) == NULL) {
		errbuf_set(err, errlen, "PrivateKeyPEM: %s", ssl_reason(why, sizeof(why)));
		goto out;
	}
	if (X509_check_private_key(sk_X509_value(sk, 0), pkey) != 1) {
		ERR_clear_error();
		errbuf_set(err, errlen, "PrivateKeyPEM does not match the certificate in CertPEM");
		goto out;
	}
	/* Re-encode: the chain in its order, then the key; no blank lines, every line ends with \n. */
	if ((outb = BIO_new(BIO_s_mem())) == NULL || write_certs(outb, sk) == -1 ||
	    PEM_write_bio_PrivateKey(outb, pkey, NULL, NULL, 0, NULL, NULL) != 1 ||
	    bio_take(outb, &out->pem, &out->pem_len) == -1) {
		errbuf_set(err, errlen, "encoding the PEM: %s", ssl_reason(why, sizeof(why)));
		goto out;
	}
	out->ncerts = (unsigned)sk_X509_num(sk);
	rc = 0;
out:
	if (outb != NULL) {
		char *p;
		long n = BIO_get_mem_data(outb, &p);

		if (n > 0)
			OPENSSL_cleanse(p, (size_t)n);
		BIO_free(outb);
	}
	BIO_free(bio);
	EVP_PKEY_free(pkey);
	sk_X509_pop_free(sk, X509_free);
	json_decref(root);
	ERR_clear_error();
	if (rc == -1)
		leaf_cert_free(out);
	return rc;
}

/* Appends the certificates of pem to sk, skipping those already there (an intermediate shared by roots). */
static int
add_unique(STACK_OF(X509) *sk, const char *pem, size_t len, const char *where, char *err, size_t errlen)
{
	STACK_OF(X509) *tmp;
	X509 *x;
	int i, j, dup;

	if ((tmp = sk_X509_new_null()) == NULL) {
		errbuf_set(err, errlen, "out of memory");
		return -1;
	}
	if (read_certs(pem, len, tmp, CERTS_MAX_CHAIN, where, err, errlen) == -1) {
		sk_X509_pop_free(tmp, X509_free);
		return -1;
	}
	while ((x = sk_X509_shift(tmp)) != NULL) {
		for (i = 0, dup = 0, j = sk_X509_num(sk); i < j && !dup; i++)
			dup = X509_cmp(sk_X509_value(sk, i), x) == 0;
		if (dup || sk_X509_num(sk) >= CERTS_MAX_ROOTS * CERTS_MAX_CHAIN || sk_X509_push(sk, x) == 0)
			X509_free(x);
	}
	sk_X509_free(tmp);
	return 0;
}

int
certs_decode_roots(const char *json, size_t len, struct ca_roots *out, char *err, size_t errlen)
{
	json_t *root, *roots, *r, *rc_, *ic, *c, *id;
	STACK_OF(X509) *sk = NULL, *act = NULL;
	BIO *outb = NULL, *actb = NULL;
	bool active;
	size_t i, j;
	char where[96], why[160];
	int bad = 0, rc = -1;

	memset(out, 0, sizeof(*out));
	if ((root = parse(json, len, err, errlen)) == NULL)
		return -1;
	out->active_root_id = dup_opt(root, "ActiveRootID", &bad);
	out->trust_domain = dup_opt(root, "TrustDomain", &bad);
	if (bad) {
		errbuf_set(err, errlen, "ActiveRootID and TrustDomain must be strings");
		goto out;
	}
	if (out->active_root_id == NULL || out->trust_domain == NULL) {
		errbuf_set(err, errlen, "out of memory");
		goto out;
	}
	roots = json_object_get(root, "Roots");
	if (!json_is_array(roots)) {
		errbuf_set(err, errlen, "Roots: expected an array");
		goto out;
	}
	if (json_array_size(roots) == 0) {
		/* An empty bundle would make HAProxy refuse every peer: keep what we have instead. */
		errbuf_set(err, errlen, "Roots: empty (the CA is not bootstrapped?)");
		goto out;
	}
	if (json_array_size(roots) > CERTS_MAX_ROOTS) {
		errbuf_set(err, errlen, "Roots: more than %d roots", CERTS_MAX_ROOTS);
		goto out;
	}
	if ((sk = sk_X509_new_null()) == NULL || (act = sk_X509_new_null()) == NULL) {
		errbuf_set(err, errlen, "out of memory");
		goto out;
	}
	json_array_foreach(roots, i, r) {
		if (!json_is_object(r)) {
			errbuf_set(err, errlen, "Roots[%zu]: expected an object", i);
			goto out;
		}
		rc_ = json_object_get(r, "RootCert");
		if (!json_is_string(rc_)) {
			errbuf_set(err, errlen, "Roots[%zu].RootCert: expected a string", i);
			goto out;
		}
		snprintf(where, sizeof(where), "Roots[%zu].RootCert", i);
		if (add_unique(sk, json_string_value(rc_), json_string_length(rc_), where, err, errlen) == -1)
			goto out;
		id = json_object_get(r, "ID");
		active = json_is_string(id) && sk_X509_num(act) == 0 &&
		    strcmp(json_string_value(id), out->active_root_id) == 0;
		if (active && add_unique(act, json_string_value(rc_), json_string_length(rc_), where, err,
		    errlen) == -1)
			goto out;
		ic = json_object_get(r, "IntermediateCerts");
		if (ic == NULL || json_is_null(ic))
			continue;
		if (!json_is_array(ic)) {
			errbuf_set(err, errlen, "Roots[%zu].IntermediateCerts: expected an array", i);
			goto out;
		}
		json_array_foreach(ic, j, c) {
			snprintf(where, sizeof(where), "Roots[%zu].IntermediateCerts[%zu]", i, j);
			if (!json_is_string(c)) {
				errbuf_set(err, errlen, "%s: expected a string", where);
				goto out;
			}
			if (add_unique(sk, json_string_value(c), json_string_length(c), where, err, errlen) == -1)
				goto out;
			if (active && add_unique(act, json_string_value(c), json_string_length(c), where, err,
			    errlen) == -1)
				goto out;
		}
	}
	if ((outb = BIO_new(BIO_s_mem())) == NULL || write_certs(outb, sk) == -1 ||
	    bio_take(outb, &out->pem, &out->pem_len) == -1) {
		errbuf_set(err, errlen, "encoding the PEM: %s", ssl_reason(why, sizeof(why)));
		goto out;
	}
	if (sk_X509_num(act) > 0 && ((actb = BIO_new(BIO_s_mem())) == NULL || write_certs(actb, act) == -1 ||
	    bio_take(actb, &out->active_pem, &out->active_pem_len) == -1)) {
		errbuf_set(err, errlen, "encoding the PEM: %s", ssl_reason(why, sizeof(why)));
		goto out;
	}
	out->nroots = (unsigned)json_array_size(roots);
	out->ncerts = (unsigned)sk_X509_num(sk);
	rc = 0;
out:
	BIO_free(outb);
	BIO_free(actb);
	sk_X509_pop_free(sk, X509_free);
	sk_X509_pop_free(act, X509_free);
	json_decref(root);
	ERR_clear_error();
	if (rc == -1)
		ca_roots_free(out);
	return rc;
}

bool
certs_leaf_equal(const struct leaf_cert *a, const struct leaf_cert *b)
{
	return a->pem_len == b->pem_len && a->pem != NULL && b->pem != NULL &&
	    memcmp(a->pem, b->pem, a->pem_len) == 0;
}

bool
certs_roots_equal(const struct ca_roots *a, const struct ca_roots *b)
{
	return a->pem_len == b->pem_len && a->pem != NULL && b->pem != NULL &&
	    memcmp(a->pem, b->pem, a->pem_len) == 0;
}

/*
 * Verifies the first certificate of chain_pem, the others given as untrusted intermediates, against every
 * certificate of trust_pem as a trust anchor. partial: a chain may end at any certificate of the bundle
 * (X509_V_FLAG_PARTIAL_CHAIN); otherwise it must reach a self-signed root of the bundle, as HAProxy's
 * verify does (it sets no partial-chain flag). 0, or -1 with err.
 */
static int
verify_chain(const char *chain_pem, size_t chain_len, const char *trust_pem, size_t trust_len, bool partial,
    char *err, size_t errlen)
{
	STACK_OF(X509) *chain = NULL, *trust = NULL;
	X509_STORE *store = NULL;
	X509_STORE_CTX *ctx = NULL;
	X509 *x;
	int i, rc = -1;

	if ((chain = sk_X509_new_null()) == NULL || (trust = sk_X509_new_null()) == NULL ||
	    (store = X509_STORE_new()) == NULL || (ctx = X509_STORE_CTX_new()) == NULL) {
		errbuf_set(err, errlen, "out of memory");
		goto out;
	}
	if (read_certs(chain_pem, chain_len, chain, CERTS_MAX_CHAIN, "leaf", err, errlen) == -1 ||
	    read_certs(trust_pem, trust_len, trust, CERTS_MAX_ROOTS * CERTS_MAX_CHAIN, "roots",
	    err, errlen) == -1)
		goto out;
	for (i = 0; i < sk_X509_num(trust); i++) {
		if (X509_STORE_add_cert(store, sk_X509_value(trust, i)) != 1) {
			ERR_clear_error();	/* a duplicate is not an error */
		}
	}
	x = sk_X509_shift(chain);
	if (X509_STORE_CTX_init(ctx, store, x, chain) != 1) {
		X509_free(x);
		errbuf_set(err, errlen, "out of memory");
		goto out;
	}
	if (partial)
		X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_PARTIAL_CHAIN);
	if (X509_verify_cert(ctx) == 1)
		rc = 0;
	else
		errbuf_set(err, errlen, "%s", X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
	X509_free(x);
out:
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	sk_X509_pop_free(chain, X509_free);
	sk_X509_pop_free(trust, X509_free);
	ERR_clear_error();
	return rc;
}

int
certs_leaf_verify(const struct leaf_cert *leaf, const struct ca_roots *roots, char *err, size_t errlen)
{
	char why[160];

	if (leaf->pem == NULL || roots->pem == NULL) {
		errbuf_set(err, errlen, "no leaf or no roots");
		return -1;
	}
	/* Consul's intermediates are in the bundle as trust anchors too: accept a chain ending at one. */
	if (verify_chain(leaf->pem, leaf->pem_len, roots->pem, roots->pem_len, true, why, sizeof(why)) == 0)
		return 0;
	errbuf_set(err, errlen, "leaf does not verify against the CA roots: %s", why);
	return -1;
}

int
certs_leaf_verify_full(const struct leaf_cert *leaf, const struct ca_roots *roots, char *err, size_t errlen)
{
	char why[160];

	if (leaf->pem == NULL || roots->pem == NULL) {
		errbuf_set(err, errlen, "no leaf or no roots");
		return -1;
	}
	if (verify_chain(leaf->pem, leaf->pem_len, roots->pem, roots->pem_len, false, why, sizeof(why)) == 0)
		return 0;
	errbuf_set(err, errlen, "leaf does not chain to a root of the bundle: %s", why);
	return -1;
}

/* One line naming x for a log: its subject, or "?". */
static void
subject_of(X509 *x, char *out, size_t outlen)
{
	if (outlen == 0)
		return;
	if (X509_NAME_oneline(X509_get_subject_name(x), out, (int)(outlen > INT32_MAX ? INT32_MAX : outlen)) == NULL)
		snprintf(out, outlen, "?");
}

int
certs_roots_removed(const struct ca_roots *loaded, const struct ca_roots *now, char *which, size_t whichlen,
    char *err, size_t errlen)
{
	STACK_OF(X509) *a = NULL, *b = NULL;
	int i, j, found, n = 0, rc = -1;

	if (whichlen > 0)
		which[0] = '\0';
	if (loaded->pem == NULL || now->pem == NULL) {
		errbuf_set(err, errlen, "no roots");
		return -1;
	}
	if ((a = sk_X509_new_null()) == NULL || (b = sk_X509_new_null()) == NULL) {
		errbuf_set(err, errlen, "out of memory");
		goto out;
	}
	if (read_certs(loaded->pem, loaded->pem_len, a, CERTS_MAX_ROOTS * CERTS_MAX_CHAIN, "loaded roots",
	    err, errlen) == -1 ||
	    read_certs(now->pem, now->pem_len, b, CERTS_MAX_ROOTS * CERTS_MAX_CHAIN, "roots", err, errlen) == -1)
		goto out;
	for (i = 0; i < sk_X509_num(a); i++) {
		for (j = 0, found = 0; j < sk_X509_num(b) && !found; j++)
			found = X509_cmp(sk_X509_value(a, i), sk_X509_value(b, j)) == 0;
		if (found)
			continue;
		if (n++ == 0)
			subject_of(sk_X509_value(a, i), which, whichlen);
	}
	rc = n;
out:
	sk_X509_pop_free(a, X509_free);
	sk_X509_pop_free(b, X509_free);
	ERR_clear_error();
	return rc;
}

int
certs_active_trusted(const struct ca_roots *now, const struct ca_roots *loaded, char *err, size_t errlen)
{
	STACK_OF(X509) *act = NULL, *l = NULL;
	BIO *bio = NULL;
	char *pem = NULL, why[160] = "it has no cross-signed certificate";
	size_t len;
	int i, rc = -1;

	if (now->active_pem == NULL || loaded->pem == NULL) {
		errbuf_set(err, errlen, "the active root is unknown");
		return -1;
	}
	if ((act = sk_X509_new_null()) == NULL || (l = sk_X509_new_null()) == NULL) {
		errbuf_set(err, errlen, "out of memory");
		goto out;
	}
	if (read_certs(now->active_pem, now->active_pem_len, act, CERTS_MAX_ROOTS * CERTS_MAX_CHAIN, "active root",
	    err, errlen) == -1 ||
	    read_certs(loaded->pem, loaded->pem_len, l, CERTS_MAX_ROOTS * CERTS_MAX_CHAIN, "loaded roots",
	    err, errlen) == -1)
		goto out;
	/* The active root itself is a loaded root. */
	for (i = 0; i < sk_X509_num(l); i++) {
		if (X509_cmp(sk_X509_value(l, i), sk_X509_value(act, 0)) == 0) {
			rc = 0;
			goto out;
		}
	}
	/* Or one of its intermediates (the root cross-signed by an older one) chains to a loaded root. */
	for (i = 1; i < sk_X509_num(act); i++) {
		free(pem);
		pem = NULL;
		BIO_free(bio);
		if ((bio = BIO_new(BIO_s_mem())) == NULL || PEM_write_bio_X509(bio, sk_X509_value(act, i)) != 1 ||
		    write_certs(bio, act) == -1 || bio_take(bio, &pem, &len) == -1) {
			errbuf_set(err, errlen, "out of memory");
			goto out;
		}
		if (verify_chain(pem, len, loaded->pem, loaded->pem_len, false, why, sizeof(why)) == 0) {
			rc = 0;
			goto out;
		}
	}
	errbuf_set(err, errlen, "the active root does not chain to a loaded root: %s", why);
out:
	free(pem);
	BIO_free(bio);
	sk_X509_pop_free(act, X509_free);
	sk_X509_pop_free(l, X509_free);
	ERR_clear_error();
	return rc;
}

int
certs_leaf_chain_pem(const struct leaf_cert *leaf, const struct ca_roots *roots, char **out, size_t *outlen,
    char *err, size_t errlen)
{
	static const char end[] = "-----END CERTIFICATE-----";
	STACK_OF(X509) *chain = NULL, *bundle = NULL;
	BIO *bio = NULL;
	const char *p, *q;
	size_t split;
	X509 *x;
	int i, j, found, rc = -1;

	*out = NULL;
	*outlen = 0;
	if (leaf->pem == NULL || roots->pem == NULL) {
		errbuf_set(err, errlen, "no leaf or no roots");
		return -1;
	}
	/* The certificates end at the last END CERTIFICATE line; the key follows. */
	for (p = NULL, q = leaf->pem; (q = memmem(q, leaf->pem_len - (size_t)(q - leaf->pem), end,
	    sizeof(end) - 1)) != NULL; q += sizeof(end) - 1)
		p = q;
	if (p == NULL) {
		errbuf_set(err, errlen, "leaf: no certificate");
		return -1;
	}
	split = (size_t)(p - leaf->pem) + sizeof(end) - 1;
	if (split < leaf->pem_len && leaf->pem[split] == '\n')
		split++;
	if ((chain = sk_X509_new_null()) == NULL || (bundle = sk_X509_new_null()) == NULL ||
	    (bio = BIO_new(BIO_s_mem())) == NULL) {
		errbuf_set(err, errlen, "out of memory");
		goto done;
	}
	if (read_certs(leaf->pem, split, chain, CERTS_MAX_CHAIN, "leaf", err, errlen) == -1 ||
	    read_certs(roots->pem, roots->pem_len, bundle, CERTS_MAX_ROOTS * CERTS_MAX_CHAIN, "roots",
	    err, errlen) == -1)
		goto done;
	if (BIO_write(bio, leaf->pem, (int)split) != (int)split)
		goto nomem;
	for (i = 0; i < sk_X509_num(bundle) && sk_X509_num(chain) < CERTS_MAX_CHAIN; i++) {
		x = sk_X509_value(bundle, i);
		if (X509_check_issued(x, x) == X509_V_OK)
			continue;	/* a root: the peer has it or must not be handed it */
		for (j = 0, found = 0; j < sk_X509_num(chain) && !found; j++)
			found = X509_cmp(sk_X509_value(chain, j), x) == 0;
		if (found)
			continue;
		if (PEM_write_bio_X509(bio, x) != 1 || X509_up_ref(x) != 1)
			goto nomem;
		if (sk_X509_push(chain, x) == 0) {
			X509_free(x);
			goto nomem;
		}
	}
	if (BIO_write(bio, leaf->pem + split, (int)(leaf->pem_len - split)) != (int)(leaf->pem_len - split) ||
	    bio_take(bio, out, outlen) == -1)
		goto nomem;
	rc = 0;
	goto done;
nomem:
	errbuf_set(err, errlen, "out of memory");
done:
	if (bio != NULL) {
		char *m;
		long n = BIO_get_mem_data(bio, &m);

		if (n > 0)
			OPENSSL_cleanse(m, (size_t)n);	/* it held the private key */
	}
	BIO_free(bio);
	sk_X509_pop_free(chain, X509_free);
	sk_X509_pop_free(bundle, X509_free);
	ERR_clear_error();
	return rc;
}

int
certs_write_pem(const char *path, const char *pem, size_t len, mode_t mode, char *err, size_t errlen)
{
	return atomic_write_file(path, pem, len, mode, err, errlen);
}
