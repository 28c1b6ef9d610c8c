/* sha256.h: SHA-256 of uploads, private to libcivis.
 *
 * The digest comes from OpenSSL's libcrypto (which libcurl loads anyway),
 * dlopen()ed on the first use the way dl.c takes libcurl: a run that
 * uploads nothing does not map it. lib/src/dl_crypto.c. */
#ifndef CIVIS_SHA256_H
#define CIVIS_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define CIVIS_SHA256_LEN     32
#define CIVIS_SHA256_HEX_LEN 65  /* 64 hex digits + NUL */

typedef struct civis_sha256 {
	void *ctx;              /* libcrypto's EVP_MD_CTX; NULL when not started */
} civis_sha256;

/* Start a digest (loading libcrypto the first time). CIVIS_OK; CIVIS_ESYS
 * when libcrypto cannot be loaded (civis__sha256_error() says why);
 * CIVIS_ENOMEM. Thread-safe. On failure s->ctx is NULL. */
int  civis__sha256_init(civis_sha256 *s);
void civis__sha256_update(civis_sha256 *s, const void *data, size_t len);
/* Writes the 32-byte digest and ends s (init it again before reuse). */
void civis__sha256_final(civis_sha256 *s, unsigned char out[CIVIS_SHA256_LEN]);
/* Ends a digest that will not be finished; safe on an ended one. */
void civis__sha256_dispose(civis_sha256 *s);
/* Lower-case hex of a digest, NUL-terminated. */
void civis__sha256_hex(const unsigned char dig[CIVIS_SHA256_LEN],
                       char out[CIVIS_SHA256_HEX_LEN]);
/* Why libcrypto could not be loaded ("" when it was). */
const char *civis__sha256_error(void);

#endif
