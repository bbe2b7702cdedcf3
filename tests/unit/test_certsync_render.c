/*
 * Unit tests of certsync/render.c with the real templates of haproxy-templates/: render with sample
 * inputs, write the files beside real certificates (an EC P-256 CA and leaf made with the openssl CLI)
 * and ask the real HAProxy (`haproxy -c`) whether the configuration is valid, for protocol tcp and
 * http with zero and three upstreams. Also every refused input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "render.h"

#ifndef TOP_SRCDIR
#define TOP_SRCDIR "."
#endif

static char dir[256];
static char err[512];
static char leaf[320], ca[320], spoe[320], sock[320];
static struct render_templates tmpl;

static int
run(const char *cmd)
{
	int st = system(cmd);

	return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

static int
setup(void **state)
{
	char cmd[2048];

	snprintf(dir, sizeof(dir), "/tmp/hc-render-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(cmd, sizeof(cmd),
	    "cd %s && "
	    "openssl ecparam -name prime256v1 -genkey -noout -out ca.key && "
	    "openssl req -x509 -new -key ca.key -sha256 -days 7 -subj '/CN=Consul CA 7' "
	    "  -addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign,cRLSign "
	    "  -addext subjectAltName=URI:spiffe://1111-2222.consul -out ca.pem && "
	    "openssl ecparam -name prime256v1 -genkey -noout -out leaf.key && "
	    "openssl req -new -key leaf.key -subj /CN=web -out leaf.csr && "
	    "printf 'basicConstraints=critical,CA:false\\nextendedKeyUsage=clientAuth,serverAuth\\n"
	    "subjectAltName=URI:spiffe://1111-2222.consul/ns/default/dc/dc1/svc/web\\n' > leaf.ext && "
	    "openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3 -sha256 "
	    "  -extfile leaf.ext -out leaf.crt && cat leaf.crt leaf.key > leaf.pem",
	    dir);
	if (run(cmd) != 0)
		return -1;
	snprintf(leaf, sizeof(leaf), "%s/leaf.pem", dir);
	snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
	snprintf(spoe, sizeof(spoe), "%s/spoe.conf", dir);
	snprintf(sock, sizeof(sock), "%s/haproxy.sock", dir);
	if (render_load_templates(TOP_SRCDIR "/haproxy-templates", &tmpl, err, sizeof(err)) == -1) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	return 0;
}

static int
teardown(void **state)
{
	char cmd[512];

	render_templates_free(&tmpl);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	run(cmd);
	return 0;
}

static void
sample_cfg(struct proxy_cfg *c, bool http, size_t nup)
{
	static struct upstream_cfg ups[3];

	memset(c, 0, sizeof(*c));
	c->proxy_id = (char *)"web-sidecar-proxy";
	c->target_service_id = (char *)"web";
	c->target_service_name = (char *)"web";
	c->content_hash = (char *)"";
	c->bind_address = (char *)"127.0.0.1";
	c->bind_port = 21000;
	c->local_service_host = (char *)"::1";
	c->local_service_port = 8080;
	c->local_connect_timeout_ms = 1000;
	c->handshake_timeout_ms = 10000;
	c->protocol_http = http;
	ups[0] = (struct upstream_cfg){ DEST_SERVICE, (char *)"db", (char *)"default", (char *)"",
	    (char *)"127.0.0.1", 9191, 10000 };
	ups[1] = (struct upstream_cfg){ DEST_SERVICE, (char *)"redis", (char *)"default", (char *)"dc2",
	    (char *)"::1", 9192, 2500 };
	ups[2] = (struct upstream_cfg){ DEST_PREPARED_QUERY, (char *)"geo-cache", (char *)"default", (char *)"",
	    (char *)"127.0.0.2", 9193, 10000 };
	c->upstreams = nup > 0 ? ups : NULL;
	c->nupstreams = nup;
}

/* db: slots 1 and 3 of 4 filled (out of order), redis: one IPv6 instance in slot 8 of 8, geo-cache: none. */
static const struct render_server sample_db[2] = {
	{ 2, "10.0.0.3", 20001 },
	{ 0, "10.0.0.1", 21000 },
};
static const struct render_server sample_redis[1] = {
	{ 7, "fd00::7", 21000 },
};

