/* Unit tests of certsync/proxycfg.c: the managed (1.2, 1.3+) and unmanaged (1.2, 1.3+) shapes of Consul. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proxycfg.h"

static char err[512];

/* Test JSON is written with single quotes for readability: turn them into double quotes. */
static char *
J(const char *s)
{
	char *o = strdup(s), *p;

	assert_non_null(o);
	for (p = o; *p != '\0'; p++)
		if (*p == '\'')
			*p = '"';
	return o;
}

static int
managed(const char *sq, struct proxy_cfg *c, struct proxycfg_warnings *w)
{
	char *j = J(sq);
	int rc;

	err[0] = '\0';
	rc = proxycfg_from_managed(j, strlen(j), c, w, err, sizeof(err));
	free(j);
	return rc;
}

static int
service(const char *sq, const char *services_sq, struct proxy_cfg *c, struct proxycfg_warnings *w)
{
	char *j = J(sq), *s = services_sq != NULL ? J(services_sq) : NULL;
	int rc;

	err[0] = '\0';
	rc = proxycfg_from_service(j, strlen(j), s, s != NULL ? strlen(s) : 0, c, w, err, sizeof(err));
	free(j);
	free(s);
	return rc;
}

static void
expect_managed_err(const char *sq, const char *want)
{
	struct proxycfg_warnings w = { 0 };
	struct proxy_cfg c;

	if (managed(sq, &c, &w) == 0)
		fail_msg("accepted: %s", sq);
	assert_string_equal(err, want);
	proxycfg_warnings_free(&w);
}

#define HEAD "'ProxyServiceID':'web-proxy','TargetServiceID':'web','TargetServiceName':'web',"	\
	"'ContentHash':'cffa5f4635b134b9','ExecMode':'daemon','Command':['/bin/x'],"

/* The minimal definition ("connect": {"proxy": {}}): the agent fills bind and local service defaults. */
static void
test_managed_minimal(void **state)
{
	struct proxycfg_warnings w = { 0 };
	struct proxy_cfg c;

	assert_int_equal(managed("{" HEAD "'Config':{'bind_address':'127.0.0.1','bind_port':20199,"
	    "'local_service_address':'127.0.0.1:8181'}}", &c, &w), 0);
	assert_string_equal(c.proxy_id, "web-proxy");
	assert_string_equal(c.target_service_id, "web");
	assert_string_equal(c.target_service_name, "web");
	assert_string_equal(c.content_hash, "cffa5f4635b134b9");
	assert_string_equal(c.bind_address, "127.0.0.1");
	assert_int_equal(c.bind_port, 20199);
	assert_string_equal(c.local_service_host, "127.0.0.1");
	assert_int_equal(c.local_service_port, 8181);
	assert_int_equal(c.local_connect_timeout_ms, 1000);
	assert_int_equal(c.handshake_timeout_ms, 10000);
	assert_false(c.protocol_http);
	assert_int_equal(c.nupstreams, 0);
	assert_int_equal(w.n, 0);
	proxycfg_free(&c);

	/* No bind_address at all: 0.0.0.0. */
	assert_int_equal(managed("{" HEAD "'Config':{'bind_port':20000,'local_service_address':':8080'}}",
	    &c, &w), 0);
	assert_string_equal(c.bind_address, "0.0.0.0");
	assert_string_equal(c.local_service_host, "127.0.0.1");
	assert_int_equal(c.local_service_port, 8080);
	proxycfg_free(&c);
}

