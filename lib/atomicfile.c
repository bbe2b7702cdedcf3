/*
 * atomicfile.c - see atomicfile.h.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomicfile.h"

#define TEMP_SUFFIX	".tmp."		/* temp files: <path>.tmp.XXXXXX (mkstemp) */

/* Writes all of data, retrying on EINTR and short writes. */
static int
write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	ssize_t n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Splits path into its directory ("." when there is none). */
static int
dir_of(const char *path, char *dir, size_t dirlen)
{
	const char *slash = strrchr(path, '/');
	size_t n;

	if (slash == NULL) {
		if (dirlen < 2)
			return -1;
		dir[0] = '.';
		dir[1] = '\0';
		return 0;
	}
	n = (size_t)(slash - path);
	if (n == 0)
		n = 1;		/* "/file" lives in "/" */
	if (n >= dirlen)
		return -1;
	memcpy(dir, path, n);
	dir[n] = '\0';
	return 0;
}

int
atomic_write_file(const char *path, const void *data, size_t len, mode_t mode, char *err,
    size_t errlen)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	struct stat st;
	int fd = -1, dfd, n;

	if (path == NULL || *path == '\0' || path[strlen(path) - 1] == '/') {
		snprintf(err, errlen, "invalid file name \"%s\"", path != NULL ? path : "");
		return -1;
	}
	/* Refuse early what rename would refuse late: a directory in the way. */
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s: is a directory", path);
		return -1;
	}
	n = snprintf(tmp, sizeof(tmp), "%s" TEMP_SUFFIX "XXXXXX", path);
	if (n < 0 || (size_t)n >= sizeof(tmp) || dir_of(path, dir, sizeof(dir)) == -1) {
		snprintf(err, errlen, "%s: file name too long", path);
		return -1;
	}
	if ((fd = mkstemp(tmp)) == -1) {
		snprintf(err, errlen, "%s: cannot create a temporary file: %s", path, strerror(errno));
		return -1;
	}
	if (fchmod(fd, mode) == -1) {
		snprintf(err, errlen, "%s: fchmod: %s", tmp, strerror(errno));
		goto fail;
	}
	if (write_all(fd, data, len) == -1) {
		snprintf(err, errlen, "%s: write: %s", tmp, strerror(errno));
		goto fail;
	}
	if (fsync(fd) == -1) {
		snprintf(err, errlen, "%s: fsync: %s", tmp, strerror(errno));
		goto fail;
	}
	if (close(fd) == -1) {
		fd = -1;
		snprintf(err, errlen, "%s: close: %s", tmp, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) == -1) {
		snprintf(err, errlen, "rename %s to %s: %s", tmp, path, strerror(errno));
		goto fail;
	}
	/* Make the rename itself durable. The new content is in place even if this fails. */
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "%s: open directory: %s", dir, strerror(errno));
		return -1;
	}
	if (fsync(dfd) == -1 && errno != EINVAL) {
		snprintf(err, errlen, "%s: fsync directory: %s", dir, strerror(errno));
		close(dfd);
		return -1;
	}
	close(dfd);
	return 0;

fail:
	if (fd != -1)
		close(fd);
	unlink(tmp);
	return -1;
}

int
atomic_remove_temps(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/'), *base = slash != NULL ? slash + 1 : path;
	size_t blen = strlen(base), slen = strlen(TEMP_SUFFIX);
	struct dirent *de;
	int removed = 0;
	DIR *d;

	if (dir_of(path, dir, sizeof(dir)) == -1 || (d = opendir(dir)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		if (strlen(de->d_name) == blen + slen + 6 && strncmp(de->d_name, base, blen) == 0 &&
		    strncmp(de->d_name + blen, TEMP_SUFFIX, slen) == 0 && unlinkat(dirfd(d), de->d_name, 0) == 0)
			removed++;
	}
	closedir(d);
	return removed;
}

int
read_file_capped(const char *path, size_t max, char **out, size_t *lenp, char *err, size_t errlen)
{
	struct stat st;
	char *data = NULL, *p;
	size_t len = 0, cap = 0;
	ssize_t n;
	int fd;

	*out = NULL;
	if (max > SIZE_MAX - 2)
		max = SIZE_MAX - 2;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		goto fail;
	}
	if (st.st_size > 0 && (unsigned long long)st.st_size > max) {
		snprintf(err, errlen, "%s: file exceeds %zu bytes", path, max);
		goto fail;
	}
	/* Read until EOF rather than trusting st_size: the file may grow while we read. */
	for (;;) {
		if (cap - len < 2) {
			size_t ncap = cap == 0 ? (size_t)st.st_size + 2 : cap * 2;

			if (ncap < 64)
				ncap = 64;
			if (ncap > max + 2)
				ncap = max + 2;
			if (ncap <= cap) {
				snprintf(err, errlen, "%s: file exceeds %zu bytes", path, max);
				goto fail;
			}
			if ((p = realloc(data, ncap)) == NULL) {
				snprintf(err, errlen, "%s: out of memory", path);
				goto fail;
			}
			data = p;
			cap = ncap;
		}
		n = read(fd, data + len, cap - len - 1);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			snprintf(err, errlen, "%s: read: %s", path, strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			snprintf(err, errlen, "%s: file exceeds %zu bytes", path, max);
			goto fail;
		}
	}
	close(fd);
	data[len] = '\0';
	*out = data;
	if (lenp != NULL)
		*lenp = len;
	return 0;

fail:
	free(data);
	close(fd);
	return -1;
}
