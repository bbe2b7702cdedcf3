/*
 * certs.h - the leaf certificate and the CA roots from what the agent says, and the PEM files HAProxy reads.
 *
 *   GET /v1/agent/connect/ca/leaf/<service>  -> struct leaf_cert
 *   GET /v1/agent/connect/ca/roots           -> struct ca_roots
 *
 * Decoders are pure (no I/O, no globals, no logging): they check the JSON shape and that every PEM really
 * parses (and that the leaf's key matches its certificate), and re-encode the PEM so that the files have no
 * blank line (HAProxy's "set ssl cert <<" payload ends at a blank line). certs_write_pem is the only I/O:
 * an atomic write (temp file, fsync, rename), so HAProxy never sees half a PEM.
 */
#ifndef HC_CERTS_H
#define HC_CERTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CERTS_MAX_ROOTS		64	/* roots in one answer; Consul keeps a handful */
#define CERTS_MAX_CHAIN		16	/* certificates in one CertPEM or one root's intermediates */

struct leaf_cert {
	char		*serial;	/* SerialNumber, colon hex as Consul writes it */
	char		*service;	/* Service */
	char		*service_uri;	/* ServiceURI (spiffe://...) */
	char		*valid_before;	/* ValidBefore, RFC 3339 text */
	uint64_t	 modify_index;	/* ModifyIndex, 0 when absent */
	char		*pem;		/* normalized: leaf, intermediates, then the private key */
	size_t		 pem_len;
	unsigned	 ncerts;	/* certificates in pem (leaf + intermediates) */
};

struct ca_roots {
	char		*active_root_id;
	char		*trust_domain;
	char		*pem;		/* normalized bundle: every root and every intermediate, no duplicates */
	size_t		 pem_len;
	unsigned	 nroots;
	unsigned	 ncerts;	/* certificates in pem */
	char		*active_pem;	/* the active root's certificate, then its IntermediateCerts; NULL: none */
	size_t		 active_pem_len;
};

/* 0, or -1 with err (out is then zeroed). */
int  certs_decode_leaf(const char *json, size_t len, struct leaf_cert *out, char *err, size_t errlen);
int  certs_decode_roots(const char *json, size_t len, struct ca_roots *out, char *err, size_t errlen);
/* Same content as far as HAProxy is concerned (the PEM files would be identical). */
bool certs_leaf_equal(const struct leaf_cert *a, const struct leaf_cert *b);
bool certs_roots_equal(const struct ca_roots *a, const struct ca_roots *b);
/* Whether the leaf's chain verifies against the bundle (a leaf ahead of its roots does not). */
int  certs_leaf_verify(const struct leaf_cert *leaf, const struct ca_roots *roots, char *err, size_t errlen);
/*
 * The same, but the chain must reach a self-signed root of the bundle (no partial chain), as HAProxy's
 * "verify required" checks a peer against its ca-file.
 */
int  certs_leaf_verify_full(const struct leaf_cert *leaf, const struct ca_roots *roots, char *err, size_t errlen);
/*
 * Whether a HAProxy that loaded the bundle `loaded` must reload for the roots `now` (a CA change):
 *   certs_roots_removed: how many certificates of loaded are not in now (which: the first one's subject),
 *     -1 with err;
 *   certs_active_trusted: 0 when leaves of now's active root verify against loaded (the active root is
 *     a loaded root, or one of its intermediates, a cross-signed copy, chains to one), -1 with err.
 */
int  certs_roots_removed(const struct ca_roots *loaded, const struct ca_roots *now, char *which, size_t whichlen,
    char *err, size_t errlen);
int  certs_active_trusted(const struct ca_roots *now, const struct ca_roots *loaded, char *err, size_t errlen);
/*
 * The leaf's PEM with, after its own chain, every cross-signed (non-self-signed) certificate of the
 * bundle it does not carry yet: Consul puts only the newest cross-signed root in a leaf, so a peer that
 * still trusts a root two rotations back could not build the path; with the others it can. Roots are
 * never added. *out is malloc'd (it holds the key). 0, or -1 with err.
 */
int  certs_leaf_chain_pem(const struct leaf_cert *leaf, const struct ca_roots *roots, char **out, size_t *outlen,
    char *err, size_t errlen);
void leaf_cert_free(struct leaf_cert *l);
void ca_roots_free(struct ca_roots *r);

/* Writes pem to path atomically with mode (0600 for anything holding a key). 0, or -1 with err. */
int  certs_write_pem(const char *path, const char *pem, size_t len, mode_t mode, char *err, size_t errlen);

#endif