/* 1.3+: the docs' example with top-level Upstreams (db service and a prepared query). */
static void
test_managed_13_upstreams(void **state)
{
	struct proxycfg_warnings w = { 0 };
	struct proxy_cfg c;

	assert_int_equal(managed("{" HEAD "'Config':{'bind_address':'0.0.0.0','bind_port':20199,"
	    "'local_service_address':'[::1]:8181','protocol':'http','local_connect_timeout_ms':'250',"
	    "'handshake_timeout_ms':5000},"
	    "'Upstreams':[{'DestinationType':'service','DestinationName':'db','LocalBindPort':1234,"
	    "'Config':{'connect_timeout_ms':1000}},"
	    "{'DestinationType':'prepared_query','DestinationNamespace':'','DestinationName':'geo-cache',"
	    "'Datacenter':'dc2','LocalBindAddress':'127.0.0.2','LocalBindPort':'1235','Config':null}]}",
	    &c, &w), 0);
	assert_string_equal(c.local_service_host, "::1");
	assert_int_equal(c.local_service_port, 8181);
	assert_true(c.protocol_http);
	assert_int_equal(c.local_connect_timeout_ms, 250);
	assert_int_equal(c.handshake_timeout_ms, 5000);
	assert_int_equal(c.nupstreams, 2);
	assert_int_equal(c.upstreams[0].dest_type, DEST_SERVICE);
	assert_string_equal(c.upstreams[0].dest_name, "db");
	assert_string_equal(c.upstreams[0].dest_namespace, "default");
	assert_string_equal(c.upstreams[0].datacenter, "");
	assert_string_equal(c.upstreams[0].local_bind_address, "127.0.0.1");
	assert_int_equal(c.upstreams[0].local_bind_port, 1234);
	assert_int_equal(c.upstreams[0].connect_timeout_ms, 1000);
	assert_int_equal(c.upstreams[1].dest_type, DEST_PREPARED_QUERY);
	assert_string_equal(c.upstreams[1].dest_name, "geo-cache");
	assert_string_equal(c.upstreams[1].datacenter, "dc2");
	assert_string_equal(c.upstreams[1].local_bind_address, "127.0.0.2");
	assert_int_equal(c.upstreams[1].local_bind_port, 1235);
	assert_int_equal(c.upstreams[1].connect_timeout_ms, 10000);
	assert_int_equal(w.n, 0);
	proxycfg_free(&c);
}

/* 1.2: Config.upstreams snake_case, the docs' web/redis example, Go's float form of numbers. */
static void
test_managed_12_upstreams(void **state)
{
	struct proxycfg_warnings w = { 0 };
	struct proxy_cfg c;

	assert_int_equal(managed("{" HEAD "'Config':{'bind_address':'10.0.0.1','bind_port':2.0199e+04,"
	    "'local_service_address':'127.0.0.1:8080',"
	    "'upstreams':[{'destination_name':'redis','local_bind_port':1234},"
	    "{'destination_type':'prepared_query','destination_name':'web','destination_datacenter':'dc2',"
	    "'local_bind_address':'0.0.0.0','local_bind_port':1235,'connect_timeout_ms':'2500'}]}}", &c, &w), 0);
	assert_string_equal(c.bind_address, "10.0.0.1");
	assert_int_equal(c.bind_port, 20199);
	assert_int_equal(c.nupstreams, 2);
	assert_string_equal(c.upstreams[0].dest_name, "redis");
	assert_int_equal(c.upstreams[0].dest_type, DEST_SERVICE);
	assert_string_equal(c.upstreams[0].local_bind_address, "127.0.0.1");
	assert_int_equal(c.upstreams[0].connect_timeout_ms, 10000);
	assert_int_equal(c.upstreams[1].dest_type, DEST_PREPARED_QUERY);
	assert_string_equal(c.upstreams[1].datacenter, "dc2");
	assert_string_equal(c.upstreams[1].local_bind_address, "0.0.0.0");
	assert_int_equal(c.upstreams[1].connect_timeout_ms, 2500);
	proxycfg_free(&c);

	/* An agent reporting the same upstream in both forms: one listener, not a duplicate error. */
	assert_int_equal(managed("{" HEAD "'Config':{'bind_port':20199,'local_service_address':'127.0.0.1:80',"
	    "'upstreams':[{'destination_name':'db','local_bind_port':1234,'connect_timeout_ms':1000}]},"
	    "'Upstreams':[{'DestinationName':'db','LocalBindPort':1234,'Config':{'connect_timeout_ms':1000}}]}",
	    &c, &w), 0);
	assert_int_equal(c.nupstreams, 1);
	proxycfg_free(&c);
	proxycfg_warnings_free(&w);
}