static const struct render_upstream sample_ru[3] = {
	{ "db_0", 4, "db", sample_db, 2 },
	{ "redis.dc2_1", 8, "redis", sample_redis, 1 },
	{ "pq_geo-cache_2", 4, "geo-cache-v2", NULL, 0 },
};

static void
sample_input(struct render_input *in, const struct proxy_cfg *c)
{
	memset(in, 0, sizeof(*in));
	in->cfg = c;
	in->data_dir = dir;
	in->leaf_pem = leaf;
	in->ca_pem = ca;
	in->spoe_conf_path = spoe;
	in->spoa_addr = "127.0.0.1:12345";
	in->runtime_sock = sock;
	in->upstreams = sample_ru;
	in->stats_addr = NULL;
	in->nbthread = 2;
	in->log_level = LL_INFO;
}

static void
write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Renders, writes haproxy.cfg and spoe.conf into the temp dir, runs haproxy -c; returns the config. */
static char *
render_and_check(const struct render_input *in)
{
	struct render_output out;
	char cfgpath[320], cmd[1024];
	char *cfg;

	if (render_files(&tmpl, in, &out, err, sizeof(err)) == -1)
		fail_msg("render: %s", err);
	assert_int_equal(strlen(out.haproxy_cfg), out.haproxy_cfg_len);
	assert_int_equal(strlen(out.spoe_conf), out.spoe_conf_len);
	snprintf(cfgpath, sizeof(cfgpath), "%s/haproxy.cfg", dir);
	write_file(cfgpath, out.haproxy_cfg, out.haproxy_cfg_len);
	write_file(spoe, out.spoe_conf, out.spoe_conf_len);
	snprintf(cmd, sizeof(cmd), "haproxy -c -f %s > %s/check.out 2>&1", cfgpath, dir);
	if (run(cmd) != 0) {
		snprintf(cmd, sizeof(cmd), "cat -n %s; cat %s/check.out", cfgpath, dir);
		run(cmd);
		fail_msg("haproxy -c refused the rendered configuration");
	}
	snprintf(cmd, sizeof(cmd), "grep -q 'Configuration file is valid' %s/check.out", dir);
	assert_int_equal(run(cmd), 0);
	/* Also check that spoe.conf is what haproxy.cfg names and targets this service. */
	assert_non_null(strstr(out.spoe_conf, "[connect-intentions]\n"));
	assert_non_null(strstr(out.spoe_conf, "args cert=ssl_c_der target=str(web)\n"));
	assert_non_null(strstr(out.spoe_conf, "option set-on-error err\n"));
	cfg = out.haproxy_cfg;
	free(out.spoe_conf);
	return cfg;
}

static void
has(const char *cfg, const char *line)
{
	if (strstr(cfg, line) == NULL)
		fail_msg("missing from the rendered config: %s", line);
}

static void
hasnt(const char *cfg, const char *line)
{
	if (strstr(cfg, line) != NULL)
		fail_msg("unexpected in the rendered config: %s", line);
}

static void
common_checks(const char *cfg)
{
	char line[1024];

	snprintf(line, sizeof(line), "    stats socket %s mode 600 level admin expose-fd listeners\n", sock);
	has(cfg, line);
	has(cfg, "    log stderr format raw local0 info\n");
	has(cfg, "    nbthread 2\n");
	snprintf(line, sizeof(line), "    bind 127.0.0.1:21000 ssl crt %s ca-file %s verify required\n", leaf, ca);
	has(cfg, line);
	snprintf(line, sizeof(line), "    filter spoe engine connect-intentions config %s\n", spoe);
	has(cfg, line);
	has(cfg, "    tcp-request content reject if { var(txn.connect.err) -m found }\n"
	    "    tcp-request content reject unless { var(sess.connect.auth) -m int eq 1 }\n");
	has(cfg, "    timeout client 10000\n");
	has(cfg, "    timeout connect 1000\n    server app [::1]:8080\n");
	has(cfg, "backend spoa\n    mode tcp\n");
	has(cfg, "    option spop-check\n    server spoa 127.0.0.1:12345 check inter 2s\n");
	/* No template syntax left over, no blank-line pile-ups from blocks. */
	hasnt(cfg, "{{");
	hasnt(cfg, "}}");
	hasnt(cfg, "\n\n\n");
}

