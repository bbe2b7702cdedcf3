/*
 * haproxy.c - HAProxy master-worker under supervision: `haproxy -c`, start, readiness, seamless reload.
 *
 * Facts from Debian's 2.6.12 this relies on (seen):
 * - The master CLI (-S) answers a command only after the client shuts its write side; runtime.c does.
 * - "reload" on the master CLI answers nothing and closes; the master re-executes itself (same pid),
 *   passes the listening sockets to the new worker and "show proc" then reads
 *   "<pid> master <reloads> [failed: <n>] ..." with the new worker first under "# workers".
 * - A reload with a broken config leaves the old worker serving and counts "[failed: n+1]".
 * - When the current worker dies the master exits: the supervisor restarts the whole thing.
 * Readiness: "show proc" names the newest worker, and the runtime socket answers "show info" with that
 * worker's "Pid:" (the old worker's socket is replaced by the new one's at the same path).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "haproxy.h"
#include "runtime.h"
#include "supervise.h"

#define HAP_CHECK_TIMEOUT	30.0
#define HAP_PROBE_INTERVAL	0.1
#define HAP_OUTPUT_MAX		(64 * 1024)

enum hap_state {
	HS_IDLE,
	HS_STARTING,
	HS_RUNNING,
	HS_RELOADING,
	HS_STOPPING,
	HS_STOPPED,
};

struct hap {
	struct ev_loop	*loop;
	char		*bin, *cfg, *msock, *rsock;
	double		 ready_timeout;
	struct hap_opts	 o;

	struct sv_child	*sv;
	struct rt_client *master;
	struct rt_client *runtime;
	enum hap_state	 state;
	hap_done_cb	*done;
	void		*done_arg;
	bool		 first_start;	/* the hap_start in progress: a failure stops supervision */

	pid_t		 worker;	/* newest ready worker */
	pid_t		 candidate;	/* newest worker per show proc, being checked */
	pid_t		 old_worker;	/* RELOADING: the worker before */
	unsigned	 base_reloads, base_failed;
	bool		 ready;
	bool		 probing;	/* a probe command in flight */
	char		 last_err[512];

	ev_timer	 probe_tm;
	ev_timer	 deadline_tm;
	void		(*stop_done)(void *arg);
	void		*stop_arg;
};

/* ---------------------------------------------------------------- parsing */

