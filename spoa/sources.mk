# connect-spoa. Keep this list explicit; main.c last.
SPOA_SRCS := \
	spoa/spiffe.c \
	spoa/cache.c \
	spoa/authz.c \
	spoa/metrics.c \
	spoa/metrics_http.c \
	spoa/spop.c \
	spoa/server.c \
	spoa/cache_snapshot.c \
	spoa/busypoll.c \
	spoa/main.c