static void
test_unknown_keys_warned(void **state)
{
	struct proxycfg_warnings w = { 0 };
	struct proxy_cfg c;

	assert_int_equal(managed("{" HEAD "'Config':{'bind_port':20199,'local_service_address':'127.0.0.1:80',"
	    "'telemetry':{'statsd_address':'x'},'envoy_foo':1,"
	    "'upstreams':[{'destination_name':'a','local_bind_port':1,'weird':true}]},"
	    "'Upstreams':[{'DestinationName':'b','LocalBindPort':2,'Config':{'protocol':'http'},"
	    "'MeshGateway':{},'Surprise':1}]}", &c, &w), 0);
	assert_int_equal(w.n, 5);
	assert_string_equal(w.msgs[0], "Upstreams[0].Surprise: unknown key, ignored");
	assert_string_equal(w.msgs[1], "Upstreams[0].Config.protocol: unknown key, ignored");
	assert_string_equal(w.msgs[2], "Config.telemetry: unknown key, ignored");
	assert_string_equal(w.msgs[3], "Config.envoy_foo: unknown key, ignored");
	assert_string_equal(w.msgs[4], "Config.upstreams[0].weird: unknown key, ignored");
	proxycfg_free(&c);
	/* The same warnings again are not repeated. */
	assert_int_equal(managed("{" HEAD "'Config':{'bind_port':20199,'local_service_address':'127.0.0.1:80',"
	    "'envoy_foo':1}}", &c, &w), 0);
	assert_int_equal(w.n, 5);
	proxycfg_free(&c);
	proxycfg_warnings_free(&w);
}

#define CFG(x) "{" HEAD "'Config':{'bind_port':20199,'local_service_address':'127.0.0.1:80'," x "}}"
#define UP(x) "{" HEAD "'Config':{'bind_port':20199,'local_service_address':'127.0.0.1:80'},"	\
	"'Upstreams':[" x "]}"

