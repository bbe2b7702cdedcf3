/*
 * buf.h - a growable byte buffer with a hard maximum (the idea of curl's dynbuf).
 *
 * The content is always NUL-terminated (the NUL is not counted in len), so a buffer of text can be
 * handed to string functions. Growing past max fails with -1 and leaves the content as it was.
 * A zeroed struct is not usable: call buf_init first.
 */
#ifndef HC_BUF_H
#define HC_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "log.h"	/* HC_PRINTF */

struct buf {
	char	*data;		/* NULL until the first append */
	size_t	 len;		/* bytes used, not counting the trailing NUL */
	size_t	 cap;		/* bytes allocated */
	size_t	 max;		/* hard limit on len */
};

void	buf_init(struct buf *b, size_t max);
/* Makes room for n more bytes (plus the NUL). 0, or -1 when len + n > max or out of memory. */
int	buf_reserve(struct buf *b, size_t n);
int	buf_append(struct buf *b, const void *data, size_t n);
int	buf_append_str(struct buf *b, const char *s);
/* Appends formatted text; on failure (too big, bad format) the content is left as it was. */
int	buf_printf(struct buf *b, const char *fmt, ...) HC_PRINTF(2, 3);
int	buf_vprintf(struct buf *b, const char *fmt, va_list ap) HC_PRINTF(2, 0);
/* Forgets the content, keeps the memory. */
void	buf_reset(struct buf *b);
/* Frees the memory; the buffer can be used again (max is kept). */
void	buf_free(struct buf *b);
/* Hands the NUL-terminated content to the caller (who frees it) and resets b. Never NULL unless OOM. */
char	*buf_detach(struct buf *b, size_t *lenp);
/* "" when empty. */
const char *buf_str(const struct buf *b);

#endif
