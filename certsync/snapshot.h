/*
 * snapshot.h - connect-certsync's last-known-good state, kept in its data dir so that it can start and
 * serve while the Consul agent cannot be reached (also across restarts).
 *
 * What is kept: the proxy configuration, the path, SHA-256 and NotAfter of the leaf PEM and the path and
 * SHA-256 of the CA bundle certsync wrote (the key material itself stays in those files), and the
 * instances last known for every upstream, each with the time it was learnt.
 *
 * File format (msgpack; version SNAPSHOT_VERSION):
 *   array(6) [
 *     str   SNAPSHOT_MAGIC
 *     uint  format version
 *     str   proxy id
 *     int   written at (Unix seconds)
 *     map   state: {"config": {...}, "config_at": int, "leaf": {"path", "sha256", "not_after", "at"},
 *                   "ca": {"path", "sha256", "at"}, "upstreams": [{"dest_name", "datacenter",
 *                   "service", "at", "instances": [{"addr", "port", "node", "datacenter", "service_id"}]}]}
 *     bin32 SHA-256 of every byte before this element
 *   ]
 * Map keys are checked strictly: an unknown, missing or repeated key makes the file invalid; a format
 * change bumps the version.
 *
 * The codec is pure (no I/O, no logging): a decode either yields a complete state, every field checked
 * (types, string lengths, no control characters, port and time ranges, capped counts), or an error and
 * nothing. snapshot_save/snapshot_load/snapshot_check_files are the only functions doing I/O.
 */
#ifndef HC_SNAPSHOT_H
#define HC_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "proxycfg.h"

#define SNAPSHOT_MAGIC		"haproxy-connect certsync snapshot"
#define SNAPSHOT_VERSION	1
#define SNAPSHOT_FILE_MAX	(16u * 1024u * 1024u)	/* a bigger file is refused without reading it */
#define SNAPSHOT_STR_MAX	4096u			/* any one string */
#define SNAPSHOT_UPSTREAMS_MAX	1024u
#define SNAPSHOT_INSTANCES_MAX	4096u			/* per upstream */
#define SNAPSHOT_CERT_MAX	(1024u * 1024u)		/* leaf or CA file read by snapshot_check_files */
#define SNAPSHOT_FILENAME	"certsync.snapshot"	/* default name in the data dir */

enum snapshot_status {
	SNAPSHOT_OK = 0,
	SNAPSHOT_MISSING,	/* no snapshot file: nothing to warn about */
	SNAPSHOT_IO,		/* unreadable, too big, cannot be written */
	SNAPSHOT_CORRUPT,	/* truncated, not msgpack, checksum mismatch, a field invalid */
	SNAPSHOT_VERSION_UNKNOWN, /* a snapshot of a format version this build does not read */
	SNAPSHOT_FOREIGN,	/* a valid snapshot of another proxy */
	SNAPSHOT_UNUSABLE,	/* valid, but the certificate files changed or the leaf expired */
};

struct snapshot_instance {
	char	*addr;		/* numeric address HAProxy dials */
	int	 port;		/* 1..65535 */
	char	*node;		/* may be "" */
	char	*datacenter;	/* may be "" */
	char	*service_id;	/* may be "" */
};

/* Instances of cfg.upstreams[i] are in upstreams[i]: same count, same order, same dest_name. */
struct snapshot_upstream {
	char	*dest_name;	/* = cfg.upstreams[i].dest_name */
	char	*datacenter;	/* = cfg.upstreams[i].datacenter, may be NULL */
	char	*service;	/* the service every instance must present (destination or a query's) */
	int64_t	 at;		/* when these instances were learnt; 0: no answer yet, no instances */
	struct snapshot_instance *instances;
	size_t	 ninstances;
};

struct snapshot_file {
	char	*path;		/* absolute or relative to the daemon's cwd, as certsync wrote it */
	uint8_t	 sha256[32];	/* of the whole file */
	int64_t	 at;		/* when it was written */
};

