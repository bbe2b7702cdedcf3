/*
 * test_lib_atomicfile.c - atomic_write_file and read_file_capped: content, mode, and the old file left
 * intact (with no temp file behind) whenever a write fails; atomic_remove_temps removes only temp files.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "atomicfile.h"

struct fx {
	char dir[64];
	char path[128];
};

static int
setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if (fx == NULL)
		return -1;
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/test_lib_atomicfile.XXXXXX");
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	snprintf(fx->path, sizeof(fx->path), "%s/key.pem", fx->dir);
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *fx = *state;
	char cmd[128];

	chmod(fx->dir, 0700);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
	if (system(cmd) != 0)
		return -1;
	free(fx);
	return 0;
}

/* Number of entries in dir besides . and .. */
static int
count_entries(const char *dir)
{
	struct dirent *de;
	DIR *d = opendir(dir);
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static void
assert_content(const char *path, const char *want)
{
	char err[256], *data;
	size_t len;

	assert_int_equal(read_file_capped(path, 1 << 20, &data, &len, err, sizeof(err)), 0);
	assert_int_equal(len, strlen(want));
	assert_string_equal(data, want);
	free(data);
}

static void
test_write_new_and_replace(void **state)
{
	struct fx *fx = *state;
	struct stat st;
	char err[256];

	assert_int_equal(atomic_write_file(fx->path, "first", 5, 0600, err, sizeof(err)), 0);
	assert_content(fx->path, "first");
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	/* Replace: new content, the mode asked for (not the umask), no temp file left. */
	assert_int_equal(atomic_write_file(fx->path, "second version", 14, 0644, err, sizeof(err)), 0);
	assert_content(fx->path, "second version");
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(count_entries(fx->dir), 1);
	/* Empty content is a valid file. */
	assert_int_equal(atomic_write_file(fx->path, "", 0, 0600, err, sizeof(err)), 0);
	assert_content(fx->path, "");
}

static void
test_large_content(void **state)
{
	struct fx *fx = *state;
	size_t n = 3 * 1024 * 1024 + 7, i, len;
	char err[256], *data, *back;

	data = malloc(n);
	assert_non_null(data);
	for (i = 0; i < n; i++)
		data[i] = (char)(i * 31 + 7);
	assert_int_equal(atomic_write_file(fx->path, data, n, 0600, err, sizeof(err)), 0);
	assert_int_equal(read_file_capped(fx->path, n, &back, &len, err, sizeof(err)), 0);
	assert_int_equal(len, n);
	assert_memory_equal(back, data, n);
	free(back);
	/* One byte under the size: refused. */
	assert_int_equal(read_file_capped(fx->path, n - 1, &back, &len, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "exceeds"));
	assert_null(back);
	free(data);
}

static void
test_target_is_directory(void **state)
{
	struct fx *fx = *state;
	char err[256];

	assert_int_equal(mkdir(fx->path, 0700), 0);
	assert_int_equal(atomic_write_file(fx->path, "x", 1, 0600, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "directory"));
	/* Only the directory itself: no temp file behind. */
	assert_int_equal(count_entries(fx->dir), 1);
	assert_int_equal(rmdir(fx->path), 0);
}

static void
test_missing_directory(void **state)
{
	struct fx *fx = *state;
	char err[256], path[192];

	snprintf(path, sizeof(path), "%s/nope/key.pem", fx->dir);
	assert_int_equal(atomic_write_file(path, "x", 1, 0600, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "temporary"));
	assert_int_equal(atomic_write_file("", "x", 1, 0600, err, sizeof(err)), -1);
	assert_int_equal(atomic_write_file("/tmp/", "x", 1, 0600, err, sizeof(err)), -1);
}

/* Tries the write in a child that dropped root (root ignores directory permissions). */
static int
write_as_nobody(const char *path)
{
	char err[256];
	pid_t pid;
	int status;

	if ((pid = fork()) == 0) {
		if (setgid(65534) == -1 || setuid(65534) == -1)
			_exit(2);
		_exit(atomic_write_file(path, "new", 3, 0600, err, sizeof(err)) == -1 ? 0 : 1);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void
test_readonly_dir_keeps_old(void **state)
{
	struct fx *fx = *state;
	char err[256];

	assert_int_equal(atomic_write_file(fx->path, "old", 3, 0644, err, sizeof(err)), 0);
	assert_int_equal(chmod(fx->dir, 0555), 0);
	if (geteuid() == 0) {
		assert_int_equal(write_as_nobody(fx->path), 0);
	} else {
		assert_int_equal(atomic_write_file(fx->path, "new", 3, 0600, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "temporary"));
	}
	assert_content(fx->path, "old");
	assert_int_equal(chmod(fx->dir, 0700), 0);
	assert_int_equal(count_entries(fx->dir), 1);
}

/* A write that fails half way (file size limit, works as root too): old file intact, no temp file. */
static void
test_write_fails_midway(void **state)
{
	struct fx *fx = *state;
	struct rlimit old, lim;
	void (*prev)(int);
	char err[256], data[8192];
	int rc;

	assert_int_equal(atomic_write_file(fx->path, "old content", 11, 0600, err, sizeof(err)), 0);
	memset(data, 'n', sizeof(data));
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 4096;
	prev = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	rc = atomic_write_file(fx->path, data, sizeof(data), 0600, err, sizeof(err));
	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, prev);
	assert_int_equal(rc, -1);
	assert_non_null(strstr(err, "write"));
	assert_content(fx->path, "old content");
	assert_int_equal(count_entries(fx->dir), 1);
}

static void
test_read_errors(void **state)
{
	struct fx *fx = *state;
	char err[256], *data = (char *)1;
	size_t len;

	assert_int_equal(read_file_capped(fx->path, 100, &data, &len, err, sizeof(err)), -1);
	assert_null(data);
	assert_non_null(strstr(err, "No such file"));
	assert_int_equal(read_file_capped(fx->dir, 100, &data, &len, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not a regular file"));
}

static void
touch(const char *dir, const char *name)
{
	char p[256];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	assert_non_null(f = fopen(p, "w"));
	fclose(f);
}

/* Only the temp files of this path (<path>.tmp. + mkstemp's 6 characters) go; the file itself and others stay. */
static void
test_remove_temps(void **state)
{
	struct fx *fx = *state;
	char err[256];

	assert_int_equal(atomic_write_file(fx->path, "new", 3, 0600, err, sizeof(err)), 0);
	touch(fx->dir, "key.pem.tmp.a1B2c3");
	touch(fx->dir, "key.pem.tmp.ZZZZZZ");
	touch(fx->dir, "key.pem.tmp.short");		/* not mkstemp's */
	touch(fx->dir, "key.pem.tmp.toolong1");
	touch(fx->dir, "other.pem.tmp.a1B2c3");		/* another file's */
	touch(fx->dir, "key.pem.bak");
	assert_int_equal(atomic_remove_temps(fx->path), 2);
	assert_int_equal(count_entries(fx->dir), 5);
	assert_content(fx->path, "new");
	assert_int_equal(atomic_remove_temps(fx->path), 0);
	assert_int_equal(atomic_remove_temps("/nonexistent-dir-of-test/key.pem"), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_write_new_and_replace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_content, setup, teardown),
		cmocka_unit_test_setup_teardown(test_target_is_directory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_directory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readonly_dir_keeps_old, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_fails_midway, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove_temps, setup, teardown),
	};

	return cmocka_run_group_tests_name("lib_atomicfile", tests, NULL, NULL);
}
