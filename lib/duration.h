/*
 * duration.h - Go-style durations ("400ms", "1m30s") as Consul's tools take them on the command line.
 */
#ifndef LIB_DURATION_H
#define LIB_DURATION_H

/*
 * The subset of Go's time.ParseDuration operators use: one or more <number><unit> with units ns, us (or the micro sign),
 * ms, s, m, h ("400ms", "1m30s", "1.5s", "2h"); a bare number is seconds. No sign (negative is an error).
 * Sets *out (seconds) and returns 0, or returns -1 and leaves *out alone.
 */
int	duration_parse(const char *s, double *out);

#endif
