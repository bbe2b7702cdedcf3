/*
 * consul_env.c - the Consul client's configuration, read as Consul's own CLI and API client read it
 * (api.DefaultConfig and api.NewClient): environment first, then flags override.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomicfile.h"
#include "consul.h"

/* A token file is a few dozen bytes; anything big is a mistake. */
#define TOKEN_FILE_MAX (64u * 1024u)

/* Go's strconv.ParseBool, which Consul uses for CONSUL_HTTP_SSL and CONSUL_HTTP_SSL_VERIFY. */
static int
parse_go_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "1", "t", "T", "true", "TRUE", "True" };
	static const char *const no[] = { "0", "f", "F", "false", "FALSE", "False" };
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

static int
set_str(char **dst, const char *src)
{
	char *p = NULL;

	if (src != NULL && (p = strdup(src)) == NULL)
		return -1;
	free(*dst);
	*dst = p;
	return 0;
}

static const char *
env_nonempty(const char *name)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? v : NULL;
}

int
consul_cfg_set_addr(struct consul_cfg *cfg, const char *addr, char *err, size_t errlen)
{
	const char *sep, *rest;
	char *url = NULL, *upath = NULL;
	size_t n;

	if (addr == NULL || *addr == '\0') {
		snprintf(err, errlen, "empty Consul address");
		return -1;
	}
	if ((sep = strstr(addr, "://")) != NULL) {
		rest = sep + 3;
		n = (size_t)(sep - addr);
		if (*rest == '\0') {
			snprintf(err, errlen, "Consul address \"%s\": nothing after the scheme", addr);
			return -1;
		}
		if (n == 4 && strncmp(addr, "unix", 4) == 0) {
			/* unix:///path -> "/path"; Consul's client dials parts[1] as is. */
			if ((upath = strdup(rest)) == NULL || (url = strdup("http://localhost")) == NULL)
				goto oom;
		} else if ((n == 4 && strncmp(addr, "http", 4) == 0) ||
		    (n == 5 && strncmp(addr, "https", 5) == 0)) {
			if ((url = strdup(addr)) == NULL)
				goto oom;
			cfg->ssl = n == 5;
		} else {
			snprintf(err, errlen, "Unknown protocol scheme: %.*s", (int)n, addr);
			return -1;
		}
	} else {
		n = strlen(addr) + sizeof("https://");
		if ((url = malloc(n)) == NULL)
			goto oom;
		snprintf(url, n, "%s://%s", cfg->ssl ? "https" : "http", addr);
	}
	/* The client appends paths beginning with '/'. */
	n = strlen(url);
	while (n > 0 && url[n - 1] == '/' && strstr(url, "://") + 3 < url + n)
		url[--n] = '\0';
	free(cfg->base_url);
	free(cfg->unix_path);
	cfg->base_url = url;
	cfg->unix_path = upath;
	return 0;
oom:
	free(url);
	free(upath);
	snprintf(err, errlen, "out of memory");
	return -1;
}

int
consul_cfg_set_token(struct consul_cfg *cfg, const char *token)
{
	if (set_str(&cfg->token, token != NULL && *token != '\0' ? token : NULL) == -1)
		return -1;
	free(cfg->token_file);
	cfg->token_file = NULL;
	return 0;
}