struct certsync_snapshot {
	char	*proxy_id;	/* header: the connect-proxy service ID (= cfg.proxy_id) */
	int64_t	 written_at;	/* header: Unix seconds */
	struct proxy_cfg cfg;	/* cfg.proxy_id and cfg.target_service_name are required */
	int64_t	 cfg_at;
	struct snapshot_file leaf;	/* leaf + intermediates + key */
	int64_t	 leaf_not_after;	/* the leaf's NotAfter, Unix seconds */
	struct snapshot_file ca;	/* CA bundle */
	struct snapshot_upstream *upstreams;	/* cfg.nupstreams entries */
	size_t	 nupstreams;
};

/*
 * Encodes s into a fresh buffer (*out, free()d by the caller). The times must not be after
 * s->written_at and every field must be in the ranges snapshot_decode accepts. 0, or -1 with err.
 */
int  snapshot_encode(const struct certsync_snapshot *s, uint8_t **out, size_t *outlen,
    char *err, size_t errlen);

/*
 * Decodes a snapshot. The snapshot must belong to this proxy: its proxy id equal to expect_proxy_id,
 * or (-sidecar-for, where the proxy id is not known before the agent answers) its target service ID
 * equal to expect_sidecar_for; at least one of the two must be given. On SNAPSHOT_OK *out holds a
 * complete state (free with snapshot_free); on any other status *out is zeroed and err says why.
 */
enum snapshot_status snapshot_decode(const uint8_t *buf, size_t len, const char *expect_proxy_id,
    const char *expect_sidecar_for, struct certsync_snapshot *out, char *err, size_t errlen);

void snapshot_free(struct certsync_snapshot *s);

/* A readable name for a status ("corrupt", "foreign proxy", ...). */
const char *snapshot_status_str(enum snapshot_status st);

/* Encodes s and writes it atomically to path with mode 0600. 0, or -1 with err. */
int  snapshot_save(const char *path, const struct certsync_snapshot *s, char *err, size_t errlen);

/* Reads path (at most SNAPSHOT_FILE_MAX bytes) and decodes it as snapshot_decode does. */
enum snapshot_status snapshot_load(const char *path, const char *expect_proxy_id,
    const char *expect_sidecar_for, struct certsync_snapshot *out, char *err, size_t errlen);

/*
 * Whether a loaded snapshot may be served at time now (Unix seconds): the leaf and CA files still hash
 * to the recorded SHA-256, and the leaf (the first certificate of the leaf file, and the recorded
 * NotAfter) is not past its expiry. SNAPSHOT_OK, or SNAPSHOT_UNUSABLE with err saying why.
 */
enum snapshot_status snapshot_check_files(const struct certsync_snapshot *s, int64_t now,
    char *err, size_t errlen);

/* SHA-256 of a whole file of at most SNAPSHOT_CERT_MAX bytes. 0, or -1 with err. */
int  snapshot_hash_file(const char *path, uint8_t sha256[32], char *err, size_t errlen);

/* NotAfter (Unix seconds) of the first certificate in a PEM buffer. 0, or -1 with err. */
int  snapshot_pem_not_after(const char *pem, size_t len, int64_t *not_after, char *err, size_t errlen);

/*
 * The daemon's writer: remembers what it last wrote, so that a snapshot is written only when the state
 * changed and every part keeps the time it was first seen with.
 */
struct snapshot_keeper;

struct snapshot_keeper *snapshot_keeper_new(const char *path);
void snapshot_keeper_free(struct snapshot_keeper *k);
const char *snapshot_keeper_path(const struct snapshot_keeper *k);
/* Takes s (a loaded snapshot, borrowed) as what is on disk: parts equal to it keep its times. 0 or -1. */
int  snapshot_keeper_prime(struct snapshot_keeper *k, const struct certsync_snapshot *s, char *err,
    size_t errlen);
/*
 * cur is the state serving now (borrowed; cur->leaf.path and cur->ca.path set, an upstream's at > 0 when
 * its instances come from an answer). Fills cur's SHA-256s and leaf NotAfter from the two files and
 * every time (unchanged parts keep the time of the last write, changed ones get now), and writes the
 * snapshot when anything differs from the last write. 1 written, 0 unchanged, -1 with err.
 */
int  snapshot_keeper_update(struct snapshot_keeper *k, struct certsync_snapshot *cur, int64_t now,
    char *err, size_t errlen);

#endif
