/* level.c: a log line's level from its first words. See level.h. */
#include <stddef.h>
#include <string.h>

#include "civis/level.h"

#define WORD_MAX 8                  /* the longest level word: CRITICAL */

static const struct {
	const char *word;
	civis_level level;
} words[] = {
	{ "TRACE", CIVIS_LEVEL_DEBUG }, { "TRC", CIVIS_LEVEL_DEBUG },
	{ "DEBUG", CIVIS_LEVEL_DEBUG }, { "DBG", CIVIS_LEVEL_DEBUG },
	{ "INFO", CIVIS_LEVEL_INFO }, { "INF", CIVIS_LEVEL_INFO }, { "NOTICE", CIVIS_LEVEL_INFO },
	{ "WARN", CIVIS_LEVEL_WARN }, { "WARNING", CIVIS_LEVEL_WARN }, { "WRN", CIVIS_LEVEL_WARN },
	{ "ERROR", CIVIS_LEVEL_ERROR }, { "ERR", CIVIS_LEVEL_ERROR }, { "SEVERE", CIVIS_LEVEL_ERROR },
	{ "FATAL", CIVIS_LEVEL_FATAL }, { "FTL", CIVIS_LEVEL_FATAL },
	{ "CRITICAL", CIVIS_LEVEL_FATAL }, { "CRIT", CIVIS_LEVEL_FATAL },
	{ "PANIC", CIVIS_LEVEL_FATAL }, { "EMERG", CIVIS_LEVEL_FATAL },
};

