/* lines.c: masking, lines and the agent's own notes. See logstream_int.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "civis/level.h"
#include "logstream_int.h"

static int
on_line(void *ud, const char *line, size_t len, unsigned flags)
{
	struct stream *s = ud;
	agent_logstream *ls = s->ls;
	const char *level = ls->o.level[s->id];

	/* The end of a line whose text a flush already handed over. */
	if (len == 0 && (flags & CIVIS_LINE_CONTINUATION) && !(flags & CIVIS_LINE_CONTINUES))
		return 0;
	ls->stats.lines++;
	/* A line's pieces keep the level its first piece gave it. */
	if ((flags & CIVIS_LINE_CONTINUATION) && s->line_level) {
		level = s->line_level;
	} else if (ls->o.detect_levels) {
		const char *d = civis_level_name(civis_level_detect(line, len));

		if (d)
			level = d;
	}
	s->line_level = (flags & CIVIS_LINE_CONTINUES) ? level : NULL;
	agent_ls_emit(ls, level, line, len, s->read_ns);
	return 0;
}

static int
redacted_out(void *ud, const char *data, size_t len)
{
	struct stream *s = ud;

	return civis_linebuf_feed(s->lb, data, len, on_line, s);
}

void
agent_lines_feed(struct stream *s, const char *data, size_t len)
{
	agent_logstream *ls = s->ls;

	if (!ls->run)
		return;
	if (s->rs)
		(void)civis_redact_stream_feed(s->rs, data, len, redacted_out, s);
	else
		(void)civis_linebuf_feed(s->lb, data, len, on_line, s);
	if (s->partial_since == 0 &&
	    (civis_linebuf_pending(s->lb) > 0 || (s->rs && civis_redact_stream_held(s->rs) > 0)))
		s->partial_since = civis_now_ns();
	else if (civis_linebuf_pending(s->lb) == 0 && !(s->rs && civis_redact_stream_held(s->rs) > 0))
		s->partial_since = 0;
}

void
agent_lines_flush(struct stream *s)
{
	if (s->rs)
		(void)civis_redact_stream_flush(s->rs, redacted_out, s);
	(void)civis_linebuf_flush(s->lb, on_line, s);
	s->partial_since = 0;
}

void
agent_lines_finish(struct stream *s)
{
	if (s->finished || !s->ls->run)
		return;
	s->finished = 1;
	if (s->rs)
		(void)civis_redact_stream_flush(s->rs, redacted_out, s);
	(void)civis_linebuf_finish(s->lb, on_line, s);
	s->partial_since = 0;
}

/* ---------------------------------------------------------------- notes */

#define NOTE_FORMAT_MAX (1u << 20)   /* a formatted note, before masking, at most */

static void
note_to_log(agent_logstream *ls, const char *level, const char *text, size_t len)
{
	if (!ls->run || civis_run_auth_dead(ls->run))
		return;
	agent_ls_emit(ls, level, text, len, civis_clock_realtime_ns());
}

/* Without a trailing UTF-8 sequence that a cut left incomplete. */
static size_t
utf8_whole(const char *s, size_t len)
{
	size_t i = len, need;
	unsigned char c;

	while (i > 0 && len - i < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
		i--;
	if (i == 0)
		return len;
	c = (unsigned char)s[i - 1];
	need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
	return need > 1 && len - (i - 1) < need ? i - 1 : len;
}

/* Mask all of text[0..len), then cut the result to out (NOTE_MAX bytes with
 * its NUL): a secret crossing the cut never shows its start. The length, or
 * -1 when masking failed (then say nothing). */
static long
mask_cut(agent_logstream *ls, const char *text, size_t len, char *out)
{
	size_t n = len < NOTE_MAX - 1 ? len : NOTE_MAX - 1;
	int rc = CIVIS_OK;

	if (ls->o.redact)
		rc = civis_redact_buf(ls->o.redact, text, len, out, NOTE_MAX - 1, &n);
	else
		memcpy(out, text, n);
	if (rc != CIVIS_OK && rc != CIVIS_ETOOBIG)
		return -1;
	if (rc == CIVIS_ETOOBIG || n < len)
		n = utf8_whole(out, n);
	out[n] = '\0';
	return (long)n;
}

/* Format "civis-agent: " + fmt whole (up to NOTE_FORMAT_MAX), mask, cut:
 * to stderr unless log_only, and to the run log. */
static void
vnote(agent_logstream *ls, const char *level, int log_only, const char *fmt, va_list ap)
{
	static const char prefix[] = "civis-agent: ";
	char small[NOTE_MAX], out[NOTE_MAX], *text = small;
	va_list ap2;
	long n;
	int len;

	va_copy(ap2, ap);
	len = vsnprintf(small + sizeof(prefix) - 1, sizeof(small) - sizeof(prefix) + 1, fmt, ap);
	if (len < 0)
		goto out;
	if ((size_t)len >= sizeof(small) - sizeof(prefix) + 1) {
		if ((size_t)len > NOTE_FORMAT_MAX)
			len = NOTE_FORMAT_MAX;
		text = malloc(sizeof(prefix) + (size_t)len);
		if (!text)
			goto out;    /* cutting before masking could show a secret's start */
		(void)vsnprintf(text + sizeof(prefix) - 1, (size_t)len + 1, fmt, ap2);
	}
	memcpy(text, prefix, sizeof(prefix) - 1);
	n = mask_cut(ls, text, sizeof(prefix) - 1 + (size_t)len, out);
	if (n < 0)
		goto out;
	if (!log_only && !agent_tee_note(ls, out, (size_t)n))
		fprintf(stderr, "%s\n", out);
	note_to_log(ls, level, out, (size_t)n);
out:
	va_end(ap2);
	if (text != small)
		free(text);
}

void
agent_logstream_note_log_only(agent_logstream *ls, const char *level, const char *text)
{
	char out[NOTE_MAX];
	long n = mask_cut(ls, text, strlen(text), out);

	if (n >= 0)
		note_to_log(ls, level, out, (size_t)n);
}

void
agent_logstream_note_log_onlyf(agent_logstream *ls, const char *level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vnote(ls, level, 1, fmt, ap);
	va_end(ap);
}

void
agent_logstream_note(agent_logstream *ls, const char *level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vnote(ls, level, 0, fmt, ap);
	va_end(ap);
}