static void
test_tcp_no_upstreams(void **state)
{
	struct render_input in;
	struct proxy_cfg c;
	char *cfg;

	sample_cfg(&c, false, 0);
	sample_input(&in, &c);
	in.upstreams = NULL;
	cfg = render_and_check(&in);
	common_checks(cfg);
	has(cfg, "frontend inbound\n");
	has(cfg, "    mode tcp\n    log-format");
	hasnt(cfg, "mode http");
	hasnt(cfg, "server-template");
	hasnt(cfg, "frontend stats");
	free(cfg);
}

static void
test_tcp_three_upstreams(void **state)
{
	struct render_input in;
	struct proxy_cfg c;
	char *cfg, line[4096];

	sample_cfg(&c, false, 3);
	sample_input(&in, &c);
	in.stats_addr = "127.0.0.1:19100";
	in.log_level = LL_DEBUG;
	cfg = render_and_check(&in);
	has(cfg, "    log stderr format raw local0 debug\n");
	has(cfg, "frontend up_db_0\n    bind 127.0.0.1:9191\n    mode tcp\n    default_backend db_0\n");
	has(cfg, "frontend up_redis.dc2_1\n    bind [::1]:9192\n");
	has(cfg, "frontend up_pq_geo-cache_2\n    bind 127.0.0.2:9193\n");
	has(cfg, "backend db_0\n    mode tcp\n    balance leastconn\n    timeout connect 10000\n");
	/* Known instances are enabled at their address, every other slot disabled; names slot1..slotN. */
	snprintf(line, sizeof(line), "    option redispatch 1\n"
	    "    server slot1 10.0.0.1:21000 ssl crt %s ca-file %s verify required verifyhost db\n"
	    "    server slot2 0.0.0.0:0 disabled ssl crt %s ca-file %s verify required verifyhost db\n"
	    "    server slot3 10.0.0.3:20001 ssl crt %s ca-file %s verify required verifyhost db\n"
	    "    server slot4 0.0.0.0:0 disabled ssl crt %s ca-file %s verify required verifyhost db\n\n",
	    leaf, ca, leaf, ca, leaf, ca, leaf, ca);
	has(cfg, line);
	has(cfg, "# 4 server slots, 2 holding the instances known when this file was written");
	snprintf(line, sizeof(line), "    server slot7 0.0.0.0:0 disabled ssl crt %s ca-file %s "
	    "verify required verifyhost redis\n"
	    "    server slot8 [fd00::7]:21000 ssl crt %s ca-file %s verify required verifyhost redis\n\n",
	    leaf, ca, leaf, ca);
	has(cfg, line);
	snprintf(line, sizeof(line), "    server slot4 0.0.0.0:0 disabled ssl crt %s ca-file %s "
	    "verify required verifyhost geo-cache-v2\n\n", leaf, ca);
	has(cfg, line);
	hasnt(cfg, "server-template");
	hasnt(cfg, "slot5 0.0.0.0:0 disabled ssl crt /tmp/hc-render-XXXXXX");
	hasnt(cfg, "verifyhost db\n    server slot5");
	has(cfg, "    timeout connect 2500\n");
	has(cfg, "verify required verifyhost geo-cache-v2\n");
	has(cfg, "# ---- upstream prepared_query geo-cache (127.0.0.2:9193) ----\n");
	has(cfg, "frontend stats\n    mode http\n    bind 127.0.0.1:19100\n");
	has(cfg, "    http-request use-service prometheus-exporter if { path /metrics }\n");
	free(cfg);
}

static void
test_http_no_upstreams(void **state)
{
	struct render_input in;
	struct proxy_cfg c;
	char *cfg;

	sample_cfg(&c, true, 0);
	sample_input(&in, &c);
	in.spoa_addr = "unix@/run/hc/spoa.sock";
	cfg = render_and_check(&in);
	has(cfg, "    server spoa unix@/run/hc/spoa.sock check inter 2s\n");
	has(cfg, "    mode http\n    option httplog\n");
	has(cfg, "source=%[var(sess.connect.source_app)]");
	has(cfg, "    http-request del-header X-Connect-Source\n"
	    "    http-request set-header X-Connect-Source %[var(sess.connect.source_app)]\n"
	    "    option forwardfor\n");
	has(cfg, "backend local_app\n    mode http\n");
	free(cfg);
}

