/*
 * test_certsync_discovery.c - decoding upstream instances from /v1/health/connect and prepared queries.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "discovery.h"

static int
decode_h(const char *json, struct instance_list *l, char *err, size_t errlen)
{
	return discovery_decode_health(json, strlen(json), l, err, errlen);
}

/* Consul's shape (agent/structs CheckServiceNode) for two sidecar proxies of redis. */
static const char health_two[] =
    "[{\"Node\":{\"ID\":\"x\",\"Node\":\"n1\",\"Address\":\"10.0.0.1\",\"Datacenter\":\"dc1\","
    "\"TaggedAddresses\":{\"lan\":\"10.0.0.1\"},\"Meta\":{}},"
    "\"Service\":{\"Kind\":\"connect-proxy\",\"ID\":\"redis-proxy\",\"Service\":\"redis-proxy\","
    "\"Tags\":[],\"Address\":\"\",\"Port\":21000,\"ProxyDestination\":\"redis\"},"
    "\"Checks\":[{\"Node\":\"n1\",\"CheckID\":\"serfHealth\",\"Status\":\"passing\"}]},"
    "{\"Node\":{\"Node\":\"n2\",\"Address\":\"10.0.0.2\",\"Datacenter\":\"dc1\"},"
    "\"Service\":{\"ID\":\"redis2-proxy\",\"Address\":\"127.0.0.1\",\"Port\":21001},"
    "\"Checks\":[]}]";

static void
test_health_dial_address(void **state)
{
	struct instance_list l;
	char err[256];

	assert_int_equal(decode_h(health_two, &l, err, sizeof(err)), 0);
	assert_int_equal(l.n, 2);
	/* sorted by address: "10.0.0.1" < "127.0.0.1" */
	assert_string_equal(l.v[0].addr, "10.0.0.1");	/* Service.Address empty -> Node.Address */
	assert_int_equal(l.v[0].port, 21000);
	assert_string_equal(l.v[0].service_id, "redis-proxy");
	assert_string_equal(l.v[0].node, "n1");
	assert_string_equal(l.v[0].datacenter, "dc1");
	assert_string_equal(l.v[1].addr, "127.0.0.1");	/* Service.Address wins over 10.0.0.2 */
	assert_int_equal(l.v[1].port, 21001);
	assert_null(l.query_service);
	assert_int_equal(l.skipped, 0);
	instance_list_free(&l);
}

static void
test_health_empty(void **state)
{
	struct instance_list l;
	char err[256];

	assert_int_equal(decode_h("[]", &l, err, sizeof(err)), 0);
	assert_int_equal(l.n, 0);
	instance_list_free(&l);
}

static void
test_health_skips(void **state)
{
	struct instance_list l;
	char err[256];
	const char *j =
	    "[{\"Node\":{\"Address\":\"db.example\"},\"Service\":{\"Port\":1}},"
	    "{\"Node\":{\"Address\":\"\"},\"Service\":{\"Port\":1}},"
	    "{\"Node\":{\"Address\":\"10.1.1.1\"},\"Service\":{\"Port\":0}},"
	    "{\"Node\":{\"Address\":\"10.1.1.2\"},\"Service\":{\"Port\":5},"
	    "\"Checks\":[{\"Status\":\"passing\"},{\"Status\":\"critical\"}]},"
	    "{\"Node\":{\"Address\":\"::0001\"},\"Service\":{\"Port\":7}},"
	    "{\"Node\":{\"Address\":\"10.1.1.3\"},\"Service\":{\"Port\":8}},"
	    "{\"Node\":{\"Address\":\"10.1.1.9\"},\"Service\":{\"Address\":\"10.1.1.3\",\"Port\":8}}]";

	assert_int_equal(decode_h(j, &l, err, sizeof(err)), 0);
	/* hostname, no address, port 0, critical: skipped; the duplicate 10.1.1.3:8 kept once */
	assert_int_equal(l.skipped, 4);
	assert_non_null(strstr(l.skip_reason, "not a numeric IP address"));
	assert_int_equal(l.n, 2);
	assert_string_equal(l.v[0].addr, "10.1.1.3");
	assert_int_equal(l.v[0].port, 8);
	assert_string_equal(l.v[1].addr, "::1");	/* canonical form */
	assert_int_equal(instance_list_find(&l, "::1", 7), 1);
	assert_int_equal(instance_list_find(&l, "::1", 8), -1);
	instance_list_free(&l);
}