static int
parse_uint(const char *s, size_t len, unsigned long max, unsigned long *out)
{
	unsigned long v = 0;

	if (len == 0 || len > 10)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

/* Next whitespace-separated token of [*p, end). */
static bool
next_tok(const char **p, const char *end, const char **tok, size_t *tlen)
{
	const char *s = *p;

	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	if (s == end)
		return false;
	*tok = s;
	while (s < end && *s != ' ' && *s != '\t')
		s++;
	*tlen = (size_t)(s - *tok);
	*p = s;
	return true;
}

int
hap_parse_show_proc(const char *text, size_t len, pid_t *worker, unsigned *reloads, unsigned *failed,
    char *err, size_t errlen)
{
	size_t i = 0;
	enum { SEC_MASTER, SEC_WORKERS, SEC_OTHER } sec = SEC_MASTER;
	bool master_seen = false;

	*worker = 0;
	*reloads = 0;
	*failed = 0;
	while (i < len) {
		const char *s = text + i, *e, *p, *tok;
		size_t tlen;
		unsigned long pid, v;

		while (i < len && text[i] != '\n')
			i++;
		e = text + i;
		if (i < len)
			i++;
		if (e == s)
			continue;
		if (*s == '#') {
			if ((size_t)(e - s) >= 9 && memcmp(s, "# workers", 9) == 0)
				sec = SEC_WORKERS;
			else if (s[1] == ' ')
				sec = SEC_OTHER;	/* "# old workers", "# programs" */
			continue;	/* "#<PID> ..." column header */
		}
		p = s;
		if (!next_tok(&p, e, &tok, &tlen) || parse_uint(tok, tlen, 0x7fffffff, &pid) == -1)
			continue;	/* not a process line */
		if (!next_tok(&p, e, &tok, &tlen))
			continue;
		if (sec == SEC_MASTER && tlen == 6 && memcmp(tok, "master", 6) == 0) {
			if (!next_tok(&p, e, &tok, &tlen) || parse_uint(tok, tlen, 0xffffffffUL, &v) == -1) {
				snprintf(err, errlen, "show proc: bad master line");
				return -1;
			}
			*reloads = (unsigned)v;
			/* "[failed:" "N]" (2.5+) */
			if (next_tok(&p, e, &tok, &tlen) && tlen == 8 && memcmp(tok, "[failed:", 8) == 0 &&
			    next_tok(&p, e, &tok, &tlen) && tlen >= 2 && tok[tlen - 1] == ']' &&
			    parse_uint(tok, tlen - 1, 0xffffffffUL, &v) == 0)
				*failed = (unsigned)v;
			master_seen = true;
		} else if (sec == SEC_WORKERS && *worker == 0 && tlen == 6 && memcmp(tok, "worker", 6) == 0)
			*worker = (pid_t)pid;
	}
	if (!master_seen) {
		snprintf(err, errlen, "show proc: no master line");
		return -1;
	}
	return 0;
}

int
hap_parse_info_pid(const char *text, size_t len, pid_t *pid)
{
	size_t i = 0;

	while (i < len) {
		const char *s = text + i;
		size_t l;
		unsigned long v;

		while (i < len && text[i] != '\n')
			i++;
		l = (size_t)(text + i - s);
		if (i < len)
			i++;
		if (l > 5 && memcmp(s, "Pid: ", 5) == 0 && parse_uint(s + 5, l - 5, 0x7fffffff, &v) == 0 && v > 0) {
			*pid = (pid_t)v;
			return 0;
		}
	}
	return -1;
}

/* ---------------------------------------------------------------- haproxy -c */

/* Keeps the ALERT lines of HAProxy's output (they say what is wrong), else all of it. */
static void
check_output_to_err(const char *out, size_t len, char *err, size_t errlen)
{
	size_t n = 0, i = 0;
	bool any = false;

	if (errlen == 0)
		return;
	err[0] = '\0';
	for (int pass = 0; pass < 2 && !any; pass++) {
		i = 0;
		n = 0;
		while (i < len) {
			const char *s = out + i;
			size_t l;

			while (i < len && out[i] != '\n')
				i++;
			l = (size_t)(out + i - s);
			if (i < len)
				i++;
			if (l == 0 || (pass == 0 && memmem(s, l, "[ALERT]", 7) == NULL))
				continue;
			if (n > 0 && n + 2 < errlen) {
				err[n++] = ' ';
				err[n++] = '|';
				err[n++] = ' ';
			}
			for (size_t k = 0; k < l && n + 1 < errlen; k++)
				err[n++] = (s[k] >= ' ' && s[k] < 0x7f) ? s[k] : '?';
			any = true;
		}
		if (n >= errlen)
			n = errlen - 1;
		err[n] = '\0';
	}
	if (!any)
		snprintf(err, errlen, "haproxy -c failed with no output");
}

int
hap_check(const char *bin, const char *cfg_path, char *err, size_t errlen)
{
	int p[2], st;
	pid_t pid;
	char *out;
	size_t len = 0;
	struct timespec t0, t;
	bool timed_out = false;

	if ((out = malloc(HAP_OUTPUT_MAX + 1)) == NULL) {
		snprintf(err, errlen, "haproxy -c: out of memory");
		return -1;
	}
	if (pipe2(p, O_CLOEXEC) == -1) {
		snprintf(err, errlen, "haproxy -c: pipe: %s", strerror(errno));
		free(out);
		return -1;
	}
	if ((pid = fork()) == -1) {
		snprintf(err, errlen, "haproxy -c: fork: %s", strerror(errno));
		close(p[0]);
		close(p[1]);
		free(out);
		return -1;
	}
	if (pid == 0) {
		int fd = open("/dev/null", O_RDONLY);

		if (fd != -1)
			(void)dup2(fd, STDIN_FILENO);
		(void)dup2(p[1], STDOUT_FILENO);
		(void)dup2(p[1], STDERR_FILENO);
		execlp(bin, bin, "-c", "-f", cfg_path, (char *)NULL);
		dprintf(STDERR_FILENO, "[ALERT] cannot execute %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	close(p[1]);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };
		double el;
		ssize_t n;
		char sink[4096];

		clock_gettime(CLOCK_MONOTONIC, &t);
		el = (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
		if (el >= HAP_CHECK_TIMEOUT) {
			timed_out = true;
			break;
		}
		if (poll(&pfd, 1, (int)((HAP_CHECK_TIMEOUT - el) * 1000) + 1) == -1) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (len < HAP_OUTPUT_MAX)
			n = read(p[0], out + len, HAP_OUTPUT_MAX - len);
		else
			n = read(p[0], sink, sizeof(sink));	/* keep draining, drop the excess */
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (len < HAP_OUTPUT_MAX)
			len += (size_t)n;
	}
	close(p[0]);
	if (timed_out)
		(void)kill(pid, SIGKILL);
	while (waitpid(pid, &st, 0) == -1) {
		if (errno != EINTR) {
			st = -1;
			break;
		}
	}
	out[len] = '\0';
	if (timed_out) {
		snprintf(err, errlen, "haproxy -c -f %s: no answer within %.0f s", cfg_path, HAP_CHECK_TIMEOUT);
		free(out);
		return -1;
	}
	if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
		free(out);
		return 0;
	}
	check_output_to_err(out, len, err, errlen);
	free(out);
	return -1;
}

/* ---------------------------------------------------------------- lifecycle */

static void
hap_complete(struct hap *h, int rc, const char *err)
{
	hap_done_cb *done = h->done;
	void *arg = h->done_arg;

	h->done = NULL;
	h->first_start = false;
	ev_timer_stop(h->loop, &h->deadline_tm);
	if (rc == 0)
		ev_timer_stop(h->loop, &h->probe_tm);
	if (done != NULL)
		done(arg, rc, rc == 0 ? "" : err);
}

static void
hap_error(struct hap *h, const char *err)
{
	if (h->o.on_error != NULL)
		h->o.on_error(h->o.arg, err);
}

static void
became_ready(struct hap *h, pid_t worker)
{
	h->worker = worker;
	h->ready = true;
	h->state = HS_RUNNING;
	ev_timer_stop(h->loop, &h->probe_tm);
	ev_timer_stop(h->loop, &h->deadline_tm);
	if (h->o.on_ready != NULL)
		h->o.on_ready(h->o.arg, worker);
	hap_complete(h, 0, "");
}

static void
info_cb(void *arg, bool ok, const char *text, size_t len, const char *err)
{
	struct hap *h = arg;
	pid_t pid;

	h->probing = false;
	if (h->state != HS_STARTING && h->state != HS_RELOADING)
		return;
	if (!ok) {
		snprintf(h->last_err, sizeof(h->last_err), "runtime socket: %s", err);
		return;
	}
	if (hap_parse_info_pid(text, len, &pid) == -1) {
		snprintf(h->last_err, sizeof(h->last_err), "runtime socket: no Pid in show info");
		return;
	}
	if (pid != h->candidate) {
		snprintf(h->last_err, sizeof(h->last_err), "runtime socket still served by pid %d, waiting for %d",
		    (int)pid, (int)h->candidate);
		return;
	}
	became_ready(h, pid);
}

static void
proc_cb(void *arg, bool ok, const char *text, size_t len, const char *err)
{
	struct hap *h = arg;
	pid_t worker;
	unsigned reloads, failed;
	char e2[256];

	h->probing = false;
	if (h->state != HS_STARTING && h->state != HS_RELOADING)
		return;
	if (!ok) {
		snprintf(h->last_err, sizeof(h->last_err), "master socket: %s", err);
		return;
	}
	if (hap_parse_show_proc(text, len, &worker, &reloads, &failed, e2, sizeof(e2)) == -1) {
		snprintf(h->last_err, sizeof(h->last_err), "master socket: %s", e2);
		return;
	}
	if (h->state == HS_RELOADING) {
		if (failed > h->base_failed) {
			h->state = HS_RUNNING;	/* the old worker keeps serving */
			ev_timer_stop(h->loop, &h->probe_tm);
			hap_complete(h, -1, "reload failed: HAProxy kept the previous worker (its log on our stderr "
			    "says why)");
			return;
		}
		if (reloads <= h->base_reloads || worker == 0 || worker == h->old_worker) {
			snprintf(h->last_err, sizeof(h->last_err), "no new worker yet");
			return;
		}
	} else if (worker == 0) {
		snprintf(h->last_err, sizeof(h->last_err), "no worker yet");
		return;
	}
	h->candidate = worker;
	if (rt_command(h->runtime, "show info", NULL, 0, info_cb, h, e2, sizeof(e2)) == 0)
		h->probing = true;
}

static void
probe_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct hap *h = w->data;
	char e2[256];

	if (h->probing || (h->state != HS_STARTING && h->state != HS_RELOADING))
		return;
	if (rt_command(h->master, "show proc", NULL, 0, proc_cb, h, e2, sizeof(e2)) == 0)
		h->probing = true;
}

static void
start_probing(struct hap *h)
{
	h->ready = false;
	h->last_err[0] = '\0';
	ev_timer_set(&h->probe_tm, HAP_PROBE_INTERVAL, HAP_PROBE_INTERVAL);
	ev_timer_again(h->loop, &h->probe_tm);
	ev_timer_set(&h->deadline_tm, h->ready_timeout, 0.0);
	ev_timer_start(h->loop, &h->deadline_tm);
}

static void
deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct hap *h = w->data;
	char msg[800];

	ev_timer_stop(loop, &h->probe_tm);
	snprintf(msg, sizeof(msg), "haproxy not ready within %.0f s%s%s", h->ready_timeout,
	    h->last_err[0] ? ": " : "", h->last_err);
	if (h->state == HS_RELOADING) {
		h->state = HS_RUNNING;
		hap_complete(h, -1, msg);
		return;
	}
	if (h->state == HS_STARTING) {
		if (h->first_start) {
			h->state = HS_STOPPING;
			sv_stop(h->sv, NULL, NULL);
			hap_complete(h, -1, msg);
		} else {
			h->state = HS_RUNNING;
			hap_error(h, msg);
		}
	}
}

