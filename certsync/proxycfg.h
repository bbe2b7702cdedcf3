/*
 * proxycfg.h - the configuration of one Connect proxy, decoded from what the agent says.
 *
 * Pure functions over (const char *json, size_t len): no I/O, no globals, no logging. Errors go into
 * err; warnings (unknown keys, ignored values) are appended to a caller-provided list so the daemon can
 * log each once.
 */
#ifndef HC_PROXYCFG_H
#define HC_PROXYCFG_H

#include <stdbool.h>
#include <stddef.h>

enum dest_type {
	DEST_SERVICE,
	DEST_PREPARED_QUERY,
};

struct upstream_cfg {
	enum dest_type	 dest_type;		/* destination_type / DestinationType, default service */
	char		*dest_name;		/* required */
	char		*dest_namespace;	/* optional, "default" when empty */
	char		*datacenter;		/* "" = the agent's own */
	char		*local_bind_address;	/* default "127.0.0.1" */
	int		 local_bind_port;	/* required, 1..65535 */
	int		 connect_timeout_ms;	/* default 10000 */
};

struct proxy_cfg {
	char		*proxy_id;		/* the connect-proxy service ID */
	char		*target_service_id;
	char		*target_service_name;	/* the leaf certificate is for this name */
	char		*content_hash;		/* managed: ContentHash; unmanaged: ContentHash or "" */
	char		*bind_address;		/* default "0.0.0.0" (Consul: agent bind address) */
	int		 bind_port;		/* required */
	char		*local_service_host;	/* default "127.0.0.1" */
	int		 local_service_port;	/* required */
	int		 local_connect_timeout_ms;	/* default 1000 */
	int		 handshake_timeout_ms;		/* default 10000 */
	bool		 protocol_http;		/* protocol: "tcp" (default) or "http" */
	struct upstream_cfg *upstreams;
	size_t		 nupstreams;
};

struct proxycfg_warnings {
	char		**msgs;
	size_t		  n;
};

/* GET /v1/agent/connect/proxy/<id> (managed, 1.2 Config.upstreams and 1.3+ Upstreams). */
int  proxycfg_from_managed(const char *json, size_t len, struct proxy_cfg *out,
    struct proxycfg_warnings *warn, char *err, size_t errlen);
/*
 * An AgentService of Kind connect-proxy (GET /v1/agent/service/<id>, or one value of /v1/agent/services):
 * 1.2 ProxyDestination (+ services_json to find the destination's port) or 1.3+ Proxy{...}.
 * services_json may be NULL when the registration carries LocalServicePort.
 */
int  proxycfg_from_service(const char *json, size_t len, const char *services_json, size_t services_len,
    struct proxy_cfg *out, struct proxycfg_warnings *warn, char *err, size_t errlen);
/*
 * -sidecar-for: in GET /v1/agent/services, find the one connect-proxy whose destination is service_id
 * (Proxy.DestinationServiceID, or 1.2 ProxyDestination naming that service). *proxy_id is malloc'd.
 * -1 with a clear err when there is none or more than one.
 */
int  proxycfg_find_sidecar(const char *services_json, size_t len, const char *service_id,
    char **proxy_id, char *err, size_t errlen);
bool proxycfg_equal(const struct proxy_cfg *a, const struct proxy_cfg *b);
/* True when a and b need different listeners (bind, upstream listeners): that takes a reload. */
bool proxycfg_listeners_differ(const struct proxy_cfg *a, const struct proxy_cfg *b);
int  proxycfg_copy(struct proxy_cfg *dst, const struct proxy_cfg *src);
void proxycfg_free(struct proxy_cfg *c);
void proxycfg_warnings_free(struct proxycfg_warnings *w);

#endif