static void
test_http_three_upstreams(void **state)
{
	struct render_input in;
	struct proxy_cfg c;
	char *cfg;

	sample_cfg(&c, true, 3);
	c.bind_address = (char *)"::";
	sample_input(&in, &c);
	in.stats_addr = "[::1]:19101";
	in.nbthread = 1;
	in.log_level = LL_WARN;
	cfg = render_and_check(&in);
	has(cfg, "    log stderr format raw local0 warning\n");
	has(cfg, "    nbthread 1\n");
	has(cfg, "    bind [::]:21000 ssl crt ");
	has(cfg, "    mode http\n    option httplog\n");
	has(cfg, "    http-request deny unless { var(sess.connect.auth) -m int eq 1 }\n");
	has(cfg, "frontend up_redis.dc2_1\n    bind [::1]:9192\n    mode tcp\n");
	has(cfg, "    bind [::1]:19101\n");
	hasnt(cfg, "{{");
	hasnt(cfg, "\n\n\n");
	free(cfg);
}

/* The largest backend: RENDER_SLOTS_MAX slots, every one filled, one server line each, within the cap. */
static void
test_max_slots(void **state)
{
	struct render_server *sv;
	struct render_upstream ru[1];
	struct render_output out;
	struct render_input in;
	struct proxy_cfg c;
	char (*addrs)[32], line[512];
	unsigned k;

	sample_cfg(&c, false, 1);
	sample_input(&in, &c);
	sv = calloc(RENDER_SLOTS_MAX, sizeof(*sv));
	addrs = calloc(RENDER_SLOTS_MAX, sizeof(*addrs));
	assert_non_null(sv);
	assert_non_null(addrs);
	for (k = 0; k < RENDER_SLOTS_MAX; k++) {
		snprintf(addrs[k], sizeof(addrs[k]), "10.1.%u.%u", k / 256, k % 256);
		sv[k] = (struct render_server){ RENDER_SLOTS_MAX - 1 - k, addrs[k], 20000 };
	}
	ru[0] = (struct render_upstream){ "db_0", RENDER_SLOTS_MAX, "db", sv, RENDER_SLOTS_MAX };
	in.upstreams = ru;
	if (render_files(&tmpl, &in, &out, err, sizeof(err)) == -1)
		fail_msg("render: %s", err);
	snprintf(line, sizeof(line), "    server slot1 10.1.15.255:20000 ssl crt %s ", leaf);
	has(out.haproxy_cfg, line);
	snprintf(line, sizeof(line), "    server slot%d 10.1.0.0:20000 ssl crt %s ", RENDER_SLOTS_MAX, leaf);
	has(out.haproxy_cfg, line);
	hasnt(out.haproxy_cfg, " disabled ");
	assert_true(out.haproxy_cfg_len < RENDER_OUTPUT_MAX / 4);
	render_output_free(&out);
	free(sv);
	free(addrs);
}

static void
expect_refused(const struct render_input *in, const char *want)
{
	struct render_output out;

	assert_int_equal(render_files(&tmpl, in, &out, err, sizeof(err)), -1);
	assert_null(out.haproxy_cfg);
	assert_null(out.spoe_conf);
	assert_string_equal(err, want);
}

