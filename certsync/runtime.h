/*
 * runtime.h - HAProxy runtime API (stats socket, unix path) client on libev, and the certificate and
 * server-slot transactions certsync does through it.
 *
 * One connection per command (HAProxy closes after one command in non-interactive mode): connect, write
 * the command line (and for "<<" commands a payload and the blank line that ends it), read the answer to
 * EOF with a size cap and a timeout, then call back with the text. Every operation goes through ONE queue
 * and runs alone: a multi-command operation (a certificate transaction) keeps the queue until it is done,
 * so only one certificate or CA-file transaction is ever open (on 2.6.12 a second "set ssl cert" silently
 * joins the first). No logging here: every failure reaches the callback with an error text.
 *
 * Callbacks run from the loop, never from inside the call that queued the operation. After rt_free no
 * callback is called. See the top of runtime.c for the CA-change path proven on HAProxy 2.6.12.
 */
#ifndef HC_RUNTIME_H
#define HC_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>

struct ev_loop;
struct rt_client;

/* Cap on one answer from HAProxy; a longer answer fails the command ("answer too large"). */
#define RT_MAX_ANSWER	(4u * 1024u * 1024u)
/* Default per-command timeout (connect + write + read to EOF), seconds. */
#define RT_DEFAULT_TIMEOUT	10.0

/*
 * Raw command completion. ok: the exchange completed (the answer may still be an error from HAProxy:
 * the text is what HAProxy said). !ok: transport failure or timeout, text NULL, err says why.
 * text is NUL-terminated and valid only during the callback.
 */
typedef void rt_answer_cb(void *arg, bool ok, const char *text, size_t len, const char *err);
/* High-level completion: rc 0 on success, -1 with err (never NULL then, "" otherwise). */
typedef void rt_done_cb(void *arg, int rc, const char *err);

/* sock_path: the stats socket ("stats socket <path> level admin"). timeout <= 0 -> RT_DEFAULT_TIMEOUT. */
struct rt_client *rt_new(struct ev_loop *loop, const char *sock_path, double timeout, char *err, size_t errlen);
/* Cancels everything queued or running without calling callbacks, closes the socket, frees. NULL-safe. */
void rt_free(struct rt_client *c);
/* Number of operations queued or running (0 = idle). */
size_t rt_pending(const struct rt_client *c);

/*
 * Queues one command. cmd is one line without "\n" (refused if it has CR/LF/NUL). With payload != NULL
 * the command is sent as "cmd <<\n" + payload (blank lines removed, ends with "\n") + "\n".
 * Returns 0, or -1 with err (bad argument, out of memory).
 */
int  rt_command(struct rt_client *c, const char *cmd, const char *payload, size_t payload_len,
    rt_answer_cb *cb, void *arg, char *err, size_t errlen);

/*
 * Certificate update (leaf rotation): "set ssl cert <file> <<" with the PEM (blank lines stripped;
 * certificate chain + key in one PEM, as in the file), "commit ssl cert <file>"; on any failure
 * "abort ssl cert <file>"; then "show ssl cert <file>" must report the serial of the first certificate
 * in pem. file is the name HAProxy knows (the path as written in the config). Write the file on disk
 * first: runtime changes live in memory only and a reload reads the file again.
 */
int  rt_cert_update(struct rt_client *c, const char *file, const char *pem, size_t pem_len,
    rt_done_cb *cb, void *arg, char *err, size_t errlen);

/* Reads the serial currently in use for file ("show ssl cert <file>", "Serial:"), upper-case hex. */
typedef void rt_serial_cb(void *arg, int rc, const char *serial_hex, const char *err);
int  rt_cert_serial(struct rt_client *c, const char *file, rt_serial_cb *cb, void *arg,
    char *err, size_t errlen);

/*
 * Server slot: ready=true -> "set server be/srv addr <addr> port <port>" then "state ready";
 * ready=false -> "state maint" (addr may be NULL then: the address is left as it is). Then reads back
 * "show servers state <be>" and checks the slot (address, port, admin state).
 */
int  rt_server_set(struct rt_client *c, const char *backend, const char *server, const char *addr,
    int port, bool ready, rt_done_cb *cb, void *arg, char *err, size_t errlen);

/* One server of "show servers state <backend>" (format 1). */
struct rt_server {
	char	name[128];
	char	addr[64];	/* srv_addr as HAProxy prints it */
	int	port;		/* srv_port */
	int	op_state;	/* 0 stopped, 1 starting, 2 running, 3 stopping */
	int	admin_state;	/* bit mask; 0x01 FMAINT, 0x02 IMAINT, 0x20 RMAINT = maintenance (0x04: "disabled" in the config) */
	bool	maint;		/* admin_state says maintenance */
};
typedef void rt_servers_cb(void *arg, int rc, const struct rt_server *srv, size_t n, const char *err);
/* Reads the current servers of a backend (for the periodic resync against HAProxy's actual state). */
int  rt_servers_read(struct rt_client *c, const char *backend, rt_servers_cb *cb, void *arg,
    char *err, size_t errlen);

/*
 * CA change (Consul roots change): there is deliberately NO runtime operation for it. On 2.6.12
 * "set/commit ssl ca-file" on a ca-file used by a verify-required bind or server silently breaks every
 * later leaf update (see the top of runtime.c for what was tried and seen). The path proven safe: write
 * the new CA bundle file, then a seamless reload (haproxy.h hap_reload); leaf rotations after it stay on
 * rt_cert_update and take effect. Order: the reload with the new roots must be done BEFORE a leaf signed
 * by the new CA is put in service (the old worker, which trusts only the old roots, may still connect to
 * the new worker's bind during the handover). If both arrive together: reload with the new roots and
 * the current leaf, then rt_cert_update the new leaf once hap_reload reported success.
 */

/* ---- pure helpers (no I/O), exposed for tests and fuzzing ---- */

/* Copies in without empty / whitespace-only lines into out (malloc'd, NUL-terminated, ends with "\n"). */
int  rt_pem_strip_blank(const char *in, size_t len, char **out, size_t *outlen, char *err, size_t errlen);
/* Serial of the first certificate of a PEM, upper-case hex without separators (as HAProxy prints it). */
int  rt_pem_serial(const char *pem, size_t len, char *out, size_t outlen, char *err, size_t errlen);
/* "Serial: <hex>" from a "show ssl cert <file>" answer, upper-cased. -1 when absent. */
int  rt_parse_serial(const char *text, size_t len, char *out, size_t outlen, char *err, size_t errlen);
/*
 * Parses "show servers state" text (version 1). *srv is malloc'd (free()); entries of other backends
 * than backend (when non-NULL) are skipped. -1 on a malformed answer or an error text from HAProxy.
 */
int  rt_parse_servers_state(const char *text, size_t len, const char *backend, struct rt_server **srv,
    size_t *n, char *err, size_t errlen);
/* True when a runtime answer text reports success for a commit ("Success!" and no "Failed"/"rror"). */
bool rt_answer_success(const char *text, size_t len);

#endif
