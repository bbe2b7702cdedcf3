# connect-certsync. Keep this list explicit; main.c last.
CERTSYNC_SRCS := \
	certsync/main.c
