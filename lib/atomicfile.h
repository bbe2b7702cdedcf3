/*
 * atomicfile.h - files other programs read (certificates, keys, haproxy.cfg) written so that a reader
 * sees either the whole old content or the whole new content, never a mix or half of it.
 */
#ifndef HC_ATOMICFILE_H
#define HC_ATOMICFILE_H

#include <stddef.h>
#include <sys/types.h>

/*
 * Writes data to path atomically: a temp file in the same directory (mkstemp), fchmod(mode), write all,
 * fsync, rename over path, fsync the directory. Returns 0, or -1 with err filled; on error the temp file
 * is removed and an existing file at path is left untouched.
 */
int atomic_write_file(const char *path, const void *data, size_t len, mode_t mode, char *err,
    size_t errlen);

/*
 * Removes the temp files atomic_write_file leaves for path when its process is killed mid-write. Only
 * for a caller that knows no writer of path is running. Returns how many it removed, or -1 when the
 * directory cannot be read.
 */
int atomic_remove_temps(const char *path);

/*
 * Reads a whole regular file into a fresh NUL-terminated buffer (*out, freed by the caller, *lenp bytes
 * without the NUL). A file bigger than max bytes is an error. Returns 0, or -1 with err filled.
 */
int read_file_capped(const char *path, size_t max, char **out, size_t *lenp, char *err, size_t errlen);

#endif