/* Filled slots that could not be rendered safely: each refused, nothing written. */
static void
expect_servers_refused(struct render_input *in, struct render_upstream *ru)
{
	struct render_server sv[5];
	char want[256];

	memcpy(sv, sample_db, sizeof(sample_db));
	ru[0].servers = sv;
	ru[0].nservers = 2;
	sv[1].slot = 4;
	expect_refused(in, "upstream db_0: server slot 4 is out of range (0..3)");
	sv[1].slot = 2;
	expect_refused(in, "upstream db_0: server slot 2 is filled twice");
	sv[1].slot = 0;
	sv[1].addr = "db.service.consul";
	expect_refused(in, "upstream db_0: server slot 0: \"db.service.consul\" is not a numeric IP address");
	sv[1].addr = "10.0.0.1 backup";
	expect_refused(in, "upstream db_0: server slot 0: \"10.0.0.1 backup\" is not a numeric IP address");
	sv[1].addr = "[::1]";
	expect_refused(in, "upstream db_0: server slot 0: \"[::1]\" is not a numeric IP address");
	sv[1].addr = NULL;
	expect_refused(in, "upstream db_0: server slot 0: \"(null)\" is not a numeric IP address");
	sv[1].addr = "10.0.0.1";
	sv[1].port = 0;
	expect_refused(in, "upstream db_0: server slot 0: 0 is not a port");
	sv[1].port = 65536;
	expect_refused(in, "upstream db_0: server slot 0: 65536 is not a port");
	sv[1].port = 21000;
	ru[0].nservers = 5;
	snprintf(want, sizeof(want), "upstream db_0: 5 servers for 4 slots");
	expect_refused(in, want);
	ru[0].servers = NULL;
	ru[0].nservers = 1;
	expect_refused(in, "upstream db_0: 1 servers announced but none given");
	ru[0].servers = sample_db;
	ru[0].nservers = 2;
}

static void
test_refused_inputs(void **state)
{
	struct render_upstream ru[3];
	struct render_input in;
	struct proxy_cfg c;

	sample_cfg(&c, false, 3);
	sample_input(&in, &c);
	memcpy(ru, sample_ru, sizeof(ru));
	in.upstreams = ru;

	in.leaf_pem = "/tmp/a b.pem";
	expect_refused(&in, "leaf_pem: \"/tmp/a b.pem\" has a character HAProxy's configuration cannot hold "
	    "as is (blank, quote, '#', '\\', '$' or control)");
	in.leaf_pem = "leaf.pem";
	expect_refused(&in, "leaf_pem: \"leaf.pem\" is not an absolute path");
	in.leaf_pem = leaf;
	in.runtime_sock = "/tmp/x\n    stats socket /tmp/evil level admin";
	expect_refused(&in, "runtime_sock: \"/tmp/x\n    stats socket /tmp/evil level admin\" has a character "
	    "HAProxy's configuration cannot hold as is (blank, quote, '#', '\\', '$' or control)");
	in.runtime_sock = sock;
	in.spoa_addr = "127.0.0.1";
	expect_refused(&in, "spoa_addr: \"127.0.0.1\" is not host:port");
	in.spoa_addr = "127.0.0.1:0";
	expect_refused(&in, "spoa_addr: \"127.0.0.1:0\" is not host:port");
	in.spoa_addr = "127.0.0.1:1 weight 0";
	expect_refused(&in, "spoa_addr: \"127.0.0.1:1 weight 0\" is not host:port");
	in.spoa_addr = "unix@relative";
	expect_refused(&in, "spoa_addr: \"relative\" is not an absolute path");
	in.spoa_addr = "127.0.0.1:12345";
	in.stats_addr = "*:80";
	expect_refused(&in, "stats_addr: \"*\" is not an IP address or host name");
	in.stats_addr = NULL;
	in.nbthread = 0;
	expect_refused(&in, "nbthread: 0 is out of range (1..64)");
	in.nbthread = 2;
	ru[1].backend_name = "db_0";
	expect_refused(&in, "upstream 1 backend name: \"db_0\" is used twice");
	ru[1].backend_name = "spoa";
	expect_refused(&in, "upstream 1 backend name: \"spoa\" is reserved");
	ru[1].backend_name = "a b";
	expect_refused(&in, "upstream 1 backend name: \"a b\" has a character other than letters, digits, '.', "
	    "'_', '-'");
	ru[1].backend_name = sample_ru[1].backend_name;
	ru[2].slots = 0;
	expect_refused(&in, "upstream pq_geo-cache_2: 0 slots is out of range (1..4096)");
	ru[2].slots = 4;
	ru[0].server_identity = "db verify none";
	expect_refused(&in, "upstream db_0 server identity: \"db verify none\" has a character other than "
	    "letters, digits, '.', '_', '-'");
	ru[0].server_identity = "db";
	expect_servers_refused(&in, ru);
	c.target_service_name = (char *)"web)\n";
	expect_refused(&in, "service name: \"web)\n\" has a character other than letters, digits, '.', '_', '-'");
	c.target_service_name = (char *)"web";
	c.bind_port = 0;
	expect_refused(&in, "bind port: 0 is not a port");
	c.bind_port = 21000;
	c.handshake_timeout_ms = 0;
	expect_refused(&in, "handshake_timeout_ms: 0 ms is out of range (1..86400000)");
	c.handshake_timeout_ms = 10000;
	in.upstreams = NULL;
	expect_refused(&in, "upstreams: 3 configured but none given");
	in.upstreams = ru;
	in.cfg = NULL;
	expect_refused(&in, "no proxy configuration");
}

