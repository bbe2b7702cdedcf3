/*
 * snapfile.h - the envelope shared by the daemons' snapshot files (connect-certsync's last-known-good
 * state, connect-spoa's decision cache): one msgpack array
 *   array(nitems) [
 *     str   magic
 *     uint  format version
 *     ...   nitems - 3 items of the file's own
 *     bin32 SHA-256 of every byte before this element
 *   ]
 *
 * Opening runs in two steps, each refusing what the next could not handle safely:
 *   1. a cursor walk over the raw bytes (every length checked against what is left, array and map
 *      counts no larger than the bytes left, nesting capped, exactly one object filling the buffer), so
 *      that msgpack-c never allocates for counts a damaged file claims;
 *   2. msgpack_unpack_next into a zone, then magic, version, item count and checksum checked.
 * What the items between version and checksum mean is the caller's.
 *
 * Pure: no I/O, no globals, no logging.
 */
#ifndef HC_SNAPFILE_H
#define HC_SNAPFILE_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

struct snapfile_format {
	const char	*magic;
	const char	*what;		/* for errors: "not a <what> (bad magic)" */
	uint32_t	 version;	/* the only version read */
	uint32_t	 nitems;	/* top-level items, magic, version and checksum included (>= 3) */
	size_t		 max_len;	/* a bigger buffer is refused */
	int		 max_depth;	/* nesting allowed below the top-level array */
};

enum snapfile_status {
	SNAPFILE_OK = 0,
	SNAPFILE_CORRUPT,		/* empty, too big, not msgpack, bad magic, item count, checksum */
	SNAPFILE_VERSION_UNKNOWN,	/* the right magic, another format version */
};

/*
 * Checks buf (len bytes) against f and unpacks it into u, which this initializes: the caller calls
 * msgpack_unpacked_destroy(u) whatever the result. On SNAPFILE_OK *items points at the f->nitems
 * top-level items (inside u); on any other status err says why.
 */
enum snapfile_status snapfile_open(const struct snapfile_format *f, const uint8_t *buf, size_t len,
    msgpack_unpacked *u, const msgpack_object **items, char *err, size_t errlen);

/*
 * Starts writing a file: initializes sb and pk (pk writes into sb) and packs the array header, the
 * magic and the version. The caller then packs f->nitems - 3 items, and snapfile_seal. 0, or -1 when
 * out of memory; either way the caller owns sb (msgpack_sbuffer_destroy or _release).
 */
int  snapfile_begin(const struct snapfile_format *f, msgpack_sbuffer *sb, msgpack_packer *pk);

/* Packs the SHA-256 of the sb->size bytes of sb as the last item (bin32). 0, or -1 (out of memory). */
int  snapfile_seal(msgpack_sbuffer *sb, msgpack_packer *pk);

/* SHA-256 of len bytes, the digest of the envelope. 0, or -1 when OpenSSL fails. */
int  snapfile_sha256(const void *data, size_t len, uint8_t out[32]);

#endif
