/* tls.c: the CA bundle choice (see tls.h for the order and the reasons). */
#include "tls_int.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LAYER_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

static const char *const system_bundles[] = {
	"/etc/ssl/certs/ca-certificates.crt", /* Debian, Ubuntu, Alpine */
	"/etc/pki/tls/certs/ca-bundle.crt",   /* RHEL, Fedora */
	"/etc/ssl/cert.pem",                  /* Alpine, macOS */
	NULL
};

/* Whether path is a regular file (after symlinks) this process can open.
 * open+fstat rather than access(): access() checks the real uid, libcurl
 * opens with the effective one. */
static int
readable_file(const char *path)
{
	struct stat st;
	int fd, ok;

	if (path == NULL || path[0] == '\0')
		return 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return 0;
	ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
	close(fd);
	return ok;
}

/* Cut the last path component off p (in place); 0 when there is none. */
static int
cut_last(char *p)
{
	char *slash = strrchr(p, '/');

	if (slash == NULL)
		return 0;
	*slash = '\0';
	return 1;
}

/* <exe's grandparent>/etc/ssl/certs/ca-certificates.crt into buf, when it
 * fits and is readable. */
static const char *
layer_bundle(char *buf, size_t len, const char *exe)
{
	char prefix[PATH_MAX];
	size_t n;
	int w;

	if (exe == NULL || exe[0] != '/')
		return NULL;
	n = strlen(exe);
	if (n >= sizeof(prefix))
		return NULL;
	memcpy(prefix, exe, n + 1);
	if (!cut_last(prefix) || !cut_last(prefix)) /* NOLINT(misc-redundant-expression): two levels up, on purpose */
		return NULL;
	w = snprintf(buf, len, "%s%s", prefix, LAYER_BUNDLE);
	if (w < 0 || (size_t)w >= len)
		return NULL;
	return readable_file(buf) ? buf : NULL;
}

static const char *
choose(char *buf, size_t len, const char *const *sys, const char *exe)
{
	const char *env;
	const char *r;
	size_t i;

	env = getenv("CURL_CA_BUNDLE");
	if (env != NULL && env[0] != '\0' && readable_file(env))
		return env;
	env = getenv("SSL_CERT_FILE");
	if (env != NULL && env[0] != '\0')
		return env;
	for (i = 0; sys != NULL && sys[i] != NULL; i++)
		if (readable_file(sys[i]))
			return sys[i];
	if (buf == NULL || len == 0)
		return NULL;
	r = layer_bundle(buf, len, exe);
	if (r == NULL)
		buf[0] = '\0';
	return r;
}

const char *
civis_tls_ca_file(char *buf, size_t len)
{
	char exe[PATH_MAX];
	ssize_t n;

	n = readlink("/proc/self/exe", exe, sizeof(exe));
	if (n <= 0 || (size_t)n >= sizeof(exe))
		n = 0;  /* no /proc, or a path too long to trust: no layer bundle */
	exe[n] = '\0';
	return choose(buf, len, system_bundles, n > 0 ? exe : NULL);
}

#ifdef CIVIS_UNITTEST
const char *
civis__tls_ca_file_from(char *buf, size_t len, const char *const *system_paths,
                        const char *exe)
{
	return choose(buf, len, system_paths, exe);
}
#endif
