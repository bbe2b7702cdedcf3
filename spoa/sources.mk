# connect-spoa. Keep this list explicit; main.c last.
SPOA_SRCS := \
	spoa/spop.c \
	spoa/server.c \
	spoa/main.c
