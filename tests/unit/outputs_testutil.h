/* outputs_testutil.h: helpers shared by the outputs unit programs: notes
 * collected from the module, temporary trees. Include after cmocka.h. */
#ifndef OUTPUTS_TESTUTIL_H
#define OUTPUTS_TESTUTIL_H

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */

#define MAX_NOTES 256

static char *notes[MAX_NOTES];
static size_t nnotes;

static inline void
notes_clear(void)
{
	size_t i;

	for (i = 0; i < nnotes; i++)
		free(notes[i]);
	nnotes = 0;
}

static inline void
collect_note(void *ud, const char *level, const char *text)
{
	char buf[4096];

	(void)ud;
	assert_null(strchr(text, '\n'));
	snprintf(buf, sizeof(buf), "%s: %s", level, text);
	if (nnotes < MAX_NOTES)
		notes[nnotes++] = strdup(buf);
}

static inline int
has_note(const char *text)
{
	size_t i;

	for (i = 0; i < nnotes; i++)
		if (strcmp(notes[i], text) == 0)
			return 1;
	return 0;
}

static inline int
has_note_part(const char *part)
{
	size_t i;

	for (i = 0; i < nnotes; i++)
		if (strstr(notes[i], part) != NULL)
			return 1;
	return 0;
}

static inline void
dump_notes(void)
{
	size_t i;

	for (i = 0; i < nnotes; i++)
		fprintf(stderr, "  note: %s\n", notes[i]);
}

static inline char *
make_tmpdir(void)
{
	char tmpl[] = "/tmp/test_outputs.XXXXXX";
	char *d = mkdtemp(tmpl);

	assert_non_null(d);
	return strdup(d);
}

static inline void
put_file(const char *dir, const char *rel, const char *content)
{
	char path[PATH_MAX * 2];
	int fd;
	size_t n = strlen(content);

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, n), (ssize_t)n);
	assert_int_equal(close(fd), 0);
}

static inline void
make_dir(const char *dir, const char *rel)
{
	char path[PATH_MAX * 2];

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	assert_int_equal(mkdir(path, 0755), 0);
}

static inline void
rm_rf(const char *dir)
{
	char cmd[PATH_MAX + 32];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

#endif
