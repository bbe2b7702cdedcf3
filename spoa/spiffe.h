/*
 * spiffe.h - the caller's Connect identity, from its leaf certificate (DER) or a SPIFFE URI.
 *
 * Pure functions: no I/O, no globals, no logging. A Connect service identity is exactly
 *   spiffe://<trust-domain>/ns/<namespace>/dc/<datacenter>/svc/<service>
 * (Consul's agent/connect/uri.go). Anything else is refused with a short reason in err, which the
 * caller turns into a deny.
 */
#ifndef HC_SPIFFE_H
#define HC_SPIFFE_H

#include <stddef.h>
#include <stdint.h>

#define SPIFFE_URI_MAX		1024	/* a longer URI SAN is refused */
#define SPIFFE_SEGMENT_MAX	255	/* each of ns, dc, service */
#define SPIFFE_HOST_MAX		253	/* trust domain, a DNS name */
#define SPIFFE_SERIAL_MAX	64	/* bytes of serial number; RFC 5280 says at most 20 */
#define SPIFFE_DER_MAX		(64u * 1024u)

struct spiffe_id {
	char	uri[SPIFFE_URI_MAX + 1];
	char	trust_domain[SPIFFE_HOST_MAX + 1];
	char	ns[SPIFFE_SEGMENT_MAX + 1];
	char	dc[SPIFFE_SEGMENT_MAX + 1];
	char	service[SPIFFE_SEGMENT_MAX + 1];
	/* Consul's colon-hex, lower case ("0e:16:b2"); "" when parsed from a bare URI. */
	char	serial[SPIFFE_SERIAL_MAX * 3 + 1];
};

/*
 * Parses a URI of len bytes (not necessarily NUL-terminated). Returns 0 and fills id (serial ""), or -1
 * with err set to "not a SPIFFE service identity" plus detail.
 */
int spiffe_parse_uri(const char *uri, size_t len, struct spiffe_id *id, char *err, size_t errlen);

/*
 * Parses a DER certificate of len bytes: exactly one URI SAN, which must be a service identity.
 * Errors: "bad certificate", "no URI SAN", "<n> URI SANs", "not a SPIFFE service identity: ...".
 */
int spiffe_from_der(const uint8_t *der, size_t len, struct spiffe_id *id, char *err, size_t errlen);

/* Writes bytes as lower-case colon-hex into out; -1 when it does not fit. "" for n == 0. */
int spiffe_colon_hex(const uint8_t *bytes, size_t n, char *out, size_t outlen);

#endif
