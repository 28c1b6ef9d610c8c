/* redact.h: streaming secret masking for the run log.
 *
 * A civis_redact is a set of secret byte strings ("patterns"). For every
 * secret registered, its common encodings are registered too:
 *   - the secret itself;
 *   - JSON-escaped (\" \\ \n \r \t \b \f, other controls \u00xx in lower
 *     case, plus the variants with "/" as "\/" and with \u00XX in upper case);
 *   - URL-encoded per RFC 3986 (every byte but A-Z a-z 0-9 - . _ ~ as %XX),
 *     with upper- and lower-case hex, and with space as %20 or as '+';
 *   - base64, standard and URL-safe alphabets: the whole secret encoded with
 *     and without padding, and, for the secret starting at byte 0, 1 or 2 of
 *     a base64 group, the run of characters fully determined by the secret
 *     (what shows when the secret is embedded in a longer encoded value,
 *     e.g. base64("user:" + password)).
 * A secret that contains '\n' is registered whole and line by line (each
 * line, with and without a trailing '\r', with its encodings).
 * Values shorter than CIVIS_REDACT_MIN_LEN bytes are ignored: they match too
 * much ordinary text to be masked usefully.
 *
 * A civis_redact_stream masks one byte stream: every occurrence of any
 * pattern becomes "[REDACTED]", and occurrences that overlap or touch are
 * merged into a single "[REDACTED]". The output is the same for any way the
 * input is cut into feeds. Only bytes that could still be the start of a
 * secret are held back (at most the longest pattern's length - 1 bytes);
 * everything else goes to the output function at once.
 *
 * A flush (the caller flushes when the stream has been idle, and at its end)
 * never releases held bytes raw: from the first held byte that could begin
 * a secret on, they go out as "[REDACTED]" (merged with a token just before
 * them), and the stream keeps them as the possible start of a match. When
 * the rest of the secret follows, it is masked too and joins that token; no
 * piece of the secret shows on either side of the flush. When something
 * else follows, the text after the flush comes out as usual; the price is
 * that the held bytes were masked although they were no secret (at most
 * max_len - 1 bytes that begin like one). At the end of the stream the
 * final flush does the same: a writer killed in the middle of a secret
 * leaves exactly its first bytes, and they are masked.
 *
 * Not covered: JSON encoders that escape non-ASCII as \uXXXX, URL encoders
 * that keep other characters than RFC 3986's unreserved ones (a secret with
 * such characters shows in a different form there), other encodings.
 *
 * Speed: Wu-Manber over the patterns' first 6 bytes, roughly 0.6-0.9 GB/s
 * with 50 secrets on log text or base64 (tests/bench/bench_redact.c). A
 * periodic secret ("aaaaaab") against text made of its period costs
 * O(text length x secret length).
 *
 * The set is shared by any number of streams. Secrets may be added while
 * streams use it (civis_redact_add_secret): each stream masks them in the
 * bytes it is fed after the call (and in bytes it still holds). Build and
 * grow the set from the thread that feeds the streams, or with none of them
 * running: registration is not thread-safe, and it replaces the tables the
 * streams read. Matching alone is thread-safe (streams on different threads
 * may share a set nobody adds to). */
#ifndef CIVIS_REDACT_H
#define CIVIS_REDACT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CIVIS_REDACT_TOKEN      "[REDACTED]"
#define CIVIS_REDACT_TOKEN_LEN  10
/* Values shorter than this are not masked. */
#define CIVIS_REDACT_MIN_LEN    6
/* A value longer than this is registered as overlapping pieces of
 * CIVIS_REDACT_PIECE bytes (each piece with its encodings); an occurrence of
 * the whole value still becomes one "[REDACTED]" since the pieces touch. */
#define CIVIS_REDACT_MAX_SECRET 8192
#define CIVIS_REDACT_PIECE      4095
/* Cap on the bytes of all patterns together (encodings included); beyond it
 * civis_redact_add fails with CIVIS_ETOOBIG. */
#define CIVIS_REDACT_MAX_TOTAL  (4u << 20)

typedef struct civis_redact civis_redact;

int  civis_redact_new(civis_redact **out);
void civis_redact_free(civis_redact *r);

/* Register a secret and its encodings. Fewer than CIVIS_REDACT_MIN_LEN bytes:
 * ignored, returns CIVIS_OK. CIVIS_ETOOBIG when CIVIS_REDACT_MAX_TOTAL would
 * be passed (what fitted stays registered), CIVIS_ENOMEM. */
int  civis_redact_add(civis_redact *r, const char *secret, size_t len);

