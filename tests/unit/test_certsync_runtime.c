/*
 * test_certsync_runtime.c - the runtime API client (parsers, transport, transactions) and HAProxy
 * master-worker control (check, start, reload keeps the listener, stop) against the real haproxy 2.6.
 * Certificates are made with the openssl CLI (EC P-256, CN = service, URI SAN spiffe://...).
 * No wall-time assertions: safety timers only end a hung run (and fail it).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>

#include "haproxy.h"
#include "runtime.h"

/* ------------------------------------------------------------------ pure parsers */

static void
test_strip_blank(void **state)
{
	const char in[] = "-----BEGIN X-----\r\n\r\nAAAA\n   \n\t\nBBBB\n\n-----END X-----";
	char *out, err[128];
	size_t n;

	assert_int_equal(rt_pem_strip_blank(in, strlen(in), &out, &n, err, sizeof(err)), 0);
	assert_string_equal(out, "-----BEGIN X-----\nAAAA\nBBBB\n-----END X-----\n");
	assert_int_equal(n, strlen(out));
	free(out);
	assert_int_equal(rt_pem_strip_blank("", 0, &out, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 0);
	free(out);
	assert_int_equal(rt_pem_strip_blank("a\0b\n", 4, &out, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "NUL"));
}

static void
test_parse_serial(void **state)
{
	const char ans[] = "Filename: /x/leaf.pem\nStatus: Used\nSerial: 0A293961F3934753F5F3EA7E461D93BBC7FA1FB7\n"
	    "notBefore: Nov 27 14:43:45 2026 GMT\n";
	char s[128], err[128];

	assert_int_equal(rt_parse_serial(ans, strlen(ans), s, sizeof(s), err, sizeof(err)), 0);
	assert_string_equal(s, "A293961F3934753F5F3EA7E461D93BBC7FA1FB7");
	assert_int_equal(rt_parse_serial("Can't display the certificate: Not found or the certificate is a bundle!\n",
	    74, s, sizeof(s), err, sizeof(err)), -1);
	assert_int_equal(rt_parse_serial("Serial: zz\n", 11, s, sizeof(s), err, sizeof(err)), -1);
	assert_int_equal(rt_parse_serial("Serial:", 7, s, sizeof(s), err, sizeof(err)), -1);
}

/* Seen on 2.6.12 after "set server l/s2 addr ::1 port 8080" + "state ready" on server-template slots. */
static const char servers_state[] =
    "1\n"
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
    "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port "
    "srv_check_addr srv_agent_addr srv_agent_port\n"
    "2 l 1 s1 127.0.0.1 0 5 1 1 0 1 0 0 8 0 0 0 - 1 - 1 0 - - 0\n"
    "2 l 2 s2 ::1 2 4 1 1 0 1 0 0 8 0 0 0 - 8080 - 1 0 - - 0\n"
    "2 l 3 s3 127.0.0.1 0 5 1 1 0 1 0 0 8 0 0 0 - 1 - 1 0 - - 0\n\n";

static void
test_parse_servers_state(void **state)
{
	struct rt_server *s;
	size_t n;
	char err[256];

	assert_int_equal(rt_parse_servers_state(servers_state, strlen(servers_state), "l", &s, &n, err,
	    sizeof(err)), 0);
	assert_int_equal(n, 3);
	assert_string_equal(s[0].name, "s1");
	assert_true(s[0].maint);
	assert_string_equal(s[1].name, "s2");
	assert_string_equal(s[1].addr, "::1");
	assert_int_equal(s[1].port, 8080);
	assert_int_equal(s[1].op_state, 2);
	assert_false(s[1].maint);	/* admin 4: "disabled" in the config, but set ready */
	free(s);
	assert_int_equal(rt_parse_servers_state(servers_state, strlen(servers_state), "other", &s, &n, err,
	    sizeof(err)), 0);
	assert_int_equal(n, 0);
	free(s);
	assert_int_equal(rt_parse_servers_state("Can't find backend.\n", 20, "l", &s, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "Can't find backend"));
	assert_int_equal(rt_parse_servers_state("1\n2 l 1 s1 x 0 0\n", 17, NULL, &s, &n, err, sizeof(err)), -1);
	assert_int_equal(rt_parse_servers_state("1\n# be_name srv_name srv_addr srv_op_state srv_admin_state srv_port\n"
	    "l s1 1.2.3.4 9 0 80\n", 86, NULL, &s, &n, err, sizeof(err)), -1);
	assert_int_equal(rt_parse_servers_state("1\n# be_name srv_name srv_addr srv_op_state srv_admin_state srv_port\n"
	    "l s1 1.2.3.4 2 0\n", 84, NULL, &s, &n, err, sizeof(err)), -1);
	assert_int_equal(rt_parse_servers_state("", 0, NULL, &s, &n, err, sizeof(err)), -1);
}

static void
test_answer_success(void **state)
{
	assert_true(rt_answer_success("Committing /x.pem. Success!\n", 28));
	assert_false(rt_answer_success("Committing /x.pem\nFailed!\n", 26));
	assert_false(rt_answer_success("(null)Failed!\n", 14));
	assert_false(rt_answer_success("", 0));
}

static void
test_parse_show_proc(void **state)
{
	const char t[] = "#<PID>          <type>          <reloads>       <uptime>        <version>      \n"
	    "10242           master          2 [failed: 1]   0d00h00m01s     2.6.12-1+deb12u4\n"
	    "# workers\n"
	    "10248           worker          1               0d00h00m01s     2.6.12-1+deb12u4\n"
	    "# old workers\n"
	    "10244           worker          3               0d00h00m43s     2.6.12-1+deb12u4\n"
	    "# programs\n\n";
	pid_t w, p;
	unsigned r, f;
	char err[128];

	assert_int_equal(hap_parse_show_proc(t, strlen(t), &w, &r, &f, err, sizeof(err)), 0);
	assert_int_equal(w, 10248);
	assert_int_equal(r, 2);
	assert_int_equal(f, 1);
	assert_int_equal(hap_parse_show_proc("Unknown command\n", 16, &w, &r, &f, err, sizeof(err)), -1);
	assert_int_equal(hap_parse_info_pid("Name: HAProxy\nPid: 10244\nUptime: 0\n", 36, &p), 0);
	assert_int_equal(p, 10244);
	assert_int_equal(hap_parse_info_pid("Name: HAProxy\n", 14, &p), -1);
}

/* ------------------------------------------------------------------ helpers for loop tests */

struct ctx {
	struct ev_loop	*loop;
	int		 ncalls;
	int		 rc[16];
	char		 err[16][1024];
	char		 text[8192];
	int		 waiting;
	bool		 timed_out;
};

static void
safety_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct ctx *c = w->data;

	c->timed_out = true;
	ev_break(loop, EVBREAK_ALL);
}

