# connect-certsync. Keep this list explicit; main.c last.
CERTSYNC_SRCS := \
	certsync/render.c \
	certsync/proxycfg.c \
	certsync/template.c \
	certsync/discovery.c \
	certsync/runtime.c \
	certsync/supervise.c \
	certsync/haproxy.c \
	certsync/main.c