static int
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int
is_alpha(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int
is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static char
upper(char c)
{
	return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

/* The level word w (n bytes, any case), or NONE. */
static civis_level
lookup(const char *w, size_t n)
{
	char u[WORD_MAX];

	if (n == 0 || n > WORD_MAX)
		return CIVIS_LEVEL_NONE;
	for (size_t i = 0; i < n; i++)
		u[i] = upper(w[i]);
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strlen(words[i].word) == n && memcmp(words[i].word, u, n) == 0)
			return words[i].level;
	return CIVIS_LEVEL_NONE;
}

/* n digits at s[i..]: 1 and i moved past them, else 0. */
static int
digits(const char *s, size_t len, size_t *i, size_t n)
{
	for (size_t k = 0; k < n; k++)
		if (*i + k >= len || !is_digit(s[*i + k]))
			return 0;
	*i += n;
	return 1;
}

static int
lit(const char *s, size_t len, size_t *i, char c)
{
	if (*i < len && s[*i] == c) {
		(*i)++;
		return 1;
	}
	return 0;
}

/* hh:mm[:ss[.frac]] at s[i..] (seconds required when need_secs). */
static int
time_of_day(const char *s, size_t len, size_t *i, int need_secs)
{
	size_t j = *i;

	if (!digits(s, len, &j, 2) || !lit(s, len, &j, ':') || !digits(s, len, &j, 2))
		return 0;
	if (lit(s, len, &j, ':')) {
		if (!digits(s, len, &j, 2))
			return 0;
		if (j + 1 < len && (s[j] == '.' || s[j] == ',') && is_digit(s[j + 1])) {
			j++;
			while (j < len && is_digit(s[j]))
				j++;
		}
	} else if (need_secs) {
		return 0;
	}
	*i = j;
	return 1;
}

/* Past a leading timestamp at s[i..] (see level.h), else i unchanged. */
static size_t
skip_timestamp(const char *s, size_t len, size_t i)
{
	size_t j = i;
	int bracket = lit(s, len, &j, '[');
	size_t d = j;

	if (digits(s, len, &d, 4) && lit(s, len, &d, '-') && digits(s, len, &d, 2) &&
	    lit(s, len, &d, '-') && digits(s, len, &d, 2)) {
		size_t t = d + 1;

		j = d;
		if (d < len && (s[d] == 'T' || s[d] == ' ') && time_of_day(s, len, &t, 0)) {
			j = t;
			if (!lit(s, len, &j, 'Z') && j < len && (s[j] == '+' || s[j] == '-')) {
				size_t z = j + 1;

				if (digits(s, len, &z, 2)) {
					(void)lit(s, len, &z, ':');   /* +01:00 or +0100 */
					if (digits(s, len, &z, 2))
						j = z;
				}
			}
		}
	} else if (!time_of_day(s, len, &j, 1)) {
		return i;
	}
	if (bracket && !lit(s, len, &j, ']'))
		return i;
	return j;
}

static size_t
skip_blanks(const char *s, size_t len, size_t i)
{
	while (i < len && is_blank(s[i]))
		i++;
	return i;
}

/* The level of the word at s[i..] in one of level.h's text forms. */
static civis_level
word_form(const char *s, size_t len, size_t i, size_t full_len)
{
	int bracket = lit(s, len, &i, '[');
	size_t w, e;
	int all_upper = 1;
	civis_level l;

	if (bracket)
		i = skip_blanks(s, len, i);
	for (w = i; i < len && is_alpha(s[i]); i++)
		if (s[i] >= 'a' && s[i] <= 'z')
			all_upper = 0;
	if (i == len && len < full_len)
		return CIVIS_LEVEL_NONE;        /* the word goes on past the scan */
	l = lookup(s + w, i - w);
	if (l == CIVIS_LEVEL_NONE)
		return l;
	if (bracket) {
		i = skip_blanks(s, len, i);
		return i < len && s[i] == ']' ? l : CIVIS_LEVEL_NONE;
	}
	if (i == full_len)                  /* the whole line is the word */
		return all_upper ? l : CIVIS_LEVEL_NONE;
	if (i < len && s[i] == ':')
		return l;
	if (i >= len || !is_blank(s[i]))
		return CIVIS_LEVEL_NONE;
	e = skip_blanks(s, len, i);
	if (e < len && (s[e] == '-' || s[e] == '|' || s[e] == ':') &&
	    (e + 1 >= full_len || (e + 1 < len && is_blank(s[e + 1]))))
		return l;
	return all_upper ? l : CIVIS_LEVEL_NONE;
}

/* ------------------------------------------------------------ JSON */

/* Past the JSON string starting at s[i] == '"'; 0 when it does not end
 * within len. */
static size_t
json_string_end(const char *s, size_t len, size_t i)
{
	for (i++; i < len; i++) {
		if (s[i] == '\\')
			i++;
		else if (s[i] == '"')
			return i + 1;
	}
	return 0;
}

/* Past the JSON value at s[i] (any kind, nested ones included); 0 when it
 * does not end within len. */
static size_t
json_value_end(const char *s, size_t len, size_t i)
{
	int depth = 0;

	while (i < len) {
		char c = s[i];

		if (c == '"') {
			i = json_string_end(s, len, i);
			if (i == 0)
				return 0;
			if (depth == 0)
				return i;
			continue;
		}
		if (c == '{' || c == '[') {
			depth++;
		} else if (c == '}' || c == ']') {
			if (depth == 0)
				return i;       /* the end of the enclosing object */
			if (--depth == 0)
				return i + 1;
		} else if (depth == 0 && (c == ',' || is_blank(c))) {
			return i;
		}
		i++;
	}
	return 0;
}

static int
key_is(const char *k, size_t n, const char *want)
{
	size_t wl = strlen(want);

	if (n != wl)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (upper(k[i]) != upper(want[i]))
			return 0;
	return 1;
}

/* pino/bunyan: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal. */
static civis_level
json_number_level(const char *s, size_t n)
{
	if (n != 2 || s[1] != '0')
		return CIVIS_LEVEL_NONE;
	switch (s[0]) {
	case '1': case '2': return CIVIS_LEVEL_DEBUG;
	case '3': return CIVIS_LEVEL_INFO;
	case '4': return CIVIS_LEVEL_WARN;
	case '5': return CIVIS_LEVEL_ERROR;
	case '6': return CIVIS_LEVEL_FATAL;
	default: return CIVIS_LEVEL_NONE;
	}
}

/* The value at s[v..end) of a level member. */
static civis_level
json_level_value(const char *s, size_t v, size_t end, int numeric_ok)
{
	if (s[v] == '"') {
		/* a string with no escapes: "WARNING", "warn" */
		size_t n = end - v - 2;

		if (n == 0 || memchr(s + v + 1, '\\', n))
			return CIVIS_LEVEL_NONE;
		for (size_t k = 0; k < n; k++)
			if (!is_alpha(s[v + 1 + k]))
				return CIVIS_LEVEL_NONE;
		return lookup(s + v + 1, n);
	}
	return numeric_ok ? json_number_level(s + v, end - v) : CIVIS_LEVEL_NONE;
}

static size_t
json_ws(const char *s, size_t len, size_t i)
{
	while (i < len && (is_blank(s[i]) || s[i] == '\r' || s[i] == '\n'))
		i++;
	return i;
}

/* The first top-level level member of the object line s (s[0] == '{'). */
static civis_level
json_form(const char *s, size_t len)
{
	size_t i = 1;

	for (;;) {
		size_t k, kend, v, vend;

		i = json_ws(s, len, i);
		if (i >= len || s[i] != '"')
			return CIVIS_LEVEL_NONE;
		k = i + 1;
		kend = json_string_end(s, len, i);
		if (kend == 0)
			return CIVIS_LEVEL_NONE;
		i = json_ws(s, len, kend);
		if (i >= len || s[i] != ':')
			return CIVIS_LEVEL_NONE;
		v = json_ws(s, len, i + 1);
		if (v >= len)
			return CIVIS_LEVEL_NONE;
		vend = json_value_end(s, len, v);
		if (vend == 0 || vend == v)
			return CIVIS_LEVEL_NONE;
		if (key_is(s + k, kend - k - 1, "level") || key_is(s + k, kend - k - 1, "severity") ||
		    key_is(s + k, kend - k - 1, "levelname"))
			return json_level_value(s, v, vend, key_is(s + k, kend - k - 1, "level"));
		i = json_ws(s, len, vend);
		if (i >= len || s[i] != ',')
			return CIVIS_LEVEL_NONE;
		i++;
	}
}

/* ------------------------------------------------------------ API */

civis_level
civis_level_detect(const char *line, size_t len)
{
	size_t n, i, t;

	if (!line || len == 0)
		return CIVIS_LEVEL_NONE;
	if (line[0] == '{')
		return json_form(line, len < CIVIS_LEVEL_JSON_SCAN ? len : CIVIS_LEVEL_JSON_SCAN);
	n = len < CIVIS_LEVEL_SCAN ? len : CIVIS_LEVEL_SCAN;
	i = skip_blanks(line, n, 0);
	t = skip_timestamp(line, n, i);
	if (t != i) {
		i = skip_blanks(line, n, t);
		if (i + 1 < n && (line[i] == '-' || line[i] == '|') && is_blank(line[i + 1]))
			i = skip_blanks(line, n, i + 1);
	}
	return word_form(line, n, i, len);
}

const char *
civis_level_name(civis_level level)
{
	switch (level) {
	case CIVIS_LEVEL_DEBUG: return "debug";
	case CIVIS_LEVEL_INFO: return "info";
	case CIVIS_LEVEL_WARN: return "warn";
	case CIVIS_LEVEL_ERROR: return "error";
	case CIVIS_LEVEL_FATAL: return "fatal";
	default: return NULL;
	}
}
