/*
 * log.h - one logging module for both daemons, in the style of OpenBSD's log.c.
 *
 * One line per event on stderr: "2026-11-27T15:30:05.123Z [INFO]  connect-spoa: text".
 * Levels are Consul's: trace, debug, info, warn, err. errno is preserved by every call.
 * Only the daemon layer logs; lower layers return errors into a caller's buffer.
 */
#ifndef HC_LOG_H
#define HC_LOG_H

#include <stdarg.h>

enum log_level {
	LL_TRACE = 0,
	LL_DEBUG,
	LL_INFO,
	LL_WARN,
	LL_ERR,
};

#define HC_PRINTF(a, b) __attribute__((format(printf, a, b)))

void log_init(const char *progname, enum log_level level);
void log_setlevel(enum log_level level);
enum log_level log_getlevel(void);
/* Parses "trace", "debug", "info", "warn", "err" (also "error", "warning"); 0 on success, -1 otherwise. */
int  log_level_parse(const char *s, enum log_level *out);
int  log_enabled(enum log_level level);

void log_trace(const char *fmt, ...) HC_PRINTF(1, 2);
void log_debug(const char *fmt, ...) HC_PRINTF(1, 2);
void log_info(const char *fmt, ...) HC_PRINTF(1, 2);
void log_warnx(const char *fmt, ...) HC_PRINTF(1, 2);
/* log_warn appends ": strerror(errno)". */
void log_warn(const char *fmt, ...) HC_PRINTF(1, 2);
void log_errx(const char *fmt, ...) HC_PRINTF(1, 2);
void log_err(const char *fmt, ...) HC_PRINTF(1, 2);
/* Start-up or broken invariants only. fatal appends strerror(errno). Exit status 1. */
void fatal(const char *fmt, ...) HC_PRINTF(1, 2) __attribute__((noreturn));
void fatalx(const char *fmt, ...) HC_PRINTF(1, 2) __attribute__((noreturn));
void log_vlog(enum log_level level, int with_errno, const char *fmt, va_list ap) HC_PRINTF(3, 0);

#endif
