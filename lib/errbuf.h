/*
 * errbuf.h - filling a caller's "char *err, size_t errlen" buffer, the way lower layers report errors.
 */
#ifndef HC_ERRBUF_H
#define HC_ERRBUF_H

#include <stddef.h>

#include "log.h"	/* HC_PRINTF */

/*
 * Formats into err (truncated to errlen, always NUL-terminated); nothing when err is NULL or errlen 0.
 * Returns -1, so that "return errbuf_set(err, errlen, ...);" fails a function in one line.
 */
int	errbuf_set(char *err, size_t errlen, const char *fmt, ...) HC_PRINTF(3, 4);

#endif
