# connect-certsync. Keep this list explicit; main.c last.
CERTSYNC_SRCS := \
	certsync/discovery.c \
	certsync/main.c
