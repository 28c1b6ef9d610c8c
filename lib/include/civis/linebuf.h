/* linebuf.h: split a byte stream into lines, with a cap per piece.
 *
 * Every line of the stream becomes one or more pieces handed to a callback:
 * - the newline is not part of the piece; a "\r" right before it is dropped
 *   too, also when the CR and the LF arrive in different feeds;
 * - a CR anywhere else is kept (progress bars), as part of the line;
 * - a line longer than the cap is cut into consecutive pieces of at most cap
 *   bytes; a cut never falls inside a valid UTF-8 character (it moves back
 *   to the character's first byte, at most 3 bytes);
 * - civis_linebuf_flush() hands over a partial line (no newline yet); an
 *   incomplete UTF-8 sequence at its end (at most 3 bytes) and a trailing CR
 *   are held back for the next piece, because the rest may still come;
 * - civis_linebuf_finish() is the end of the stream: everything held goes.
 * Empty lines are pieces of length 0. Bytes are passed through unchanged
 * (no UTF-8 repair here: logbatch does that on each piece).
 *
 * Whole lines found in the data given to civis_linebuf_feed() are handed to
 * the callback straight from that data (no copy); only a partial line at the
 * end of the data is copied into the linebuf (at most cap + 1 bytes held). */
#ifndef CIVIS_LINEBUF_H
#define CIVIS_LINEBUF_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct civis_linebuf civis_linebuf;

#define CIVIS_LINE_DEFAULT_CAP (64 * 1024)
#define CIVIS_LINE_MIN_CAP     4                   /* room for any UTF-8 character */
#define CIVIS_LINE_MAX_CAP     (64 * 1024 * 1024)

/* Piece flags. A piece with neither flag is a whole line. A line cut into
 * pieces gives: CONTINUES, CONTINUES|CONTINUATION..., CONTINUATION.
 * A piece of length 0 with flags == CONTINUATION only marks the end of a
 * line whose text was already handed over (a flush came right before its
 * newline, or the stream ended): a log consumer skips it. */
enum {
	CIVIS_LINE_CONTINUES    = 1, /* not the end of its line: more of it follows */
	CIVIS_LINE_CONTINUATION = 2  /* continues a previous piece of the same line */
};

/* One piece: `line` is valid only during the call, not NUL-terminated, never
 * contains '\n', len <= cap. Return 0 to go on, nonzero to stop: feed, flush
 * or finish then return that value at once (the rest of that feed's data is
 * dropped; the linebuf stays usable). */
typedef int (*civis_line_fn)(void *ud, const char *line, size_t len, unsigned flags);

/* cap: the most bytes in one piece; 0 means CIVIS_LINE_DEFAULT_CAP.
 * CIVIS_EINVAL when cap is below CIVIS_LINE_MIN_CAP or above CIVIS_LINE_MAX_CAP. */
int    civis_linebuf_new(civis_linebuf **out, size_t cap);
void   civis_linebuf_free(civis_linebuf *lb);

/* Split data (any length, any chunking) and call fn for every piece that is
 * complete. Returns CIVIS_OK or the callback's nonzero value. */
int    civis_linebuf_feed(civis_linebuf *lb, const char *data, size_t len,
                          civis_line_fn fn, void *ud);

/* Hand over the partial line held, if any (flag CONTINUES: its line goes
 * on), except a trailing CR and an incomplete UTF-8 sequence at its end,
 * which stay held. The agent calls this once a line has waited the flush
 * interval. */
int    civis_linebuf_flush(civis_linebuf *lb, civis_line_fn fn, void *ud);

/* End of the stream: hand over everything held as the last piece of its
 * line (no CONTINUES), or a zero-length CONTINUATION piece when a flush
 * already handed all of the unterminated line over. Then the linebuf is
 * empty and can take a new stream. */
int    civis_linebuf_finish(civis_linebuf *lb, civis_line_fn fn, void *ud);

/* Bytes held (partial line, held-back UTF-8 tail and CR). */
size_t civis_linebuf_pending(const civis_linebuf *lb);

/* The cap in effect. */
size_t civis_linebuf_cap(const civis_linebuf *lb);

#ifdef __cplusplus
}
#endif
#endif
