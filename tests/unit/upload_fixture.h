/* upload_fixture.h: what the upload unit programs (test_upload,
 * test_upload_form, test_upload_stage) share: a temporary directory per
 * run, files written into it, deterministic bytes and their SHA-256.
 * Include after cmocka.h. */
#ifndef TEST_UPLOAD_FIXTURE_H
#define TEST_UPLOAD_FIXTURE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "../../lib/src/sha256.h"

#define MiB (1ULL << 20)
#define TiB (1ULL << 40)

static char tmpdir[256];

static inline int
setup_tmp(void **state)
{
	(void)state;
	(void)snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_upload.XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static inline int
teardown_tmp(void **state)
{
	char cmd[300];
	(void)state;
	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static inline void
tpath(char *buf, size_t len, const char *rel)
{
	int n = snprintf(buf, len, "%s/%s", tmpdir, rel);
	assert_true(n > 0 && (size_t)n < len);
}

static inline void
write_file(const char *rel, const void *data, size_t len)
{
	char p[512];
	FILE *f;

	tpath(p, sizeof(p), rel);
	f = fopen(p, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Deterministic, moderately compressible bytes. */
static inline void
fill(unsigned char *b, size_t n, uint32_t seed)
{
	size_t i;
	for (i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		b[i] = (unsigned char)((seed >> 16) % 23 + 'a');
	}
}

static inline void
sha_hex_of(const void *data, size_t len, char out[CIVIS_SHA256_HEX_LEN])
{
	civis_sha256 s;
	unsigned char d[CIVIS_SHA256_LEN];
	civis__sha256_init(&s);
	civis__sha256_update(&s, data, len);
	civis__sha256_final(&s, d);
	civis__sha256_hex(d, out);
}

#endif
