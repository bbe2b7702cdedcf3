# connect-certsync. Keep this list explicit; main.c last.
CERTSYNC_SRCS := \
	certsync/proxycfg.c \
	certsync/template.c \
	certsync/discovery.c \
	certsync/main.c