static void
test_invalid_values(void **state)
{
	expect_managed_err("{" HEAD "'Config':{'bind_port':70000,'local_service_address':'127.0.0.1:80'}}",
	    "Config.bind_port: 70000 is not a port");
	expect_managed_err("{" HEAD "'Config':{'bind_port':0,'local_service_address':'127.0.0.1:80'}}",
	    "Config.bind_port: 0 is not a port");
	expect_managed_err("{" HEAD "'Config':{'bind_port':'80a','local_service_address':'127.0.0.1:80'}}",
	    "Config.bind_port: \"80a\" is not a port");
	expect_managed_err("{" HEAD "'Config':{'bind_port':-1,'local_service_address':'127.0.0.1:80'}}",
	    "Config.bind_port: -1 is not a port");
	expect_managed_err("{" HEAD "'Config':{'bind_port':80.5,'local_service_address':'127.0.0.1:80'}}",
	    "Config.bind_port: 80.5 is not a port");
	expect_managed_err("{" HEAD "'Config':{'bind_port':true,'local_service_address':'127.0.0.1:80'}}",
	    "Config.bind_port: true is not a port");
	expect_managed_err("{" HEAD "'Config':{'bind_port':1e300,'local_service_address':'127.0.0.1:80'}}",
	    "Config.bind_port: 1e+300 is not a port");
	expect_managed_err("{" HEAD "'Config':{'local_service_address':'127.0.0.1:80'}}",
	    "Config.bind_port: missing");
	expect_managed_err("{" HEAD "'Config':{'bind_port':1}}", "Config.local_service_address: missing");
	expect_managed_err(CFG("'bind_address':'0.0.0.0 ssl crt /x'"),
	    "Config.bind_address: \"0.0.0.0 ssl crt /x\" is not an IP address or host name");
	expect_managed_err("{" HEAD "'Config':{'bind_port':1,'local_service_address':'127.0.0.1'}}",
	    "Config.local_service_address: \"127.0.0.1\" is not host:port");
	expect_managed_err("{" HEAD "'Config':{'bind_port':1,'local_service_address':'::1:80'}}",
	    "Config.local_service_address: \"::1:80\" is not host:port");
	expect_managed_err("{" HEAD "'Config':{'bind_port':1,'local_service_address':'127.0.0.1:99999'}}",
	    "Config.local_service_address: \"127.0.0.1:99999\" is not host:port");
	expect_managed_err(CFG("'protocol':'grpc'"), "Config.protocol: \"grpc\" is not a protocol (tcp, http)");
	expect_managed_err(CFG("'protocol':7"), "Config.protocol: 7 is not a string");
	expect_managed_err(CFG("'local_connect_timeout_ms':-5"),
	    "Config.local_connect_timeout_ms: -5 is out of range (0..86400000 ms)");
	expect_managed_err(CFG("'handshake_timeout_ms':'1s'"),
	    "Config.handshake_timeout_ms: \"1s\" is not a timeout in milliseconds");
	expect_managed_err(CFG("'upstreams':{}"), "Config.upstreams: not an array");
	expect_managed_err(UP("{'DestinationName':'db'}"), "Upstreams[0].LocalBindPort: missing");
	expect_managed_err(UP("{'LocalBindPort':1}"), "Upstreams[0].DestinationName: missing");
	expect_managed_err(UP("{'DestinationName':'db','LocalBindPort':1,'DestinationType':'dns'}"),
	    "Upstreams[0].DestinationType: \"dns\" is not a destination type (service, prepared_query)");
	expect_managed_err(UP("{'DestinationName':'db db','LocalBindPort':1}"),
	    "Upstreams[0].DestinationName: \"db db\" is not a valid name (letters, digits, '.', '_', '-')");
	expect_managed_err(UP("{'DestinationName':'db','LocalBindPort':1,'Config':{'connect_timeout_ms':1e12}}"),
	    "Upstreams[0].Config.connect_timeout_ms: 1e+12 is out of range (0..86400000 ms)");
	expect_managed_err(UP("{'DestinationName':'db','LocalBindPort':1},{'DestinationName':'cache','LocalBindPort':1}"),
	    "Upstreams[1]: listen address 127.0.0.1:1 is already used by the upstream db");
	expect_managed_err(UP("{'DestinationName':'db','LocalBindPort':1},"
	    "{'DestinationName':'cache','LocalBindAddress':'0.0.0.0','LocalBindPort':1}"),
	    "Upstreams[1]: listen address 0.0.0.0:1 is already used by the upstream db");
	expect_managed_err(UP("{'DestinationName':'db','LocalBindPort':20199}"),
	    "upstream db: listen address 127.0.0.1:20199 collides with the public listener 0.0.0.0:20199");
	expect_managed_err(UP("{'DestinationName':'db','LocalBindPort':1,'Config':[]}"),
	    "Upstreams[0].Config: not an object");
	expect_managed_err(UP("7"), "Upstreams[0]: not an object");
	expect_managed_err("{" HEAD "'Config':null}", "Config: missing");
	expect_managed_err("{'ProxyServiceID':'p','TargetServiceName':'web\\nx','Config':{}}",
	    "TargetServiceName: \"web\\x0ax\" is not a valid name (letters, digits, '.', '_', '-')");
}

static void
test_odd_json(void **state)
{
	struct proxy_cfg c;

	expect_managed_err("[]", "proxy config: not a JSON object");
	expect_managed_err("null", "proxy config: invalid JSON at 1:4: '[' or '{' expected near 'null'");
	expect_managed_err("{'ProxyServiceID':7}", "ProxyServiceID: 7 is not a string");
	expect_managed_err("{}", "ProxyServiceID: missing");
	expect_managed_err("{'ProxyServiceID':'a','ProxyServiceID':'b'}",
	    "proxy config: invalid JSON at 1:38: duplicate object key near '\"ProxyServiceID\"'");
	expect_managed_err("{" HEAD "'Config':{'bind_port':123456789012345678901234567890}}",
	    "proxy config: invalid JSON at 1:206: too big integer");
	expect_managed_err("{" HEAD "'Config':{'bind_port':'9999999999999999999999'}}",
	    "Config.bind_port: \"9999999999999999999999\" is not a port");
	expect_managed_err("{", "proxy config: invalid JSON at 1:1: string or '}' expected near end of file");
	/* NULs inside the buffer are refused by the JSON parser, not read past. */
	assert_int_equal(proxycfg_from_managed("{\"a\":\"\0\"}", 9, &c, NULL, err, sizeof(err)), -1);
	assert_int_equal(proxycfg_from_managed(NULL, 0, &c, NULL, err, sizeof(err)), -1);
}