/* Runs the loop until waiting drops to 0. */
static void
wait_all(struct ctx *c, double safety)
{
	ev_timer t;

	ev_timer_init(&t, safety_cb, safety, 0.0);
	t.data = c;
	ev_timer_start(c->loop, &t);
	while (c->waiting > 0 && !c->timed_out)
		ev_run(c->loop, EVRUN_ONCE);
	ev_timer_stop(c->loop, &t);
	assert_false(c->timed_out);
}

static void
done_cb(void *arg, int rc, const char *err)
{
	struct ctx *c = arg;

	assert_non_null(err);
	if (c->ncalls < 16) {
		c->rc[c->ncalls] = rc;
		snprintf(c->err[c->ncalls], sizeof(c->err[0]), "%s", err);
	}
	c->ncalls++;
	c->waiting--;
}

static void
answer_cb(void *arg, bool ok, const char *text, size_t len, const char *err)
{
	struct ctx *c = arg;

	if (c->ncalls < 16) {
		c->rc[c->ncalls] = ok ? 0 : -1;
		snprintf(c->err[c->ncalls], sizeof(c->err[0]), "%s", ok ? "" : err);
	}
	if (ok)
		snprintf(c->text, sizeof(c->text), "%s", text);
	c->ncalls++;
	c->waiting--;
}

static char tmpdir[64];

static void
path(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", tmpdir, name);
}

