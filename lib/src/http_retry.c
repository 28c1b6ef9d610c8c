/* http_retry.c: the retry policy of civis_http: which answers are worth
 * another try, how long to wait (capped full-jitter exponential backoff,
 * never sooner than Retry-After), and when to give up (attempts, deadline).
 * Pure functions of their arguments: the transport (http.c) asks, after
 * each failed try, whether and when to try again. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "civis/civis.h"
#include "http_int.h"

void
civis_retry_policy_default(civis_retry_policy *p)
{
	memset(p, 0, sizeof(*p));
	p->max_attempts = 10;
	p->base_ms = 500;
	p->cap_ms = 30000;
	p->deadline_ms = 0;
	p->max_retry_after_ms = 120000;
	p->retry_ambiguous = 1;
}

uint64_t
civis_retry_backoff_ms(const civis_retry_policy *p, unsigned attempt,
                       uint64_t retry_after_ms, uint64_t rnd)
{
	uint64_t cap = p->base_ms;
	uint64_t wait, floor_ms;
	unsigned i;

	for (i = 1; i < attempt && cap < p->cap_ms; i++)
		cap = cap > UINT64_MAX / 2 ? UINT64_MAX : cap * 2;
	if (cap > p->cap_ms)
		cap = p->cap_ms;
	wait = cap == UINT64_MAX ? rnd : rnd % (cap + 1);
	floor_ms = retry_after_ms < p->max_retry_after_ms ? retry_after_ms
	                                                  : p->max_retry_after_ms;
	return wait > floor_ms ? wait : floor_ms;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm). */
static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static int
parse_digits(const char *s, size_t n, unsigned *out)
{
	size_t i;
	unsigned v = 0;

	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	*out = v;
	return 0;
}

/* IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT", exactly; -1 otherwise. */
static int64_t
parse_imf_fixdate(const char *s, size_t n)
{
	static const char days[] = "MonTueWedThuFriSatSun";
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	unsigned day, year, hh, mm, ss, mon = 0, i;
	int dow_ok = 0;

	if (n != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' ||
	    s[16] != ' ' || s[19] != ':' || s[22] != ':' || s[25] != ' ' ||
	    memcmp(s + 26, "GMT", 3) != 0)
		return -1;
	for (i = 0; i < 7; i++)
		if (memcmp(s, days + 3 * i, 3) == 0)
			dow_ok = 1;
	for (i = 0; i < 12; i++)
		if (memcmp(s + 8, months + 3 * i, 3) == 0)
			mon = i + 1;
	if (!dow_ok || mon == 0 ||
	    parse_digits(s + 5, 2, &day) || parse_digits(s + 12, 4, &year) ||
	    parse_digits(s + 17, 2, &hh) || parse_digits(s + 20, 2, &mm) ||
	    parse_digits(s + 23, 2, &ss))
		return -1;
	if (day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60)
		return -1;
	return days_from_civil(year, mon, day) * 86400 + hh * 3600 + mm * 60 + ss;
}

uint64_t
civis_retry_after_parse_ms(const char *value, int64_t now_epoch)
{
	const char *s, *e;
	size_t n;
	int64_t when;

	if (value == NULL)
		return 0;
	s = value;
	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		e--;
	n = (size_t)(e - s);
	if (n == 0)
		return 0;
	if (s[0] >= '0' && s[0] <= '9') {
		uint64_t secs = 0;
		size_t i;

		for (i = 0; i < n; i++) {
			if (s[i] < '0' || s[i] > '9')
				return 0;
			if (secs > UINT64_MAX / 10000)
				secs = UINT64_MAX / 10000;   /* saturate: clamped later */
			else
				secs = secs * 10 + (uint64_t)(s[i] - '0');
		}
		if (secs > UINT64_MAX / 1000)
			return UINT64_MAX / 1000 * 1000;
		return secs * 1000;
	}
	when = parse_imf_fixdate(s, n);
	if (when < 0 || when <= now_epoch)
		return 0;
	{
		/* when > now_epoch, so the unsigned difference is exact */
		uint64_t secs = (uint64_t)when - (uint64_t)now_epoch;

		return secs > UINT64_MAX / 1000 ? UINT64_MAX / 1000 * 1000 : secs * 1000;
	}
}

int
civis_http_status_retryable(long http_code)
{
	return http_code == 0 || http_code == 408 || http_code == 429 ||
	       (http_code >= 500 && http_code <= 599);
}

/* --------------------------------------------------------- randomness */

uint64_t
civis__rng_next(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

uint64_t
civis__rng_seed(void)
{
	uint64_t s = 0;

	if (getrandom(&s, sizeof(s), GRND_NONBLOCK) != (ssize_t)sizeof(s))
		s = civis_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL);
	return s != 0 ? s : 0x9E3779B97F4A7C15ULL;
}

/* ------------------------------------------------------------ decision */

int
civis__retry_next(const civis_retry_policy *p, unsigned attempts, uint64_t elapsed_ms,
                  const char *retry_after, int64_t now_epoch, uint64_t rnd,
                  uint64_t *wait_ms)
{
	uint64_t ra, wait;

	*wait_ms = 0;
	if (p->max_attempts != 0 && attempts >= p->max_attempts)
		return 0;
	ra = civis_retry_after_parse_ms(retry_after, now_epoch);
	wait = civis_retry_backoff_ms(p, attempts, ra, rnd);
	/* stop when the next wait would end past the deadline, not after it */
	if (p->deadline_ms != 0 &&
	    (elapsed_ms >= p->deadline_ms || wait >= p->deadline_ms - elapsed_ms))
		return 0;
	*wait_ms = wait;
	return 1;
}
