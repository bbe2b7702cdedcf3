# Shared by both daemons. Keep this list explicit.
LIB_SRCS := \
	lib/log.c
