/* upload_prep.c: classify, name and open a path the job names (see
 * upload_prep.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "civis/civis.h"
#include "outputs.h"
#include "upload_prep.h"

static int
base_name(char *buf, size_t len, const char *path)
{
	size_t n = strlen(path), start;

	while (n > 1 && path[n - 1] == '/')
		n--;
	start = n;
	while (start > 0 && path[start - 1] != '/')
		start--;
	if (n - start >= len)
		return -1;
	memcpy(buf, path + start, n - start);
	buf[n - start] = '\0';
	return 0;
}

/* The last component to name it by; "." and ".." by their real path. */
static int
name_base(char *base, size_t len, const char *path, char *reason, size_t reasonlen)
{
	char *real;

	if (base_name(base, len, path) != 0) {
		snprintf(reason, reasonlen, "the name is too long");
		return -1;
	}
	if (strcmp(base, ".") != 0 && strcmp(base, "..") != 0 && strcmp(base, "/") != 0)
		return 0;
	real = realpath(path, NULL);
	if (real == NULL || base_name(base, len, real) != 0 || strcmp(base, "/") == 0) {
		free(real);
		snprintf(reason, reasonlen, "cannot derive a name from this path: give --name");
		return -1;
	}
	free(real);
	return 0;
}

int
agent_upload_prepare(agent_upload_prep *p, const char *path, const char *name_opt, int gzip,
                  const civis_redact *r, char *reason, size_t reasonlen)
{
	char base[PATH_MAX], name[AGENT_OUTPUTS_NAME_MAX];
	const char *suffix = NULL;
	struct stat sb;

	memset(p, 0, sizeof(*p));
	if (stat(path, &sb) != 0) {
		snprintf(reason, reasonlen, "%s", strerror(errno));
		return CIVIS_ENOTFOUND;
	}
	if (S_ISDIR(sb.st_mode)) {
		p->kind = CIVIS_UPLOAD_TARGZ;
		suffix = ".tar.gz";
	} else if (S_ISREG(sb.st_mode)) {
		p->kind = gzip ? CIVIS_UPLOAD_GZIP : CIVIS_UPLOAD_FILE;
		suffix = gzip ? ".gz" : NULL;
		if (!gzip && agent_outputs_check_size((uint64_t)sb.st_size, reason, reasonlen) != CIVIS_OK)
			return CIVIS_ETOOBIG;
	} else {
		snprintf(reason, reasonlen, "%s", agent_outputs_type_text(sb.st_mode));
		return CIVIS_EINVAL;
	}
	if (name_opt != NULL) {
		if (agent_outputs_civis_name(name, sizeof(name), name_opt, NULL) != CIVIS_OK) {
			snprintf(reason, reasonlen, "the name is too long");
			return CIVIS_ETOOBIG;
		}
	} else if (name_base(base, sizeof(base), path, reason, reasonlen) != 0) {
		return CIVIS_EINVAL;
	} else if (agent_outputs_civis_name(name, sizeof(name), base, suffix) != CIVIS_OK) {
		snprintf(reason, reasonlen, "the name is too long");
		return CIVIS_ETOOBIG;
	}
	if (agent_outputs_name_has_secret(r, name)) {
		snprintf(reason, reasonlen, "%s", AGENT_OUTPUTS_SECRET_NAME);
		return CIVIS_EUNSAFE;
	}
	p->name = strdup(name);
	if (p->name == NULL) {
		snprintf(reason, reasonlen, "out of memory");
		return CIVIS_ENOMEM;
	}
	p->dev = sb.st_dev;
	p->ino = sb.st_ino;
	return CIVIS_OK;
}

int
agent_upload_prep_open(const agent_upload_prep *p, const char *path, char *reason,
                       size_t reasonlen)
{
	struct stat sb;
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);

	if (fd < 0) {
		snprintf(reason, reasonlen, "%s", strerror(errno));
		return -1;
	}
	if (fstat(fd, &sb) != 0 || sb.st_dev != p->dev || sb.st_ino != p->ino) {
		(void)close(fd);
		snprintf(reason, reasonlen, "replaced while the upload started: not uploaded");
		return -1;
	}
	return fd;
}

void
agent_upload_prep_dispose(agent_upload_prep *p)
{
	free(p->name);
	memset(p, 0, sizeof(*p));
}