/* Add a secret at run time (the job API "civis-agent mask"): the bytes every
 * stream of r is fed after the call, and civis_redact_string calls, are
 * masked wherever value shows in any form above. CIVIS_EINVAL when value
 * has fewer than CIVIS_REDACT_MIN_LEN bytes (refused, unlike
 * civis_redact_add which ignores it: the caller asked for it to be masked
 * and must hear that it is not) or is NULL; CIVIS_ETOOBIG, CIVIS_ENOMEM as
 * civis_redact_add (what fitted stays registered). */
int  civis_redact_add_secret(civis_redact *r, const char *value, size_t len);

/* Whether an environment variable of this name holds a secret:
 * CIVIS_API_KEY always; any of the n fnmatch(3) glob patterns (--redact);
 * with use_defaults, the default names: *PASSWORD*, *SECRET*, *TOKEN*,
 * *PASSWD*, *_PASS, *_PWD, API_KEY, APIKEY, *_API_KEY, *_APIKEY,
 * *PRIVATE_KEY, *_ACCESS_KEY, *_SSH_KEY - except names that end in _FILE,
 * _FILES, _PATH or _DIR (a path to a secret is none) or contain TOKENIZER.
 * Names are compared case-insensitively. Returns 1 or 0. */
int  civis_redact_name_is_secret(const char *name, const char *const *patterns,
                                 size_t n, int use_defaults);

/* Register the value of every "NAME=VALUE" entry of envp (NULL-terminated)
 * whose NAME civis_redact_name_is_secret accepts. Entries without '=' are
 * skipped. Returns CIVIS_OK or the first error of civis_redact_add (it goes
 * on with the other variables after CIVIS_ETOOBIG). */
int  civis_redact_add_env(civis_redact *r, char *const *envp,
                          const char *const *patterns, size_t npatterns,
                          int use_defaults);

/* Patterns registered (secrets and their distinct encodings). */
size_t civis_redact_count(const civis_redact *r);
/* Length of the longest pattern (0 when none). */
size_t civis_redact_max_len(const civis_redact *r);
/* Bytes of memory the set holds (patterns and match tables). */
size_t civis_redact_memory(const civis_redact *r);

/* Output function of a stream: CIVIS_OK, or a negative civis_status that the
 * feed or flush returns at once (the stream is then unusable: free it). */
typedef int (*civis_redact_out_fn)(void *ud, const char *data, size_t len);

typedef struct civis_redact_stream civis_redact_stream;

/* r must outlive the stream. */
int  civis_redact_stream_new(civis_redact_stream **out, const civis_redact *r);
void civis_redact_stream_free(civis_redact_stream *s);

/* Mask in[0..len) and pass what is decided to out (possibly in several calls,
 * text between secrets straight from in, without a copy). With no pattern
 * registered, out is called once with in itself and nothing is held. */
int  civis_redact_stream_feed(civis_redact_stream *s, const char *in, size_t len,
                              civis_redact_out_fn out, void *ud);
/* Pass out every held byte: masked as far as the bytes seen allow, and from
 * the first one that could begin a secret on as "[REDACTED]" (see above).
 * The stream keeps its state: call it when idle and at the end alike.
 * Afterwards civis_redact_stream_held() is 0. */
int  civis_redact_stream_flush(civis_redact_stream *s, civis_redact_out_fn out,
                               void *ud);
/* Bytes fed but not yet passed to out. */
size_t civis_redact_stream_held(const civis_redact_stream *s);

/* Mask every secret of the NUL-terminated in, writing the result,
 * NUL-terminated, into buf (buflen > 0). in may be buf itself. The whole
 * string is masked first and only then cut to fit, so a secret crossing the
 * cut never shows its start; a cut never splits a "[REDACTED]". Returns
 * CIVIS_ETOOBIG when the result was cut (still NUL-terminated). A string
 * is complete: a prefix of a secret at its end is left as it is. */
int  civis_redact_string(const civis_redact *r, const char *in, char *buf,
                         size_t buflen);

/* The same for in[0..len) (any bytes, NUL included): the masked result, cut
 * to fit, goes to out[0..outcap) (not NUL-terminated), its length to
 * *outlen. CIVIS_ETOOBIG when it was cut, CIVIS_EINVAL, CIVIS_ENOMEM. in and
 * out may overlap. */
int  civis_redact_buf(const civis_redact *r, const char *in, size_t len, char *out,
                      size_t outcap, size_t *outlen);

/* Format like snprintf, mask the whole formatted text, then cut it to
 * buf[0..buflen) (NUL-terminated, buflen > 0): what agent messages need,
 * since formatting into a fixed buffer first would cut a secret before it
 * can be recognised. r NULL: no masking. CIVIS_ETOOBIG when cut,
 * CIVIS_EINVAL on a bad format or argument, CIVIS_ENOMEM. The formatted
 * text may have up to 1 MiB. */
int  civis_redact_format(const civis_redact *r, char *buf, size_t buflen,
                         const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#ifdef __cplusplus
}
#endif
#endif
