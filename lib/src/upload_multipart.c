/* upload_multipart.c: above the threshold, POST files/multipart, then the
 * parts PUT `concurrency` at a time (each retried by http.c on its own),
 * then POST files/multipart/{id}/complete.
 *
 * The parts are read in parallel, so the file's SHA-256 is taken in a pass
 * of its own over the same open fd, on a helper thread (upload_hash.c),
 * alongside the parts. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "civis/civis.h"
#include "fileio.h"
#include "upload_int.h"


#define finish civis__upload_finish
#define fail   civis__upload_fail

/* ------------------------------------------------------------ part size */

/* 64 x 64 -> 128 bit product, as (hi, lo). */
static void
mul_u64(uint64_t a, uint64_t b, uint64_t *hi, uint64_t *lo)
{
	uint64_t a0 = a & 0xffffffffu, a1 = a >> 32;
	uint64_t b0 = b & 0xffffffffu, b1 = b >> 32;
	uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
	uint64_t mid = (p00 >> 32) + (p01 & 0xffffffffu) + (p10 & 0xffffffffu);

	*lo = (mid << 32) | (p00 & 0xffffffffu);
	*hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
}

/* Smallest r with r * r >= n, n = nhi * 2^64 + nlo. */
static uint64_t
ceil_sqrt_u128(uint64_t nhi, uint64_t nlo)
{
	uint64_t lo = 0, hi = (uint64_t)1 << 48; /* (2^48)^2 = 2^96 > any n here */

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2, shi, slo;
		mul_u64(mid, mid, &shi, &slo);
		if (shi > nhi || (shi == nhi && slo >= nlo))
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

uint64_t
civis_upload_part_size(uint64_t size)
{
	uint64_t nhi, nlo, ps, min_for_count;

	mul_u64(CIVIS_UPLOAD_MIN_PART, size, &nhi, &nlo);
	ps = ceil_sqrt_u128(nhi, nlo);
	if (ps < CIVIS_UPLOAD_MIN_PART)
		ps = CIVIS_UPLOAD_MIN_PART;
	min_for_count = size / CIVIS_UPLOAD_MAX_PARTS + (size % CIVIS_UPLOAD_MAX_PARTS != 0);
	if (ps < min_for_count)
		ps = min_for_count;
	return ps;
}

/* --------------------------------------------------------- complete */

static void
on_complete(void *ud, const civis_http_result *res)
{
	civis_upload *u = ud;

	u->api_req = NULL;
	if (u->finishing)
		return;
	if (res->status != CIVIS_OK) {
		civis__upload_api_fail(u, res, "completing the multipart upload");
		return;
	}
	finish(u, CIVIS_OK);
}

void
civis__upload_maybe_complete(civis_upload *u)
{
	char path[64];
	civis_http_spec spec;
	int rc;

	if (u->parts_done < u->nparts || !(u->sha_ready || u->sha_broken) ||
	    u->state != CIVIS__ST_SENDING)
		return;
	rc = civis__upload_check_file(u);
	if (rc != CIVIS_OK) {
		finish(u, rc);
		return;
	}
	u->state = CIVIS__ST_COMPLETING;
	(void)snprintf(path, sizeof(path), "files/multipart/%lld/complete",
	               (long long)u->file_id);
	memset(&spec, 0, sizeof(spec));
	spec.method = "POST";
	spec.url = path;
	spec.what = "multipart complete";
	spec.max_response = CIVIS__UPLOAD_MAX_RESPONSE;
	spec.done = on_complete;
	spec.done_ud = u;
	rc = civis_client_call(u->client, &spec, &u->api_req);
	if (rc != CIVIS_OK)
		fail(u, rc, "upload of %s: cannot complete the multipart upload: %s", u->name,
		     civis_strerror(rc));
}

/* ---------------------------------------------------------- parts */

static void launch_parts(civis_upload *u);

static void
on_part_done(void *ud, const civis_http_result *res)
{
	civis__upload_part *p = ud;
	civis_upload *u = p->body.u;
	char text[CIVIS__UPLOAD_ERR_MAX / 2];

	p->req = NULL;
	u->inflight--;
	if (u->finishing || civis__upload_fail_read(u))
		return;
	if (res->status != CIVIS_OK) {
		if (res->http_code > 0) {
			civis__upload_storage_error(res->http_code, res->body, res->body_len,
			                            text, sizeof(text));
			fail(u, res->status, "upload of %s: part %u of %u: storage answered %s%s",
			     u->name, p->idx + 1, u->nparts, text,
			     res->attempts > 1 ? " (after retries)" : "");
		} else {
			fail(u, res->status, "upload of %s: part %u of %u: %s", u->name, p->idx + 1,
			     u->nparts, res->error != NULL && res->error[0] ? res->error
			                                                   : civis_strerror(res->status));
		}
		return;
	}
	if (res->etag == NULL || res->etag[0] == '\0') {
		fail(u, CIVIS_EPROTO, "upload of %s: part %u of %u: storage answered %ld without an ETag",
		     u->name, p->idx + 1, u->nparts, res->http_code);
		return;
	}
	p->done = 1;
	u->parts_done++;
	u->bytes_done += p->body.len;
	launch_parts(u);
	if (!u->finishing)
		civis__upload_maybe_complete(u);
}

static void
launch_parts(civis_upload *u)
{
	while (!u->finishing && u->inflight < u->concurrency && u->next_part < u->nparts) {
		civis__upload_part *p = &u->parts[u->next_part++];
		char what[48];
		civis_http_spec spec;
		int rc;

		(void)snprintf(what, sizeof(what), "part %u upload", p->idx + 1);
		memset(&spec, 0, sizeof(spec));
		spec.method = "PUT";
		spec.url = u->mp.upload_urls[p->idx];
		spec.what = what;
		p->body.pos = 0;
		spec.body_size = p->body.len;
		spec.body_read = civis__upload_body_read;
		spec.body_ud = &p->body;
		spec.send_buffer = civis__upload_send_buffer(p->body.len, u->concurrency);
		spec.max_response = CIVIS__UPLOAD_MAX_RESPONSE;
		spec.done = on_part_done;
		spec.done_ud = p;
		rc = civis_http_start(u->http, &spec, &p->req);
		if (rc != CIVIS_OK) {
			fail(u, rc, "upload of %s: cannot start part %u: %s", u->name, p->idx + 1,
			     civis_strerror(rc));
			return;
		}
		u->inflight++;
	}
}

void
civis__upload_begin_parts(civis_upload *u)
{
	unsigned i;

	u->parts = calloc(u->nparts, sizeof(*u->parts));
	if (u->parts == NULL) {
		fail(u, CIVIS_ENOMEM, "upload of %s: out of memory", u->name);
		return;
	}
	for (i = 0; i < u->nparts; i++) {
		civis__upload_part *p = &u->parts[i];
		p->body.u = u;
		p->idx = i;
		p->body.off = (uint64_t)i * u->part_size;
		p->body.len = u->size - p->body.off < u->part_size ? u->size - p->body.off
		                                                   : u->part_size;
	}
	u->state = CIVIS__ST_SENDING;
	civis__upload_progress_begin(u);
	if (!u->sha_ready && !u->no_digest && civis__upload_hash_start(u) != CIVIS_OK) {
		fail(u, CIVIS_ENOMEM, "upload of %s: cannot start hashing", u->name);
		return;
	}
	launch_parts(u);
}

