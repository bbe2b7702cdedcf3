/*
 * test_lib_consul_cfg.c - configuration read as Consul's CLI reads it: addresses, SSL flags, TLS
 * files, token precedence and token files; flags override the environment.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "atomicfile.h"
#include "consul.h"

static const char *const all_env[] = {
	"CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY", "CONSUL_CACERT",
	"CONSUL_CAPATH", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_TLS_SERVER_NAME",
	"CONNECT_PROXY_TOKEN", "CONSUL_PROXY_TOKEN", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE",
};

static int
clear_env(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(all_env) / sizeof(all_env[0]); i++)
		unsetenv(all_env[i]);
	return 0;
}

static void
test_defaults(void **state)
{
	struct consul_cfg cfg;
	char err[256];

	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.base_url, "http://127.0.0.1:8500");
	assert_null(cfg.unix_path);
	assert_null(cfg.token);
	assert_false(cfg.ssl);
	assert_true(cfg.ssl_verify);
	assert_int_equal(cfg.max_body, 0);
	consul_cfg_free(&cfg);
}

static void
test_addresses(void **state)
{
	static const struct {
		const char *addr, *ssl, *url, *unix_path;
	} cases[] = {
		{ "10.0.0.1:8500", NULL, "http://10.0.0.1:8500", NULL },
		{ "10.0.0.1:8501", "true", "https://10.0.0.1:8501", NULL },
		{ "10.0.0.1:8501", "1", "https://10.0.0.1:8501", NULL },
		{ "10.0.0.1:8500", "false", "http://10.0.0.1:8500", NULL },
		{ "http://agent:8500", "true", "http://agent:8500", NULL },
		{ "https://agent:8501", NULL, "https://agent:8501", NULL },
		{ "https://agent:8501/", NULL, "https://agent:8501", NULL },
		{ "[::1]:8500", NULL, "http://[::1]:8500", NULL },
		{ "unix:///var/run/consul.sock", NULL, "http://localhost", "/var/run/consul.sock" },
	};
	struct consul_cfg cfg;
	char err[256];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		setenv("CONSUL_HTTP_ADDR", cases[i].addr, 1);
		if (cases[i].ssl != NULL)
			setenv("CONSUL_HTTP_SSL", cases[i].ssl, 1);
		else
			unsetenv("CONSUL_HTTP_SSL");
		assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), 0);
		assert_string_equal(cfg.base_url, cases[i].url);
		if (cases[i].unix_path != NULL)
			assert_string_equal(cfg.unix_path, cases[i].unix_path);
		else
			assert_null(cfg.unix_path);
		consul_cfg_free(&cfg);
	}
}

static void
test_bad_values(void **state)
{
	struct consul_cfg cfg;
	char err[256];

	setenv("CONSUL_HTTP_ADDR", "ftp://agent:21", 1);
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "Unknown protocol scheme: ftp"));
	setenv("CONSUL_HTTP_ADDR", "http://", 1);
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), -1);
	setenv("CONSUL_HTTP_ADDR", "127.0.0.1:8500", 1);
	setenv("CONSUL_HTTP_SSL", "yes", 1);
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "CONSUL_HTTP_SSL"));
	unsetenv("CONSUL_HTTP_SSL");
	setenv("CONSUL_HTTP_SSL_VERIFY", "nope", 1);
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), -1);
	setenv("CONSUL_HTTP_SSL_VERIFY", "false", 1);
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), 0);
	assert_false(cfg.ssl_verify);
	consul_cfg_free(&cfg);
}

static void
test_tls_files(void **state)
{
	struct consul_cfg cfg;
	char err[256];

	setenv("CONSUL_CACERT", "/etc/consul/ca.pem", 1);
	setenv("CONSUL_CAPATH", "/etc/consul/ca.d", 1);
	setenv("CONSUL_CLIENT_CERT", "/etc/consul/c.pem", 1);
	setenv("CONSUL_CLIENT_KEY", "/etc/consul/c.key", 1);
	setenv("CONSUL_TLS_SERVER_NAME", "server.dc1.consul", 1);
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.cacert, "/etc/consul/ca.pem");
	assert_string_equal(cfg.capath, "/etc/consul/ca.d");
	assert_string_equal(cfg.client_cert, "/etc/consul/c.pem");
	assert_string_equal(cfg.client_key, "/etc/consul/c.key");
	assert_string_equal(cfg.tls_server_name, "server.dc1.consul");
	consul_cfg_free(&cfg);
}

static void
test_token_order(void **state)
{
	char path[] = "/tmp/test_lib_consul_cfg.XXXXXX", err[256];
	struct consul_cfg cfg;
	int fd;

	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(atomic_write_file(path, "  file-token\n\n", 14, 0600, err, sizeof(err)), 0);

	setenv("CONSUL_HTTP_TOKEN_FILE", path, 1);
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.token, "file-token");
	consul_cfg_free(&cfg);
	/* Empty variables do not count. */
	setenv("CONSUL_HTTP_TOKEN", "", 1);
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.token, "file-token");
	consul_cfg_free(&cfg);
	setenv("CONSUL_HTTP_TOKEN", "http-token", 1);
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.token, "http-token");
	consul_cfg_free(&cfg);
	setenv("CONSUL_PROXY_TOKEN", "proxy-token", 1);
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.token, "proxy-token");
	consul_cfg_free(&cfg);
	setenv("CONNECT_PROXY_TOKEN", "connect-token", 1);
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.token, "connect-token");
	/* Flags override the environment. */
	assert_int_equal(consul_cfg_set_token(&cfg, "flag-token"), 0);
	assert_string_equal(cfg.token, "flag-token");
	assert_int_equal(consul_cfg_set_token_file(&cfg, path, err, sizeof(err)), 0);
	assert_string_equal(cfg.token, "file-token");
	consul_cfg_free(&cfg);

	/* A token file that cannot be read, or holds two lines, is an error. */
	clear_env(NULL);
	setenv("CONSUL_HTTP_TOKEN_FILE", "/nonexistent/token", 1);
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "/nonexistent/token"));
	assert_int_equal(atomic_write_file(path, "a\nb\n", 4, 0600, err, sizeof(err)), 0);
	setenv("CONSUL_HTTP_TOKEN_FILE", path, 1);
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), -1);
	unlink(path);
}