static void
test_transport_errors(void **state)
{
	struct ctx c = { .loop = EV_DEFAULT };
	struct rt_client *rt;
	char p[128], err[256];
	struct sockaddr_un sun;
	int lfd;

	path(p, sizeof(p), "nothing.sock");
	rt = rt_new(c.loop, p, 0.3, err, sizeof(err));
	assert_non_null(rt);
	assert_int_equal(rt_command(rt, "show info", NULL, 0, answer_cb, &c, err, sizeof(err)), 0);
	assert_int_equal(rt_command(rt, "bad\ncmd", NULL, 0, answer_cb, &c, err, sizeof(err)), -1);
	c.waiting = 1;
	wait_all(&c, 20);
	assert_int_equal(c.rc[0], -1);
	assert_non_null(strstr(c.err[0], "connect"));
	rt_free(rt);

	/* A peer that accepts (backlog) and never answers: timeout. */
	path(p, sizeof(p), "silent.sock");
	lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	assert_true(strlen(p) < sizeof(sun.sun_path));
	memcpy(sun.sun_path, p, strlen(p) + 1);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	rt = rt_new(c.loop, p, 0.3, err, sizeof(err));
	memset(&c, 0, sizeof(c));
	c.loop = EV_DEFAULT;
	assert_int_equal(rt_command(rt, "show info", NULL, 0, answer_cb, &c, err, sizeof(err)), 0);
	assert_int_equal(rt_command(rt, "show info", NULL, 0, answer_cb, &c, err, sizeof(err)), 0);
	assert_int_equal(rt_pending(rt), 2);
	c.waiting = 2;
	wait_all(&c, 20);
	assert_int_equal(c.rc[0], -1);
	assert_non_null(strstr(c.err[0], "timeout"));
	assert_int_equal(c.rc[1], -1);
	assert_int_equal(rt_pending(rt), 0);
	rt_free(rt);
	close(lfd);
	unlink(p);
}

/* ------------------------------------------------------------------ real HAProxy */

static int
free_port(void)
{
	struct sockaddr_in a;
	socklen_t l = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static int
listen_port(int port)
{
	struct sockaddr_in a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)port);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 16), 0);
	return fd;
}

