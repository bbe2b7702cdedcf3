/*
 * buf.c - see buf.h.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

#define BUF_MIN_ALLOC 64

void
buf_init(struct buf *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->max = max;
}

int
buf_reserve(struct buf *b, size_t n)
{
	size_t need, ncap;
	char *p;

	if (n > b->max || b->len > b->max - n || b->len + n == SIZE_MAX)
		return -1;
	need = b->len + n + 1;		/* cannot overflow: len + n <= max < SIZE_MAX */
	if (need <= b->cap)
		return 0;
	ncap = b->cap < BUF_MIN_ALLOC ? BUF_MIN_ALLOC : b->cap;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2) {
			ncap = need;
			break;
		}
		ncap *= 2;
	}
	/* Never allocate far beyond what max allows. */
	if (b->max < SIZE_MAX && ncap > b->max + 1)
		ncap = b->max + 1;
	if (ncap < need)
		ncap = need;
	if ((p = realloc(b->data, ncap)) == NULL)
		return -1;
	if (b->data == NULL)
		p[0] = '\0';
	b->data = p;
	b->cap = ncap;
	return 0;
}

int
buf_append(struct buf *b, const void *data, size_t n)
{
	if (buf_reserve(b, n) == -1)
		return -1;
	if (n > 0)
		memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int
buf_append_str(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

int
buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	int n;

	/* First try into whatever room there is; measure, grow, and format again only if needed. */
	if (buf_reserve(b, 0) == -1)
		return -1;
	va_copy(ap2, ap);
	n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
	va_end(ap2);
	if (n < 0) {
		b->data[b->len] = '\0';
		return -1;
	}
	if ((size_t)n >= b->cap - b->len) {
		if (buf_reserve(b, (size_t)n) == -1) {
			b->data[b->len] = '\0';
			return -1;
		}
		va_copy(ap2, ap);
		n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
		va_end(ap2);
		if (n < 0 || (size_t)n >= b->cap - b->len) {
			b->data[b->len] = '\0';
			return -1;
		}
	}
	b->len += (size_t)n;
	return 0;
}

int
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = buf_vprintf(b, fmt, ap);
	va_end(ap);
	return rc;
}

void
buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}

void
buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

char *
buf_detach(struct buf *b, size_t *lenp)
{
	char *p;

	if (b->data == NULL && buf_reserve(b, 0) == -1)
		return NULL;
	p = b->data;
	if (lenp != NULL)
		*lenp = b->len;
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	return p;
}

const char *
buf_str(const struct buf *b)
{
	return b->data != NULL ? b->data : "";
}
