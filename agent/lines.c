/* lines.c: masking, lines and the agent's own notes. See logstream_int.h. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "logstream_int.h"

static int
on_line(void *ud, const char *line, size_t len, unsigned flags)
{
	struct stream *s = ud;
	agent_logstream *ls = s->ls;

	/* The end of a line whose text a flush already handed over. */
	if (len == 0 && (flags & CIVIS_LINE_CONTINUATION) && !(flags & CIVIS_LINE_CONTINUES))
		return 0;
	ls->stats.lines++;
	agent_ls_emit(ls, ls->o.level[s->id], line, len, s->read_ns);
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

static void
note_to_log(agent_logstream *ls, const char *level, const char *text)
{
	if (!ls->run || civis_run_auth_dead(ls->run))
		return;
	agent_ls_emit(ls, level, text, strlen(text), civis_clock_realtime_ns());
}

/* Mask secrets in text; NULL when that failed (then say nothing). */
static const char *
mask(agent_logstream *ls, const char *text, char *buf, size_t len)
{
	int rc;

	if (!ls->o.redact)
		return text;
	rc = civis_redact_string(ls->o.redact, text, buf, len);
	/* ETOOBIG: cut to fit, still masked */
	return rc == CIVIS_OK || rc == CIVIS_ETOOBIG ? buf : NULL;
}

void
agent_logstream_note_log_only(agent_logstream *ls, const char *level, const char *text)
{
	char masked[NOTE_MAX * 2];

	text = mask(ls, text, masked, sizeof(masked));
	if (text)
		note_to_log(ls, level, text);
}

void
agent_logstream_note(agent_logstream *ls, const char *level, const char *fmt, ...)
{
	char raw[NOTE_MAX], masked[NOTE_MAX * 2];
	const char *text;
	va_list ap;
	int n;

	n = snprintf(raw, sizeof(raw), "civis-agent: ");
	va_start(ap, fmt);
	vsnprintf(raw + n, sizeof(raw) - (size_t)n, fmt, ap);
	va_end(ap);
	text = mask(ls, raw, masked, sizeof(masked));
	if (!text)
		return;
	fprintf(stderr, "%s\n", text);
	note_to_log(ls, level, text);
}
