/*
 * render.h - haproxy.cfg and spoe.conf for one Connect proxy, rendered from haproxy-templates/.
 *
 * The daemon fills a struct render_input, loads the two templates once (render_load_templates: the only
 * I/O of this module, with a size cap) and renders both files into memory (render_files: pure). It then
 * writes them atomically, spoe.conf at render_input.spoe_conf_path (haproxy.cfg names that path), runs
 * `haproxy -c -f`, and only then reloads. Every template variable is documented in
 * haproxy-templates/README.md.
 *
 * What the rendered configuration gives the runtime API (certsync/runtime.c):
 *   - the inbound frontend is RENDER_INBOUND_FRONTEND, its backend to the local app RENDER_LOCAL_BACKEND;
 *   - upstream i has a frontend "up_<backend_name>" and a backend <backend_name> holding
 *     upstreams[i].slots servers named RENDER_SLOT_PREFIX "1" .. RENDER_SLOT_PREFIX "<slots>", one server
 *     line each: the slots listed in upstreams[i].servers are enabled at their instance's address (a new
 *     worker serves them at once, and the file is usable without certsync), every other slot starts in
 *     maintenance at 0.0.0.0:0 ("disabled") until `set server <be>/<slot> addr A port P` and
 *     `set server <be>/<slot> state ready`; balance leastconn, so `add server` also works;
 *   - leaf_pem and ca_pem are the file names to use with `set ssl cert` / `set ssl ca-file` (see spop.md
 *     for the 2.6 ca-file trap).
 */
#ifndef HC_RENDER_H
#define HC_RENDER_H

#include <stdbool.h>
#include <stddef.h>

#include "log.h"
#include "proxycfg.h"

#define RENDER_INBOUND_FRONTEND	"inbound"
#define RENDER_LOCAL_BACKEND	"local_app"
#define RENDER_LOCAL_SERVER	"app"		/* the one server of RENDER_LOCAL_BACKEND */
#define RENDER_SPOE_BACKEND	"spoa"
#define RENDER_SLOT_PREFIX	"slot"
/* Header set toward the local app in protocol http: the caller's service name (any inbound copy is removed). */
#define RENDER_SOURCE_HEADER	"X-Connect-Source"

#define RENDER_TEMPLATE_MAX	(256 * 1024)	/* size cap of one template file */
#define RENDER_OUTPUT_MAX	(4 * 1024 * 1024)	/* size cap of one rendered file */
#define RENDER_SLOTS_MAX	4096

/* A server slot that holds a known instance: rendered enabled at addr:port. */
struct render_server {
	unsigned	 slot;		/* 0-based: the server RENDER_SLOT_PREFIX "<slot + 1>"; < slots, once each */
	const char	*addr;		/* numeric IPv4 or IPv6 address, unbracketed (no name: no DNS at start) */
	int		 port;		/* 1..65535 */
};

struct render_upstream {
	const char	*backend_name;	/* HAProxy backend name: [A-Za-z0-9_.-], 1..64 chars, unique */
	unsigned	 slots;		/* server slots, 1..RENDER_SLOTS_MAX */
	/*
	 * The service name every server of this upstream must present (its leaf CN, checked with verifyhost):
	 * the destination name, or for a prepared query the service the query returns.
	 */
	const char	*server_identity;
	const struct render_server *servers;	/* the filled slots, in any order; NULL when nservers is 0 */
	size_t		 nservers;		/* at most slots */
};

struct render_input {
	const struct proxy_cfg *cfg;
	const char	*data_dir;		/* absolute; where certsync keeps the files HAProxy reads */
	const char	*leaf_pem;		/* leaf cert + intermediates + key in one PEM file */
	const char	*ca_pem;		/* all trusted roots (and intermediates) */
	const char	*spoe_conf_path;	/* where the daemon writes the rendered spoe.conf */
	const char	*spoa_addr;		/* "127.0.0.1:port", "[::1]:port" or "unix@/path" */
	const char	*runtime_sock;		/* HAProxy stats socket (level admin) path */
	const struct render_upstream *upstreams;	/* cfg->nupstreams entries, in the same order */
	const char	*stats_addr;		/* "host:port" of a stats/Prometheus listener, or NULL for none */
	int		 nbthread;		/* 1..64 */
	enum log_level	 log_level;		/* HAProxy's log max level follows ours */
};

/* The two templates, as loaded from a template directory. */
struct render_templates {
	char		*haproxy_cfg;		/* haproxy.cfg.tmpl */
	size_t		 haproxy_cfg_len;
	char		*spoe_conf;		/* spoe.conf.tmpl */
	size_t		 spoe_conf_len;
};

struct render_output {
	char		*haproxy_cfg;		/* NUL-terminated, malloc'd */
	size_t		 haproxy_cfg_len;
	char		*spoe_conf;
	size_t		 spoe_conf_len;
};

/*
 * Reads <dir>/haproxy.cfg.tmpl and <dir>/spoe.conf.tmpl, each at most RENDER_TEMPLATE_MAX bytes.
 * The only function here that does I/O. 0, or -1 with err.
 */
int  render_load_templates(const char *dir, struct render_templates *t, char *err, size_t errlen);
void render_templates_free(struct render_templates *t);

/*
 * Validates in (names, addresses, counts: a value that could not be rendered safely is an error) and
 * renders both files into out. Pure. 0, or -1 with err naming the template, line and column, or the
 * offending input.
 */
int  render_files(const struct render_templates *t, const struct render_input *in,
    struct render_output *out, char *err, size_t errlen);
/* render_load_templates + render_files. */
int  render_from_dir(const char *dir, const struct render_input *in, struct render_output *out,
    char *err, size_t errlen);
void render_output_free(struct render_output *out);

#endif
