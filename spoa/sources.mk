# connect-spoa. Keep this list explicit; main.c last.
SPOA_SRCS := \
	spoa/main.c