static void
write_token(const char *path, const char *data)
{
	char err[256];

	assert_int_equal(atomic_write_file(path, data, strlen(data), 0600, err, sizeof(err)), 0);
}

/* SIGHUP's re-read: only a token that came from a file; a bad file keeps the token in use. */
static void
test_token_reread(void **state)
{
	char path[] = "/tmp/test_lib_consul_cfg.XXXXXX", err[256];
	struct consul_cfg cfg;
	bool changed = true;
	int fd;

	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	write_token(path, "token-a\n");

	/* -token-file */
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), 0);
	assert_int_equal(consul_cfg_reread_token(&cfg, &changed, err, sizeof(err)), 0);
	assert_false(changed);
	assert_int_equal(consul_cfg_set_token_file(&cfg, path, err, sizeof(err)), 0);
	assert_string_equal(cfg.token, "token-a");
	assert_string_equal(cfg.token_file, path);
	assert_int_equal(consul_cfg_reread_token(&cfg, &changed, err, sizeof(err)), 1);
	assert_false(changed);
	assert_string_equal(cfg.token, "token-a");
	write_token(path, " token-b \n");
	assert_int_equal(consul_cfg_reread_token(&cfg, &changed, err, sizeof(err)), 1);
	assert_true(changed);
	assert_string_equal(cfg.token, "token-b");

	/* Empty (a writer caught between truncate and write), two lines, missing: -1, token-b stays. */
	write_token(path, " \n");
	err[0] = '\0';
	assert_int_equal(consul_cfg_reread_token(&cfg, &changed, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "empty"));
	assert_string_equal(cfg.token, "token-b");
	write_token(path, "token-c\ntoken-d\n");
	assert_int_equal(consul_cfg_reread_token(&cfg, &changed, err, sizeof(err)), -1);
	assert_string_equal(cfg.token, "token-b");
	unlink(path);
	err[0] = '\0';
	assert_int_equal(consul_cfg_reread_token(&cfg, NULL, err, sizeof(err)), -1);
	assert_non_null(strstr(err, path));
	assert_string_equal(cfg.token, "token-b");
	assert_string_equal(cfg.token_file, path);
	/* And it comes back. */
	write_token(path, "token-e");
	assert_int_equal(consul_cfg_reread_token(&cfg, NULL, err, sizeof(err)), 1);
	assert_string_equal(cfg.token, "token-e");

	/* -token after -token-file: a token by value is never re-read. */
	assert_int_equal(consul_cfg_set_token(&cfg, "flag-token"), 0);
	assert_null(cfg.token_file);
	write_token(path, "token-f");
	assert_int_equal(consul_cfg_reread_token(&cfg, &changed, err, sizeof(err)), 0);
	assert_string_equal(cfg.token, "flag-token");
	consul_cfg_free(&cfg);

	/* CONSUL_HTTP_TOKEN_FILE is re-read; CONSUL_HTTP_TOKEN (which wins over it) is not. */
	setenv("CONSUL_HTTP_TOKEN_FILE", path, 1);
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.token, "token-f");
	write_token(path, "token-g");
	assert_int_equal(consul_cfg_reread_token(&cfg, &changed, err, sizeof(err)), 1);
	assert_true(changed);
	assert_string_equal(cfg.token, "token-g");
	consul_cfg_free(&cfg);
	assert_null(cfg.token_file);
	setenv("CONSUL_HTTP_TOKEN", "env-token", 1);
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.token, "env-token");
	assert_null(cfg.token_file);
	assert_int_equal(consul_cfg_reread_token(&cfg, &changed, err, sizeof(err)), 0);
	assert_string_equal(cfg.token, "env-token");
	consul_cfg_free(&cfg);

	/* An empty file at start is no token (as Consul reads it), and a later token is picked up. */
	clear_env(NULL);
	write_token(path, "");
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), 0);
	assert_int_equal(consul_cfg_set_token_file(&cfg, path, err, sizeof(err)), 0);
	assert_null(cfg.token);
	write_token(path, "token-h\n");
	assert_int_equal(consul_cfg_reread_token(&cfg, &changed, err, sizeof(err)), 1);
	assert_true(changed);
	assert_string_equal(cfg.token, "token-h");
	consul_cfg_free(&cfg);
	unlink(path);
}

