# Shared by both daemons. Keep this list explicit.
LIB_SRCS := \
	lib/log.c \
	lib/errbuf.c \
	lib/duration.c \
	lib/buf.c \
	lib/json.c \
	lib/atomicfile.c \
	lib/snapfile.c \
	lib/consul_env.c \
	lib/consul.c
