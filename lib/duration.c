/*
 * duration.c - Go-style durations ("400ms", "1m30s") as Consul's tools take them on the command line.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "duration.h"

int
duration_parse(const char *s, double *out)
{
	double total = 0;
	char *end;
	int parts = 0;

	if (s == NULL || *s == '\0')
		return -1;
	while (*s != '\0') {
		double v, mul;

		const char *digits = s;

		while ((*digits >= '0' && *digits <= '9') || *digits == '.')
			digits++;
		if (digits == s)
			return -1;
		/* only [0-9.]: strtod alone would also take "0x10", "1e3", "inf" */
		errno = 0;
		v = strtod(s, &end);
		if (errno != 0 || end != digits || !isfinite(v) || v < 0)
			return -1;
		s = end;
		if (*s == '\0' && parts == 0) {
			*out = v;
			return 0;
		}
		if (strncmp(s, "ns", 2) == 0) {
			mul = 1e-9;
			s += 2;
		} else if (strncmp(s, "us", 2) == 0) {
			mul = 1e-6;
			s += 2;
		} else if (strncmp(s, "\xc2\xb5s", 3) == 0) {
			mul = 1e-6;
			s += 3;
		} else if (strncmp(s, "ms", 2) == 0) {
			mul = 1e-3;
			s += 2;
		} else if (*s == 's') {
			mul = 1;
			s++;
		} else if (*s == 'm') {
			mul = 60;
			s++;
		} else if (*s == 'h') {
			mul = 3600;
			s++;
		} else
			return -1;
		total += v * mul;
		parts++;
	}
	*out = total;
	return 0;
}
