# connect-certsync. Keep this list explicit; main.c last.
CERTSYNC_SRCS := \
	certsync/template.c \
	certsync/proxycfg.c \
	certsync/render.c \
	certsync/discovery.c \
	certsync/certs.c \
	certsync/daemon.c \
	certsync/snapshot.c \
	certsync/runtime.c \
	certsync/supervise.c \
	certsync/haproxy.c \
	certsync/main.c