#define SERVICES_13 "{'web':{'ID':'web','Service':'web','Port':8080,'Address':''},"			\
	"'web-sidecar-proxy':{'Kind':'connect-proxy','ID':'web-sidecar-proxy','Service':'web-sidecar-proxy',"	\
	"'Port':21000,'Address':'','Proxy':{'DestinationServiceName':'web','DestinationServiceID':'web',"	\
	"'LocalServiceAddress':'127.0.0.1','LocalServicePort':8080}}}"

static void
test_unmanaged_13(void **state)
{
	struct proxycfg_warnings w = { 0 };
	struct proxy_cfg c;

	assert_int_equal(service("{'Kind':'connect-proxy','ID':'web-sidecar-proxy','Service':'web-sidecar-proxy',"
	    "'Port':21000,'Address':'','ContentHash':'abc',"
	    "'Proxy':{'DestinationServiceName':'web','DestinationServiceID':'web','LocalServiceAddress':'127.0.0.1',"
	    "'LocalServicePort':8080,'Config':{'protocol':'http','bind_port':1,'local_connect_timeout_ms':300},"
	    "'Upstreams':[{'DestinationType':'service','DestinationName':'db','Datacenter':'',"
	    "'LocalBindAddress':'127.0.0.1','LocalBindPort':9191,'Config':{}}]}}", NULL, &c, &w), 0);
	assert_string_equal(c.proxy_id, "web-sidecar-proxy");
	assert_string_equal(c.target_service_name, "web");
	assert_string_equal(c.target_service_id, "web");
	assert_string_equal(c.content_hash, "abc");
	assert_string_equal(c.bind_address, "0.0.0.0");
	assert_int_equal(c.bind_port, 21000);
	assert_string_equal(c.local_service_host, "127.0.0.1");
	assert_int_equal(c.local_service_port, 8080);
	assert_int_equal(c.local_connect_timeout_ms, 300);
	assert_true(c.protocol_http);
	assert_int_equal(c.nupstreams, 1);
	assert_int_equal(c.upstreams[0].local_bind_port, 9191);
	assert_int_equal(w.n, 1);
	assert_string_equal(w.msgs[0], "Proxy.Config.bind_port: ignored for an unmanaged proxy (its "
	    "registration's Address, Port and Proxy.LocalService* are used)");
	proxycfg_free(&c);
	proxycfg_warnings_free(&w);

	/* Registered Address is the bind address; no LocalServicePort: the destination's port. */
	assert_int_equal(service("{'Kind':'connect-proxy','ID':'p','Service':'p','Port':21001,'Address':'10.1.2.3',"
	    "'Proxy':{'DestinationServiceName':'web','DestinationServiceID':'web'}}", SERVICES_13, &c, &w), 0);
	assert_string_equal(c.bind_address, "10.1.2.3");
	assert_int_equal(c.local_service_port, 8080);
	assert_string_equal(c.content_hash, "");
	proxycfg_free(&c);
	assert_int_equal(service("{'Kind':'connect-proxy','ID':'p','Port':21001,"
	    "'Proxy':{'DestinationServiceName':'web'}}", NULL, &c, &w), -1);
	assert_string_equal(err, "Proxy.LocalServicePort: missing");
	assert_int_equal(service("{'Kind':'connect-proxy','ID':'p','Port':21001,"
	    "'Proxy':{'DestinationServiceName':'web','DestinationServiceID':'nope'}}", SERVICES_13, &c, &w), -1);
	assert_string_equal(err, "services: no service with ID \"nope\" registered on this agent");
	assert_int_equal(service("{'Kind':'connect-proxy','ID':'p','Port':21001,"
	    "'Proxy':{'DestinationServiceName':'web','LocalServicePort':0}}", SERVICES_13, &c, &w), 0);
	assert_int_equal(c.local_service_port, 8080);
	proxycfg_free(&c);
	assert_int_equal(service("{'Kind':'connect-proxy','ID':'p','Port':70000,"
	    "'Proxy':{'DestinationServiceName':'web','LocalServicePort':1}}", NULL, &c, &w), -1);
	assert_string_equal(err, "Port: 70000 is not a port");
	assert_int_equal(service("{'Kind':'connect-proxy','ID':'p','Port':1,"
	    "'Proxy':{'DestinationServiceName':'web','LocalServicePort':1,'LocalServiceAddress':'a b'}}",
	    NULL, &c, &w), -1);
	assert_string_equal(err, "Proxy.LocalServiceAddress: \"a b\" is not an IP address or host name");
	assert_int_equal(service("{'Kind':'','ID':'web','Port':1}", NULL, &c, &w), -1);
	assert_string_equal(err, "Kind: the service is not a connect-proxy");
	assert_int_equal(service("{'Kind':'connect-proxy','ID':'p','Port':1,'Proxy':'x'}", NULL, &c, &w), -1);
	assert_string_equal(err, "Proxy: not an object");
	proxycfg_warnings_free(&w);
}