static int
connect_port(int port)
{
	struct sockaddr_in a;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct timeval tv = { .tv_sec = 10 };

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)port);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == -1) {
		close(fd);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void
roundtrip(int a, int b, const char *msg)
{
	char buf[64];
	size_t n = strlen(msg);
	ssize_t r;

	assert_int_equal(write(a, msg, n), (ssize_t)n);
	r = read(b, buf, sizeof(buf));
	assert_int_equal(r, (ssize_t)n);
	assert_memory_equal(buf, msg, n);
}

static void
sh(const char *cmd)
{
	int rc = system(cmd);

	if (rc != 0)
		fail_msg("command failed (%d): %s", rc, cmd);
}

/* CA + leaf "web" (leaf.pem = cert + key), and a second leaf of the same CA (leaf2.pem), and a leaf whose
 * key does not match its certificate (bad.pem). */
static void
make_certs(void)
{
	char cmd[4096];

	snprintf(cmd, sizeof(cmd),
	    "cd %s && exec >openssl.log 2>&1 && "
	    "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key && "
	    "openssl req -x509 -new -key ca.key -subj /CN=TestCA -days 3 -out ca.pem && "
	    "printf 'subjectAltName=URI:spiffe://1111-2222.consul/ns/default/dc/dc1/svc/web\\n' > ext.cnf && "
	    "for n in leaf leaf2; do "
	    " openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $n.key && "
	    " openssl req -new -key $n.key -subj /CN=web -out $n.csr && "
	    " openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf "
	    "   -out $n.crt && "
	    " cat $n.crt $n.key > $n.pem || exit 1; done && "
	    "cat leaf2.crt leaf.key > bad.pem", tmpdir);
	sh(cmd);
}

static char *
slurp(const char *p, size_t *len)
{
	FILE *f = fopen(p, "r");
	char *b = malloc(65536);
	size_t n;

	assert_non_null(f);
	n = fread(b, 1, 65535, f);
	fclose(f);
	b[n] = '\0';
	*len = n;
	return b;
}

static void
write_cfg(const char *name, int tls_port, int plain_port, int echo_port, const char *extra)
{
	char p[128], rsock[128], leaf[128], ca[128];
	FILE *f;

	path(p, sizeof(p), name);
	path(rsock, sizeof(rsock), "rt.sock");
	path(leaf, sizeof(leaf), "leaf.pem");
	path(ca, sizeof(ca), "ca.pem");
	f = fopen(p, "w");
	assert_non_null(f);
	fprintf(f,
	    "global\n"
	    "  stats socket %s mode 600 level admin\n"
	    "  hard-stop-after 30s\n"
	    "defaults\n"
	    "  mode tcp\n"
	    "  timeout connect 2s\n"
	    "  timeout client 60s\n"
	    "  timeout server 60s\n"
	    "frontend fe_in\n"
	    "  bind 127.0.0.1:%d ssl crt %s ca-file %s verify required\n"
	    "  default_backend be_up\n"
	    "backend be_up\n"
	    "  balance leastconn\n"
	    "  server-template s 1-3 127.0.0.1:1 disabled ssl crt %s ca-file %s verify required verifyhost web\n"
	    "listen plain\n"
	    "  bind 127.0.0.1:%d\n"
	    "  server echo 127.0.0.1:%d\n"
	    "%s",
	    rsock, tls_port, leaf, ca, leaf, ca, plain_port, echo_port, extra);
	fclose(f);
}

static void
test_check_failure_message(void **state)
{
	char p[128], err[1024];

	write_cfg("bad.cfg", free_port(), free_port(), free_port(), "  bogus-keyword here\n");
	path(p, sizeof(p), "bad.cfg");
	assert_int_equal(hap_check("haproxy", p, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "ALERT"));
	assert_non_null(strstr(err, "bogus-keyword"));
	write_cfg("good.cfg", free_port(), free_port(), free_port(), "");
	path(p, sizeof(p), "good.cfg");
	assert_int_equal(hap_check("haproxy", p, err, sizeof(err)), 0);
	assert_int_equal(hap_check("/nonexistent/haproxy", p, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot execute"));
}

static pid_t ready_pid;
static int nready;

static void
on_ready(void *arg, pid_t worker)
{
	ready_pid = worker;
	nready++;
}

static void
stop_done(void *arg)
{
	struct ctx *c = arg;

	c->waiting--;
}

static void
test_haproxy_lifecycle(void **state)
{
	struct ctx c = { .loop = EV_DEFAULT };
	struct hap_opts o;
	struct hap *h;
	struct rt_client *rt;
	char cfg[128], msock[128], rsock[128], leaf[128], err[1024];
	char *pem, *pem2, *bad;
	size_t pemlen, pem2len, badlen;
	int tls_port = free_port(), plain_port = free_port(), echo_port = free_port();
	int efd, cfd, sfd, cfd2, sfd2;
	pid_t w1, master;

	efd = listen_port(echo_port);
	write_cfg("haproxy.cfg", tls_port, plain_port, echo_port, "");
	path(cfg, sizeof(cfg), "haproxy.cfg");
	path(msock, sizeof(msock), "master.sock");
	path(rsock, sizeof(rsock), "rt.sock");
	path(leaf, sizeof(leaf), "leaf.pem");
	memset(&o, 0, sizeof(o));
	o.bin = "haproxy";
	o.cfg_path = cfg;
	o.master_sock = msock;
	o.runtime_sock = rsock;
	o.ready_timeout = 30;
	o.on_ready = on_ready;
	h = hap_new(c.loop, &o, err, sizeof(err));
	assert_non_null(h);
	assert_int_equal(hap_start(h, done_cb, &c, err, sizeof(err)), 0);
	c.waiting = 1;
	wait_all(&c, 60);
	assert_int_equal(c.rc[0], 0);
	assert_true(hap_ready(h));
	w1 = hap_worker_pid(h);
	master = hap_master_pid(h);
	assert_true(w1 > 0 && master > 0 && w1 != master);
	assert_int_equal(ready_pid, w1);

	/* ---- runtime API: ordered queue, certificate transaction, server slots */
	rt = rt_new(c.loop, rsock, 10, err, sizeof(err));
	assert_non_null(rt);
	pem = slurp(leaf, &pemlen);
	{
		char p2[128], p3[128];

		path(p2, sizeof(p2), "leaf2.pem");
		path(p3, sizeof(p3), "bad.pem");
		pem2 = slurp(p2, &pem2len);
		bad = slurp(p3, &badlen);
	}
	memset(c.rc, 0, sizeof(c.rc));
	c.ncalls = 0;
	/* Queued together: bad (mismatched key: aborted), then leaf2 (must succeed: nothing left open),
	 * then a slot set ready, a bad server, a slot back to maintenance. */
	assert_int_equal(rt_cert_update(rt, leaf, bad, badlen, done_cb, &c, err, sizeof(err)), 0);
	assert_int_equal(rt_cert_update(rt, leaf, pem2, pem2len, done_cb, &c, err, sizeof(err)), 0);
	assert_int_equal(rt_server_set(rt, "be_up", "s2", "127.0.0.1", tls_port, true, done_cb, &c, err,
	    sizeof(err)), 0);
	assert_int_equal(rt_server_set(rt, "be_up", "nosuch", "127.0.0.1", 80, true, done_cb, &c, err,
	    sizeof(err)), 0);
	assert_int_equal(rt_server_set(rt, "be_up", "s3", NULL, 0, false, done_cb, &c, err, sizeof(err)), 0);
	assert_int_equal(rt_server_set(rt, "be_up", "s1", "not-an-ip", 80, true, done_cb, &c, err, sizeof(err)), -1);
	c.waiting = 5;
	wait_all(&c, 60);
	assert_int_equal(c.ncalls, 5);
	assert_int_equal(c.rc[0], -1);
	assert_non_null(strstr(c.err[0], "commit ssl cert"));
	assert_non_null(strstr(c.err[0], "inconsistencies between private key and certificate"));
	assert_int_equal(c.rc[1], 0);
	assert_int_equal(c.rc[2], 0);
	assert_int_equal(c.rc[3], -1);
	assert_non_null(strstr(c.err[3], "No such server"));
	assert_int_equal(c.rc[4], 0);
	{
		/* the serial in use is leaf2's */
		char want[128], got[128], e2[128];

		assert_int_equal(rt_pem_serial(pem2, pem2len, want, sizeof(want), e2, sizeof(e2)), 0);
		c.ncalls = 0;
		snprintf(err, sizeof(err), "show ssl cert %s", leaf);
		assert_int_equal(rt_command(rt, err, NULL, 0, answer_cb, &c, e2, sizeof(e2)), 0);
		c.waiting = 1;
		wait_all(&c, 30);
		assert_non_null(strstr(c.text, "Status: Used"));
		assert_int_equal(rt_parse_serial(c.text, strlen(c.text), got, sizeof(got), e2, sizeof(e2)), 0);
		assert_string_equal(got, want);
	}

	/* ---- reload keeps the listener: a connection held across it still works, new ones too */
	cfd = connect_port(plain_port);
	assert_true(cfd >= 0);
	sfd = accept(efd, NULL, NULL);
	assert_true(sfd >= 0);
	roundtrip(cfd, sfd, "before");
	roundtrip(sfd, cfd, "pong1");
	memset(c.rc, 0, sizeof(c.rc));
	c.ncalls = 0;
	assert_int_equal(hap_reload(h, done_cb, &c, err, sizeof(err)), 0);
	c.waiting = 1;
	wait_all(&c, 60);
	assert_int_equal(c.rc[0], 0);
	assert_true(hap_worker_pid(h) > 0);
	assert_true(hap_worker_pid(h) != w1);
	assert_int_equal(hap_master_pid(h), master);	/* the master re-executed in place */
	assert_int_equal(ready_pid, hap_worker_pid(h));
	roundtrip(cfd, sfd, "after");
	roundtrip(sfd, cfd, "pong2");
	cfd2 = connect_port(plain_port);
	assert_true(cfd2 >= 0);
	sfd2 = accept(efd, NULL, NULL);
	assert_true(sfd2 >= 0);
	roundtrip(cfd2, sfd2, "new");
	close(cfd2);
	close(sfd2);
	close(cfd);
	close(sfd);

	/* ---- a reload with a broken config is refused before HAProxy sees it; the worker stays */
	w1 = hap_worker_pid(h);
	write_cfg("haproxy.cfg", tls_port, plain_port, echo_port, "  bogus-keyword\n");
	assert_int_equal(hap_reload(h, done_cb, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "bogus-keyword"));
	assert_int_equal(hap_worker_pid(h), w1);

	/* ---- graceful stop */
	rt_free(rt);
	c.waiting = 1;
	hap_stop(h, 10, stop_done, &c);
	wait_all(&c, 60);
	assert_false(hap_ready(h));
	assert_int_equal(hap_master_pid(h), 0);
	assert_int_equal(kill(master, 0), -1);
	hap_free(h);
	close(efd);
	free(pem);
	free(pem2);
	free(bad);
}

static int
setup(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/hc-rt-XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	make_certs();
	return 0;
}

static int
teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strip_blank),
		cmocka_unit_test(test_parse_serial),
		cmocka_unit_test(test_parse_servers_state),
		cmocka_unit_test(test_answer_success),
		cmocka_unit_test(test_parse_show_proc),
		cmocka_unit_test(test_transport_errors),
		cmocka_unit_test(test_check_failure_message),
		cmocka_unit_test(test_haproxy_lifecycle),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