static void
test_flag_addr_keeps_env_ssl(void **state)
{
	struct consul_cfg cfg;
	char err[256];

	setenv("CONSUL_HTTP_SSL", "true", 1);
	assert_int_equal(consul_cfg_from_env(&cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.base_url, "https://127.0.0.1:8500");
	/* -http-addr host:port: the scheme still follows CONSUL_HTTP_SSL, as in Consul's CLI. */
	assert_int_equal(consul_cfg_set_addr(&cfg, "10.1.1.1:8501", err, sizeof(err)), 0);
	assert_string_equal(cfg.base_url, "https://10.1.1.1:8501");
	assert_int_equal(consul_cfg_set_addr(&cfg, "unix:///tmp/a.sock", err, sizeof(err)), 0);
	assert_string_equal(cfg.unix_path, "/tmp/a.sock");
	assert_int_equal(consul_cfg_set_addr(&cfg, "http://x:1", err, sizeof(err)), 0);
	assert_null(cfg.unix_path);
	assert_false(cfg.ssl);
	consul_cfg_free(&cfg);
}

static void
test_urlencode(void **state)
{
	char out[32];

	assert_int_equal(consul_urlencode("web-1.svc_x~", out, sizeof(out)), 0);
	assert_string_equal(out, "web-1.svc_x~");
	assert_int_equal(consul_urlencode("a b/c?d&e=\xff", out, sizeof(out)), 0);
	assert_string_equal(out, "a%20b%2Fc%3Fd%26e%3D%FF");
	assert_int_equal(consul_urlencode("abc", out, 4), 0);
	assert_int_equal(consul_urlencode("abc", out, 3), -1);
	assert_int_equal(consul_urlencode("/", out, 3), -1);
	assert_int_equal(consul_urlencode("", out, 1), 0);
	assert_string_equal(out, "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_defaults, clear_env),
		cmocka_unit_test_setup(test_addresses, clear_env),
		cmocka_unit_test_setup(test_bad_values, clear_env),
		cmocka_unit_test_setup(test_tls_files, clear_env),
		cmocka_unit_test_setup(test_token_order, clear_env),
		cmocka_unit_test_setup(test_token_reread, clear_env),
		cmocka_unit_test_setup(test_flag_addr_keeps_env_ssl, clear_env),
		cmocka_unit_test(test_urlencode),
	};

	return cmocka_run_group_tests_name("lib_consul_cfg", tests, NULL, NULL);
}