static void
test_unmanaged_12(void **state)
{
	struct proxycfg_warnings w = { 0 };
	struct proxy_cfg c;
	const char *services = "{'redis1':{'ID':'redis1','Service':'redis','Port':6379},"
	    "'redis-proxy':{'ID':'redis-proxy','Service':'redis-proxy','Kind':'connect-proxy',"
	    "'ProxyDestination':'redis','Port':8181}}";

	assert_int_equal(service("{'ID':'redis-proxy','Service':'redis-proxy','Kind':'connect-proxy',"
	    "'ProxyDestination':'redis','Port':8181,'Address':''}", services, &c, &w), 0);
	assert_string_equal(c.target_service_name, "redis");
	assert_string_equal(c.target_service_id, "redis1");
	assert_int_equal(c.bind_port, 8181);
	assert_string_equal(c.bind_address, "0.0.0.0");
	assert_string_equal(c.local_service_host, "127.0.0.1");
	assert_int_equal(c.local_service_port, 6379);
	assert_int_equal(c.nupstreams, 0);
	proxycfg_free(&c);
	assert_int_equal(service("{'ID':'redis-proxy','Kind':'connect-proxy','ProxyDestination':'redis','Port':8181}",
	    NULL, &c, &w), -1);
	assert_string_equal(err, "ProxyDestination: the agent's services are needed to find the port of \"redis\"");
	assert_int_equal(service("{'ID':'redis-proxy','Kind':'connect-proxy','ProxyDestination':'redis','Port':8181}",
	    "{'a':{'ID':'a','Service':'redis','Port':1},'b':{'ID':'b','Service':'redis','Port':2}}", &c, &w), -1);
	assert_string_equal(err, "services: 2 services named \"redis\" on this agent: the destination is ambiguous");
	assert_int_equal(service("{'ID':'redis-proxy','Kind':'connect-proxy','ProxyDestination':'redis','Port':8181}",
	    "{'a':{'ID':'a','Service':'web','Port':1}}", &c, &w), -1);
	assert_string_equal(err, "services: no service named \"redis\" registered on this agent");
	assert_int_equal(service("{'ID':'redis-proxy','Kind':'connect-proxy','ProxyDestination':'redis','Port':8181}",
	    "[1]", &c, &w), -1);
	assert_string_equal(err, "services: not a JSON object");
	proxycfg_warnings_free(&w);
}

static int
sidecar(const char *services_sq, const char *id, char **pid)
{
	char *s = J(services_sq);
	int rc;

	rc = proxycfg_find_sidecar(s, strlen(s), id, pid, err, sizeof(err));
	free(s);
	return rc;
}

