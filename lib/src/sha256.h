/* sha256.h: SHA-256 (FIPS 180-4), private to libcivis.
 * Used to report a digest of every uploaded file; no crypto library is a
 * dependency, and a digest of bytes we send needs no constant-time code. */
#ifndef CIVIS_SHA256_H
#define CIVIS_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define CIVIS_SHA256_LEN     32
#define CIVIS_SHA256_HEX_LEN 65  /* 64 hex digits + NUL */

typedef struct civis_sha256 {
	uint32_t h[8];
	uint64_t nbytes;        /* message length so far, in bytes */
	unsigned char buf[64];  /* partial block */
	size_t nbuf;
} civis_sha256;

void civis__sha256_init(civis_sha256 *s);
void civis__sha256_update(civis_sha256 *s, const void *data, size_t len);
/* Writes the 32-byte digest; s must be initialised again before reuse. */
void civis__sha256_final(civis_sha256 *s, unsigned char out[CIVIS_SHA256_LEN]);
/* Lower-case hex of a digest, NUL-terminated. */
void civis__sha256_hex(const unsigned char dig[CIVIS_SHA256_LEN],
                       char out[CIVIS_SHA256_HEX_LEN]);

#ifdef CIVIS_UNITTEST
/* 0: use the portable code; otherwise the CPU's SHA extensions when it has
 * them. Returns 1 when the extensions are in use. */
int civis__sha256_set_ni(int on);
#endif

#endif