static void
sv_on_start(void *arg, pid_t pid)
{
	struct hap *h = arg;

	if (h->state == HS_STOPPING || h->state == HS_STOPPED)
		return;
	/* First start, or a restart after the master died: wait for its worker. */
	h->state = HS_STARTING;
	h->worker = 0;
	h->candidate = 0;
	start_probing(h);
}

static void
sv_on_exit(void *arg, pid_t pid, int status, double next_delay)
{
	struct hap *h = arg;
	char msg[300];

	h->ready = false;
	h->worker = 0;
	if (h->o.on_exit != NULL)
		h->o.on_exit(h->o.arg, pid, status, next_delay);
	if (h->state == HS_STOPPING || h->state == HS_STOPPED)
		return;
	if (WIFEXITED(status))
		snprintf(msg, sizeof(msg), "haproxy master %d exited with status %d", (int)pid, WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(msg, sizeof(msg), "haproxy master %d killed by signal %d", (int)pid, WTERMSIG(status));
	else
		snprintf(msg, sizeof(msg), "haproxy master %d stopped (status %d)", (int)pid, status);
	ev_timer_stop(h->loop, &h->probe_tm);
	ev_timer_stop(h->loop, &h->deadline_tm);
	if (h->first_start) {
		/* A start that fails (port in use...) is not retried: the caller decides. */
		h->state = HS_STOPPING;
		sv_stop(h->sv, NULL, NULL);
		hap_complete(h, -1, msg);
		return;
	}
	h->state = HS_STARTING;	/* the supervisor restarts it (backoff) */
	if (h->done != NULL)
		hap_complete(h, -1, msg);	/* a reload in progress failed */
	else
		hap_error(h, msg);
}

static void
sv_on_error(void *arg, const char *err)
{
	hap_error(arg, err);
}

struct hap *
hap_new(struct ev_loop *loop, const struct hap_opts *o, char *err, size_t errlen)
{
	struct hap *h;

	if (o == NULL || o->cfg_path == NULL || o->master_sock == NULL || o->runtime_sock == NULL) {
		snprintf(err, errlen, "haproxy: config, master socket and runtime socket paths are required");
		return NULL;
	}
	if ((h = calloc(1, sizeof(*h))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	h->loop = loop;
	h->o = *o;
	h->bin = strdup(o->bin != NULL ? o->bin : "haproxy");
	h->cfg = strdup(o->cfg_path);
	h->msock = strdup(o->master_sock);
	h->rsock = strdup(o->runtime_sock);
	if (h->bin == NULL || h->cfg == NULL || h->msock == NULL || h->rsock == NULL) {
		snprintf(err, errlen, "out of memory");
		hap_free(h);
		return NULL;
	}
	h->ready_timeout = o->ready_timeout > 0 ? o->ready_timeout : 30.0;
	if ((h->master = rt_new(loop, h->msock, 5.0, err, errlen)) == NULL ||
	    (h->runtime = rt_new(loop, h->rsock, 5.0, err, errlen)) == NULL) {
		hap_free(h);
		return NULL;
	}
	ev_timer_init(&h->probe_tm, probe_cb, HAP_PROBE_INTERVAL, HAP_PROBE_INTERVAL);
	h->probe_tm.data = h;
	ev_timer_init(&h->deadline_tm, deadline_cb, 0.0, 0.0);
	h->deadline_tm.data = h;
	h->state = HS_IDLE;
	return h;
}

void
hap_free(struct hap *h)
{
	if (h == NULL)
		return;
	if (h->loop != NULL) {
		ev_timer_stop(h->loop, &h->probe_tm);
		ev_timer_stop(h->loop, &h->deadline_tm);
	}
	sv_free(h->sv);
	rt_free(h->master);
	rt_free(h->runtime);
	free(h->bin);
	free(h->cfg);
	free(h->msock);
	free(h->rsock);
	free(h);
}

int
hap_start(struct hap *h, hap_done_cb *done, void *arg, char *err, size_t errlen)
{
	struct sv_opts so;
	char *argv[] = { h->bin, "-W", "-S", h->msock, "-f", h->cfg, NULL };

	if (h->state != HS_IDLE) {
		snprintf(err, errlen, "haproxy: already started");
		return -1;
	}
	if (hap_check(h->bin, h->cfg, err, errlen) == -1)
		return -1;
	memset(&so, 0, sizeof(so));
	so.name = "haproxy";
	so.argv = argv;
	so.stop_signal = SIGUSR1;	/* soft stop: workers finish their connections */
	so.stop_timeout = 10.0;
	so.restart = true;
	so.on_start = sv_on_start;
	so.on_exit = sv_on_exit;
	so.on_error = sv_on_error;
	so.arg = h;
	h->done = done;
	h->done_arg = arg;
	h->first_start = true;
	h->state = HS_STARTING;
	if ((h->sv = sv_start(h->loop, &so, err, errlen)) == NULL) {
		h->state = HS_IDLE;
		h->done = NULL;
		h->first_start = false;
		return -1;
	}
	return 0;
}

static void
reload_sent_cb(void *arg, bool ok, const char *text, size_t len, const char *err)
{
	struct hap *h = arg;

	/* The master re-executes and closes: no answer, or a reset, both mean it was taken. */
	if (h->state == HS_RELOADING)
		start_probing(h);
}

static void
reload_base_cb(void *arg, bool ok, const char *text, size_t len, const char *err)
{
	struct hap *h = arg;
	pid_t worker;
	char e2[256], msg[400];

	if (h->state != HS_RELOADING)
		return;
	if (!ok || hap_parse_show_proc(text, len, &worker, &h->base_reloads, &h->base_failed, e2,
	    sizeof(e2)) == -1) {
		snprintf(msg, sizeof(msg), "reload: master socket: %s", ok ? e2 : err);
		h->state = HS_RUNNING;
		hap_complete(h, -1, msg);
		return;
	}
	h->old_worker = worker;
	if (rt_command(h->master, "reload", NULL, 0, reload_sent_cb, h, e2, sizeof(e2)) == -1) {
		h->state = HS_RUNNING;
		hap_complete(h, -1, e2);
	}
}

int
hap_reload(struct hap *h, hap_done_cb *done, void *arg, char *err, size_t errlen)
{
	if (h->state == HS_RELOADING || h->state == HS_STARTING) {
		snprintf(err, errlen, "haproxy: busy (a start or reload is in progress)");
		return -1;
	}
	if (h->state != HS_RUNNING) {
		snprintf(err, errlen, "haproxy: not running");
		return -1;
	}
	if (hap_check(h->bin, h->cfg, err, errlen) == -1)
		return -1;
	/* Read the reload counters first, so the new generation can be told from the old. */
	if (rt_command(h->master, "show proc", NULL, 0, reload_base_cb, h, err, errlen) == -1)
		return -1;
	h->state = HS_RELOADING;
	h->done = done;
	h->done_arg = arg;
	return 0;
}

static void
stop_done_cb(void *arg)
{
	struct hap *h = arg;
	void (*done)(void *) = h->stop_done;

	h->state = HS_STOPPED;
	h->stop_done = NULL;
	if (done != NULL)
		done(h->stop_arg);
}

void
hap_stop(struct hap *h, double timeout, void (*done)(void *arg), void *arg)
{
	ev_timer_stop(h->loop, &h->probe_tm);
	ev_timer_stop(h->loop, &h->deadline_tm);
	h->stop_done = done;
	h->stop_arg = arg;
	if (h->done != NULL)
		hap_complete(h, -1, "haproxy: stopping");
	h->state = HS_STOPPING;
	h->ready = false;
	if (h->sv == NULL) {
		h->state = HS_STOPPED;
		if (done != NULL)
			done(arg);
		return;
	}
	sv_set_stop_timeout(h->sv, timeout);
	sv_stop(h->sv, stop_done_cb, h);
}

pid_t
hap_master_pid(const struct hap *h)
{
	return h->sv != NULL ? sv_pid(h->sv) : 0;
}

pid_t
hap_worker_pid(const struct hap *h)
{
	return h->ready ? h->worker : 0;
}

bool
hap_ready(const struct hap *h)
{
	return h->ready;
}