static void
test_find_sidecar(void **state)
{
	char *pid;

	assert_int_equal(sidecar(SERVICES_13, "web", &pid), 0);
	assert_string_equal(pid, "web-sidecar-proxy");
	free(pid);
	assert_int_equal(sidecar(SERVICES_13, "db", &pid), -1);
	assert_null(pid);
	assert_string_equal(err, "no connect-proxy registered on this agent for the service \"db\"");
	/* 1.2: ProxyDestination names the service of the ID asked for. */
	assert_int_equal(sidecar("{'redis1':{'ID':'redis1','Service':'redis','Port':6379},"
	    "'redis-proxy':{'ID':'redis-proxy','Kind':'connect-proxy','ProxyDestination':'redis','Port':8181}}",
	    "redis1", &pid), 0);
	assert_string_equal(pid, "redis-proxy");
	free(pid);
	/* Several. */
	assert_int_equal(sidecar("{'web':{'ID':'web','Service':'web'},"
	    "'p1':{'ID':'p1','Kind':'connect-proxy','Proxy':{'DestinationServiceName':'web','DestinationServiceID':'web'}},"
	    "'p2':{'ID':'p2','Kind':'connect-proxy','Proxy':{'DestinationServiceName':'web','DestinationServiceID':'web'}},"
	    "'p3':{'ID':'p3','Kind':'connect-proxy','Proxy':{'DestinationServiceName':'web','DestinationServiceID':'web2'}}}",
	    "web", &pid), -1);
	assert_string_equal(err, "2 connect-proxies registered for the service \"web\" (p1, p2): name one with -proxy-id");
	assert_int_equal(sidecar("{'x':[],'y':{'Kind':7}}", "web", &pid), -1);
	assert_int_equal(sidecar("nonsense", "web", &pid), -1);
	assert_int_equal(sidecar("{}", "", &pid), -1);
	assert_string_equal(err, "no service ID given");
}

static void
test_equal_copy_differ(void **state)
{
	struct proxy_cfg a, b, c;

	assert_int_equal(managed(UP("{'DestinationName':'db','LocalBindPort':1}"), &a, NULL), 0);
	assert_int_equal(proxycfg_copy(&b, &a), 0);
	assert_true(proxycfg_equal(&a, &b));
	assert_false(proxycfg_listeners_differ(&a, &b));
	b.upstreams[0].connect_timeout_ms = 5;
	assert_false(proxycfg_equal(&a, &b));
	assert_false(proxycfg_listeners_differ(&a, &b));
	b.local_service_port = 81;
	assert_false(proxycfg_listeners_differ(&a, &b));
	proxycfg_free(&b);

	assert_int_equal(managed(UP("{'DestinationName':'db','LocalBindPort':2}"), &c, NULL), 0);
	assert_false(proxycfg_equal(&a, &c));
	assert_true(proxycfg_listeners_differ(&a, &c));
	proxycfg_free(&c);
	assert_int_equal(managed(UP("{'DestinationName':'db','LocalBindPort':1},{'DestinationName':'x','LocalBindPort':2}"),
	    &c, NULL), 0);
	assert_true(proxycfg_listeners_differ(&a, &c));
	proxycfg_free(&c);
	assert_int_equal(managed("{" HEAD "'Config':{'bind_port':20199,'local_service_address':'127.0.0.1:80',"
	    "'protocol':'http'},'Upstreams':[{'DestinationName':'db','LocalBindPort':1}]}", &c, NULL), 0);
	assert_true(proxycfg_listeners_differ(&a, &c));
	proxycfg_free(&c);
	proxycfg_free(&a);
	proxycfg_free(&a);	/* free twice is harmless: the struct was zeroed */
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_managed_minimal),
		cmocka_unit_test(test_managed_13_upstreams),
		cmocka_unit_test(test_managed_12_upstreams),
		cmocka_unit_test(test_unknown_keys_warned),
		cmocka_unit_test(test_invalid_values),
		cmocka_unit_test(test_odd_json),
		cmocka_unit_test(test_unmanaged_13),
		cmocka_unit_test(test_unmanaged_12),
		cmocka_unit_test(test_find_sidecar),
		cmocka_unit_test(test_equal_copy_differ),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
