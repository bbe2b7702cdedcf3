/*
 * spiffe.c - see spiffe.h.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/asn1.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "spiffe.h"

static void
seterr(char *err, size_t errlen, const char *msg, const char *detail)
{
	if (err == NULL || errlen == 0)
		return;
	if (detail != NULL)
		snprintf(err, errlen, "%s: %s", msg, detail);
	else
		snprintf(err, errlen, "%s", msg);
}

#define NOT_SPIFFE "not a SPIFFE service identity"

/* A DNS-ish trust domain: letters, digits, '-', '.', not starting or ending with '.'. */
static int
host_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > SPIFFE_HOST_MAX || s[0] == '.' || s[n - 1] == '.')
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.'))
			return 0;
	}
	return 1;
}

/*
 * A path segment of a Connect name. Consul names are DNS-compatible; '_' and '.' are accepted too.
 * Everything else (percent escapes, spaces, controls, quotes) is refused so that what we pass on to
 * the agent, the logs and HAProxy's variables is plain.
 */
static int
segment_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > SPIFFE_SEGMENT_MAX)
		return 0;
	if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.'))
			return 0;
	}
	return 1;
}

/* Cursor over the path: expects "/<lit>/<segment>" and copies the segment into out. */
static int
take_pair(const char *p, size_t len, size_t *off, const char *lit, char *out, size_t outlen)
{
	size_t litlen = strlen(lit), start, n;

	if (len - *off < litlen + 2 || p[*off] != '/' || memcmp(p + *off + 1, lit, litlen) != 0 ||
	    p[*off + 1 + litlen] != '/')
		return -1;
	*off += litlen + 2;
	start = *off;
	while (*off < len && p[*off] != '/')
		(*off)++;
	n = *off - start;
	if (!segment_ok(p + start, n) || n >= outlen)
		return -1;
	memcpy(out, p + start, n);
	out[n] = '\0';
	return 0;
}

int
spiffe_parse_uri(const char *uri, size_t len, struct spiffe_id *id, char *err, size_t errlen)
{
	static const char scheme[] = "spiffe://";
	size_t off, hstart, i;

	memset(id, 0, sizeof(*id));
	if (uri == NULL || len == 0) {
		seterr(err, errlen, NOT_SPIFFE, "empty URI");
		return -1;
	}
	if (len > SPIFFE_URI_MAX) {
		seterr(err, errlen, NOT_SPIFFE, "URI too long");
		return -1;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)uri[i];

		if (c <= 0x20 || c >= 0x7f) {
			seterr(err, errlen, NOT_SPIFFE, "odd character in URI");
			return -1;
		}
	}
	if (len < sizeof(scheme) - 1 || strncasecmp(uri, scheme, sizeof(scheme) - 1) != 0) {
		seterr(err, errlen, NOT_SPIFFE, "scheme is not spiffe");
		return -1;
	}
	off = sizeof(scheme) - 1;
	hstart = off;
	while (off < len && uri[off] != '/')
		off++;
	if (!host_ok(uri + hstart, off - hstart)) {
		seterr(err, errlen, NOT_SPIFFE, "bad trust domain");
		return -1;
	}
	memcpy(id->trust_domain, uri + hstart, off - hstart);
	id->trust_domain[off - hstart] = '\0';
	if (take_pair(uri, len, &off, "ns", id->ns, sizeof(id->ns)) == -1 ||
	    take_pair(uri, len, &off, "dc", id->dc, sizeof(id->dc)) == -1 ||
	    take_pair(uri, len, &off, "svc", id->service, sizeof(id->service)) == -1 || off != len) {
		memset(id, 0, sizeof(*id));
		seterr(err, errlen, NOT_SPIFFE, "path is not /ns/<ns>/dc/<dc>/svc/<service>");
		return -1;
	}
	memcpy(id->uri, uri, len);
	id->uri[len] = '\0';
	return 0;
}

int
spiffe_colon_hex(const uint8_t *bytes, size_t n, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, o = 0;

	if (outlen == 0)
		return -1;
	for (i = 0; i < n; i++) {
		size_t need = (i > 0 ? 1 : 0) + 2;

		if (outlen - o < need + 1)
			return -1;
		if (i > 0)
			out[o++] = ':';
		out[o++] = hex[bytes[i] >> 4];
		out[o++] = hex[bytes[i] & 0x0f];
	}
	if (outlen - o < 1)
		return -1;
	out[o] = '\0';
	return 0;
}

/* Consul prints big.Int.Bytes(): the magnitude, big-endian, without leading zero bytes. */
static int
serial_hex(const X509 *x, char *out, size_t outlen)
{
	const ASN1_INTEGER *sn = X509_get0_serialNumber(x);
	const unsigned char *p;
	int n;

	if (sn == NULL)
		return -1;
	p = ASN1_STRING_get0_data(sn);
	n = ASN1_STRING_length(sn);
	if (n < 0 || (n > 0 && p == NULL))
		return -1;
	while (n > 0 && p[0] == 0) {
		p++;
		n--;
	}
	if ((size_t)n > SPIFFE_SERIAL_MAX)
		return -1;
	return spiffe_colon_hex(p, (size_t)n, out, outlen);
}

int
spiffe_from_der(const uint8_t *der, size_t len, struct spiffe_id *id, char *err, size_t errlen)
{
	const unsigned char *p = der;
	GENERAL_NAMES *names = NULL;
	const ASN1_IA5STRING *uri = NULL;
	X509 *x = NULL;
	int crit = -1, nuri = 0, i, rc = -1;
	char buf[64];

	memset(id, 0, sizeof(*id));
	if (der == NULL || len == 0) {
		seterr(err, errlen, "no client certificate", NULL);
		return -1;
	}
	if (len > SPIFFE_DER_MAX) {
		seterr(err, errlen, "bad certificate", "too large");
		return -1;
	}
	x = d2i_X509(NULL, &p, (long)len);
	if (x == NULL) {
		seterr(err, errlen, "bad certificate", "DER does not decode");
		goto out;
	}
	names = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
	if (names == NULL) {
		/* crit -2: the extension appears more than once, which RFC 5280 forbids. */
		seterr(err, errlen, crit == -2 ? "bad certificate" : "no URI SAN",
		    crit == -2 ? "duplicate subjectAltName extension" : NULL);
		goto out;
	}
	for (i = 0; i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);

		if (gn != NULL && gn->type == GEN_URI) {
			if (nuri == 0)
				uri = gn->d.uniformResourceIdentifier;
			nuri++;
		}
	}
	if (nuri == 0) {
		seterr(err, errlen, "no URI SAN", NULL);
		goto out;
	}
	if (nuri > 1) {
		snprintf(buf, sizeof(buf), "%d URI SANs", nuri);
		seterr(err, errlen, buf, NULL);
		goto out;
	}
	if (uri == NULL || ASN1_STRING_length(uri) <= 0) {
		seterr(err, errlen, NOT_SPIFFE, "empty URI SAN");
		goto out;
	}
	if (spiffe_parse_uri((const char *)ASN1_STRING_get0_data(uri), (size_t)ASN1_STRING_length(uri),
	    id, err, errlen) == -1)
		goto out;
	if (serial_hex(x, id->serial, sizeof(id->serial)) == -1) {
		memset(id, 0, sizeof(*id));
		seterr(err, errlen, "bad certificate", "serial number");
		goto out;
	}
	rc = 0;
out:
	GENERAL_NAMES_free(names);
	X509_free(x);
	return rc;
}