static void
test_template_errors_and_loading(void **state)
{
	struct render_templates t = { 0 };
	struct render_output out;
	struct render_input in;
	struct proxy_cfg c;
	char path[400], *big;

	sample_cfg(&c, false, 0);
	sample_input(&in, &c);
	t.haproxy_cfg = (char *)"global\n  nbthread {{nbthreads}}\n";
	t.haproxy_cfg_len = strlen(t.haproxy_cfg);
	t.spoe_conf = (char *)"";
	assert_int_equal(render_files(&t, &in, &out, err, sizeof(err)), -1);
	assert_string_equal(err, "haproxy.cfg.tmpl:2:12: unknown variable 'nbthreads'");
	t.haproxy_cfg = (char *)"ok\n";
	t.haproxy_cfg_len = 3;
	t.spoe_conf = (char *)"{{#each upstreams as u}}";
	t.spoe_conf_len = strlen(t.spoe_conf);
	assert_int_equal(render_files(&t, &in, &out, err, sizeof(err)), -1);
	assert_string_equal(err, "spoe.conf.tmpl:1:1: unterminated #each block");

	/* Loading: a missing directory, then a template over the size cap. */
	assert_int_equal(render_load_templates("/nonexistent-dir", &t, err, sizeof(err)), -1);
	assert_string_equal(err, "/nonexistent-dir/haproxy.cfg.tmpl: No such file or directory");
	snprintf(path, sizeof(path), "%s/haproxy.cfg.tmpl", dir);
	big = calloc(1, RENDER_TEMPLATE_MAX + 1);
	assert_non_null(big);
	memset(big, '#', RENDER_TEMPLATE_MAX + 1);
	write_file(path, big, RENDER_TEMPLATE_MAX + 1);
	assert_int_equal(render_load_templates(dir, &t, err, sizeof(err)), -1);
	snprintf(path, sizeof(path), "%s/haproxy.cfg.tmpl: larger than %d bytes", dir, RENDER_TEMPLATE_MAX);
	assert_string_equal(err, path);
	/* Exactly at the cap is fine; spoe.conf.tmpl is then missing. */
	snprintf(path, sizeof(path), "%s/haproxy.cfg.tmpl", dir);
	write_file(path, big, RENDER_TEMPLATE_MAX);
	assert_int_equal(render_load_templates(dir, &t, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "spoe.conf.tmpl: No such file or directory"));
	snprintf(path, sizeof(path), "%s/spoe.conf.tmpl", dir);
	write_file(path, "x", 1);
	assert_int_equal(render_load_templates(dir, &t, err, sizeof(err)), 0);
	assert_int_equal(t.haproxy_cfg_len, RENDER_TEMPLATE_MAX);
	assert_int_equal(t.spoe_conf_len, 1);
	render_templates_free(&t);
	free(big);
	/* render_from_dir with the real templates. */
	assert_int_equal(render_from_dir(TOP_SRCDIR "/haproxy-templates", &in, &out, err, sizeof(err)), 0);
	assert_non_null(strstr(out.haproxy_cfg, "frontend inbound\n"));
	render_output_free(&out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tcp_no_upstreams),
		cmocka_unit_test(test_tcp_three_upstreams),
		cmocka_unit_test(test_http_no_upstreams),
		cmocka_unit_test(test_http_three_upstreams),
		cmocka_unit_test(test_max_slots),
		cmocka_unit_test(test_refused_inputs),
		cmocka_unit_test(test_template_errors_and_loading),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