static void
test_health_errors(void **state)
{
	static const struct {
		const char *json;
		const char *msg;
	} cases[] = {
		{ "", "invalid JSON" },
		{ "{\"a\":1}", "expected an array" },
		{ "[1]", "[0]: expected an object" },
		{ "[{\"Node\":{}}]", "[0]: Node and Service must be objects" },
		{ "[{\"Node\":{},\"Service\":{\"Port\":\"80\"}}]", "[0].Service.Port: expected a number" },
		{ "[{\"Node\":{},\"Service\":{\"Port\":70000}}]", "70000 is not a port" },
		{ "[{\"Node\":{},\"Service\":{\"Port\":-1}}]", "is not a port" },
		{ "[{\"Node\":{\"Address\":7},\"Service\":{\"Port\":1}}]", "[0].Address: expected a string" },
		{ "[{\"Node\":{},\"Service\":{\"Port\":1},\"Checks\":{}}]", "[0].Checks: expected an array" },
		{ "[{\"Node\":{},\"Service\":{\"Port\":1},\"Checks\":[{\"Status\":1}]}]", "Status: expected a string" },
		{ "[{\"Node\":{},\"Node\":{},\"Service\":{\"Port\":1}}]", "invalid JSON" },
		{ "[{\"Node\":{},\"Service\":{\"Port\":99999999999999999999999}}]", "invalid JSON" },
	};
	struct instance_list l;
	char err[256];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		if (decode_h(cases[i].json, &l, err, sizeof(err)) != -1)
			fail_msg("case %zu accepted", i);
		if (strstr(err, cases[i].msg) == NULL)
			fail_msg("case %zu: err \"%s\" lacks \"%s\"", i, err, cases[i].msg);
		assert_int_equal(l.n, 0);
		assert_null(l.v);
	}
}

static void
test_query(void **state)
{
	struct instance_list l;
	char err[256];
	const char *j =
	    "{\"Service\":\"redis\",\"Nodes\":[{\"Node\":{\"Node\":\"n1\",\"Address\":\"127.0.0.2\","
	    "\"Datacenter\":\"dc2\"},\"Service\":{\"ID\":\"redis-proxy\",\"Port\":21000},\"Checks\":[]}],"
	    "\"DNS\":{\"TTL\":\"\"},\"Datacenter\":\"dc2\",\"Failovers\":0}";

	assert_int_equal(discovery_decode_query(j, strlen(j), &l, err, sizeof(err)), 0);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.v[0].addr, "127.0.0.2");
	assert_int_equal(l.v[0].port, 21000);
	assert_string_equal(l.v[0].datacenter, "dc2");
	assert_string_equal(l.query_service, "redis");
	instance_list_free(&l);

	j = "{\"Service\":\"redis\",\"Nodes\":null,\"Datacenter\":\"dc1\"}";
	assert_int_equal(discovery_decode_query(j, strlen(j), &l, err, sizeof(err)), 0);
	assert_int_equal(l.n, 0);
	instance_list_free(&l);

	j = "[]";
	assert_int_equal(discovery_decode_query(j, strlen(j), &l, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "expected an object"));
	j = "{\"Nodes\":{}}";
	assert_int_equal(discovery_decode_query(j, strlen(j), &l, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "Nodes: expected an array"));
	j = "{\"Nodes\":[{\"Node\":{},\"Service\":{\"Port\":true}}]}";
	assert_int_equal(discovery_decode_query(j, strlen(j), &l, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "Nodes[0].Service.Port"));
}

static void
test_equal_copy(void **state)
{
	struct instance_list a, b, c;
	char err[256];
	const char *j1 = "[{\"Node\":{\"Address\":\"10.0.0.2\"},\"Service\":{\"Port\":1}},"
	    "{\"Node\":{\"Address\":\"10.0.0.1\"},\"Service\":{\"Port\":1}}]";
	const char *j2 = "[{\"Node\":{\"Address\":\"10.0.0.1\"},\"Service\":{\"Port\":1}},"
	    "{\"Node\":{\"Address\":\"10.0.0.2\"},\"Service\":{\"Port\":1}}]";

	assert_int_equal(decode_h(j1, &a, err, sizeof(err)), 0);
	assert_int_equal(decode_h(j2, &b, err, sizeof(err)), 0);
	assert_true(instance_list_equal(&a, &b));	/* order of the answer does not matter */
	assert_int_equal(instance_list_copy(&c, &a), 0);
	assert_true(instance_list_equal(&a, &c));
	instance_list_free(&b);
	assert_int_equal(decode_h("[{\"Node\":{\"Address\":\"10.0.0.1\"},\"Service\":{\"Port\":2}},"
	    "{\"Node\":{\"Address\":\"10.0.0.2\"},\"Service\":{\"Port\":1}}]", &b, err, sizeof(err)), 0);
	assert_false(instance_list_equal(&a, &b));
	instance_list_free(&a);
	instance_list_free(&b);
	instance_list_free(&c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_health_dial_address),
		cmocka_unit_test(test_health_empty),
		cmocka_unit_test(test_health_skips),
		cmocka_unit_test(test_health_errors),
		cmocka_unit_test(test_query),
		cmocka_unit_test(test_equal_copy),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