/* The token in the file at path, trimmed as Go's strings.TrimSpace does; *out is NULL for an empty file. */
static int
read_token_file(const char *path, char **out, char *err, size_t errlen)
{
	char *data, *start, *end;
	size_t len;

	*out = NULL;
	if (read_file_capped(path, TOKEN_FILE_MAX, &data, &len, err, errlen) == -1)
		return -1;
	start = data;
	end = data + len;
	while (start < end && strchr(" \t\r\n\v\f", *start) != NULL && *start != '\0')
		start++;
	while (end > start && strchr(" \t\r\n\v\f", end[-1]) != NULL && end[-1] != '\0')
		end--;
	*end = '\0';
	if (memchr(start, '\0', (size_t)(end - start)) != NULL || strpbrk(start, "\r\n") != NULL) {
		free(data);
		snprintf(err, errlen, "%s: token file holds more than one line", path);
		return -1;
	}
	if (*start != '\0' && (*out = strdup(start)) == NULL) {
		free(data);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	free(data);
	return 0;
}

int
consul_cfg_set_token_file(struct consul_cfg *cfg, const char *path, char *err, size_t errlen)
{
	char *tok, *p;

	if (read_token_file(path, &tok, err, errlen) == -1)
		return -1;
	if ((p = strdup(path)) == NULL) {
		free(tok);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	free(cfg->token);
	free(cfg->token_file);
	cfg->token = tok;
	cfg->token_file = p;
	return 0;
}

int
consul_cfg_reread_token(struct consul_cfg *cfg, bool *changed, char *err, size_t errlen)
{
	char *tok;

	if (changed != NULL)
		*changed = false;
	if (cfg->token_file == NULL)
		return 0;
	if (read_token_file(cfg->token_file, &tok, err, errlen) == -1)
		return -1;
	if (tok == NULL) {
		snprintf(err, errlen, "%s: token file is empty", cfg->token_file);
		return -1;
	}
	if (changed != NULL)
		*changed = cfg->token == NULL || strcmp(cfg->token, tok) != 0;
	free(cfg->token);
	cfg->token = tok;
	return 1;
}

int
consul_cfg_from_env(struct consul_cfg *cfg, char *err, size_t errlen)
{
	static const char *const str_envs[] = {
		"CONSUL_CACERT", "CONSUL_CAPATH", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY",
		"CONSUL_TLS_SERVER_NAME",
	};
	static const char *const token_envs[] = {
		"CONNECT_PROXY_TOKEN", "CONSUL_PROXY_TOKEN", "CONSUL_HTTP_TOKEN",
	};
	const char *v, *addr;
	size_t i;
	bool b;

	memset(cfg, 0, sizeof(*cfg));
	cfg->ssl_verify = true;

	/* CONSUL_HTTP_SSL first: it decides the scheme of a bare host:port address. */
	if ((v = env_nonempty("CONSUL_HTTP_SSL")) != NULL) {
		if (parse_go_bool(v, &b) == -1) {
			snprintf(err, errlen, "CONSUL_HTTP_SSL: invalid boolean \"%s\"", v);
			goto fail;
		}
		cfg->ssl = b;
	}
	if ((v = env_nonempty("CONSUL_HTTP_SSL_VERIFY")) != NULL) {
		if (parse_go_bool(v, &b) == -1) {
			snprintf(err, errlen, "CONSUL_HTTP_SSL_VERIFY: invalid boolean \"%s\"", v);
			goto fail;
		}
		cfg->ssl_verify = b;
	}
	addr = env_nonempty("CONSUL_HTTP_ADDR");
	if (consul_cfg_set_addr(cfg, addr != NULL ? addr : "127.0.0.1:8500", err, errlen) == -1) {
		if (addr != NULL) {
			char inner[256];

			snprintf(inner, sizeof(inner), "%s", err);
			snprintf(err, errlen, "CONSUL_HTTP_ADDR: %s", inner);
		}
		goto fail;
	}
	for (i = 0; i < sizeof(str_envs) / sizeof(str_envs[0]); i++) {
		char **dst[] = { &cfg->cacert, &cfg->capath, &cfg->client_cert, &cfg->client_key,
		    &cfg->tls_server_name };

		if ((v = env_nonempty(str_envs[i])) == NULL)
			continue;
		if (set_str(dst[i], v) == -1) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
	}
	for (i = 0; i < sizeof(token_envs) / sizeof(token_envs[0]); i++) {
		if ((v = env_nonempty(token_envs[i])) != NULL)
			break;
	}
	if (v != NULL) {
		if (consul_cfg_set_token(cfg, v) == -1) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
	} else if ((v = env_nonempty("CONSUL_HTTP_TOKEN_FILE")) != NULL) {
		if (consul_cfg_set_token_file(cfg, v, err, errlen) == -1)
			goto fail;
	}
	return 0;
fail:
	consul_cfg_free(cfg);
	return -1;
}

void
consul_cfg_free(struct consul_cfg *cfg)
{
	free(cfg->base_url);
	free(cfg->unix_path);
	free(cfg->token);
	free(cfg->token_file);
	free(cfg->cacert);
	free(cfg->capath);
	free(cfg->client_cert);
	free(cfg->client_key);
	free(cfg->tls_server_name);
	memset(cfg, 0, sizeof(*cfg));
	cfg->ssl_verify = true;
}
