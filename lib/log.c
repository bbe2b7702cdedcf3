/*
 * log.c - see log.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static const char *log_progname = "haproxy-connect";
static enum log_level log_threshold = LL_INFO;

static const char *const level_names[] = {
	[LL_TRACE] = "TRACE",
	[LL_DEBUG] = "DEBUG",
	[LL_INFO] = "INFO",
	[LL_WARN] = "WARN",
	[LL_ERR] = "ERROR",
};

void
log_init(const char *progname, enum log_level level)
{
	if (progname != NULL)
		log_progname = progname;
	log_threshold = level;
	/* Line buffered even when the agent captures us into a file. */
	setvbuf(stderr, NULL, _IOLBF, 0);
}

void
log_setlevel(enum log_level level)
{
	log_threshold = level;
}

enum log_level
log_getlevel(void)
{
	return log_threshold;
}

int
log_enabled(enum log_level level)
{
	return level >= log_threshold;
}

int
log_level_parse(const char *s, enum log_level *out)
{
	static const struct {
		const char *name;
		enum log_level level;
	} names[] = {
		{ "trace", LL_TRACE }, { "debug", LL_DEBUG }, { "info", LL_INFO },
		{ "warn", LL_WARN }, { "warning", LL_WARN }, { "err", LL_ERR },
		{ "error", LL_ERR },
	};
	size_t i;

	if (s == NULL)
		return -1;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcasecmp(s, names[i].name) == 0) {
			*out = names[i].level;
			return 0;
		}
	}
	return -1;
}

void
log_vlog(enum log_level level, int with_errno, const char *fmt, va_list ap)
{
	int saved_errno = errno;
	char msg[4096], stamp[40];
	struct timespec ts;
	struct tm tm;

	if (level < log_threshold)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (with_errno)
		fprintf(stderr, "%s.%03ldZ [%s] %s: %s: %s\n", stamp, ts.tv_nsec / 1000000L,
		    level_names[level], log_progname, msg, strerror(saved_errno));
	else
		fprintf(stderr, "%s.%03ldZ [%s] %s: %s\n", stamp, ts.tv_nsec / 1000000L,
		    level_names[level], log_progname, msg);
	errno = saved_errno;
}

#define LOG_FN(name, level, with_errno)			\
void							\
name(const char *fmt, ...)				\
{							\
	va_list ap;					\
	va_start(ap, fmt);				\
	log_vlog(level, with_errno, fmt, ap);		\
	va_end(ap);					\
}

LOG_FN(log_trace, LL_TRACE, 0)
LOG_FN(log_debug, LL_DEBUG, 0)
LOG_FN(log_info, LL_INFO, 0)
LOG_FN(log_warnx, LL_WARN, 0)
LOG_FN(log_warn, LL_WARN, 1)
LOG_FN(log_errx, LL_ERR, 0)
LOG_FN(log_err, LL_ERR, 1)

void
fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vlog(LL_ERR, 1, fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vlog(LL_ERR, 0, fmt, ap);
	va_end(ap);
	exit(1);
}
