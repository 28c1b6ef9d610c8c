/* outputs_register.c: registration, once the command has exited and every
 * upload has finished: one POST .../outputs after the other, sorted by
 * Civis name (then SHA-256), a (name, SHA-256) pair once. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/upload.h"
#include "outputs_int.h"

static int
cmp_reg(const void *a, const void *b)
{
	const struct ent *x = *(struct ent *const *)a, *y = *(struct ent *const *)b;
	int c = strcmp(x->name, y->name);

	return c != 0 ? c : strcmp(x->sha, y->sha);
}

static void reg_next(agent_outputs *o);

static void
reg_failed(agent_outputs *o, struct ent *e, int status, const char *error)
{
	char shown[SHOW_MAX];

	show(o, shown, sizeof(shown), e->rel);
	onote(o, "error", "cannot register %s (file %lld) as an output of the run: %s",
	      shown, (long long)e->file_id,
	      error != NULL && error[0] != '\0' ? error : civis_strerror(status));
	o->failed++;
}

static void
on_registered(void *ud, int status, const char *error)
{
	struct reg_token *tok = ud;
	agent_outputs *o = tok->o;
	struct ent *e;

	if (o == NULL) {
		free(tok);
		return;   /* the outputs were freed meanwhile */
	}
	*tok->prevp = tok->next;
	if (tok->next != NULL)
		tok->next->prevp = tok->prevp;
	e = o->regs[tok->idx];
	free(tok);
	o->reg_inflight--;
	if (status == CIVIS_OK)
		e->registered = 1;
	else
		reg_failed(o, e, status, error);
	if (!o->in_reg_next)
		reg_next(o);
}

/* Registrations start in order, up to AGENT_OUTPUTS_REG_INFLIGHT at once;
 * a callback may run inside the call (then the loop here goes on) or later
 * (then it calls us). */
static void
reg_next(agent_outputs *o)
{
	o->in_reg_next = 1;
	while (o->reg_inflight < AGENT_OUTPUTS_REG_INFLIGHT && o->reg_i < o->nregs &&
	       !o->freeing) {
		struct ent *e = o->regs[o->reg_i];
		struct reg_token *tok = malloc(sizeof(*tok));
		int rc;

		if (tok == NULL) {
			reg_failed(o, e, CIVIS_ENOMEM, NULL);
			o->reg_i++;
			continue;
		}
		tok->o = o;
		tok->idx = o->reg_i++;
		tok->next = o->reg_toks;
		if (tok->next != NULL)
			tok->next->prevp = &tok->next;
		tok->prevp = &o->reg_toks;
		o->reg_toks = tok;
		o->reg_inflight++;
		rc = engine.register_output(o->run, "File", e->file_id, on_registered, tok);
		if (rc != CIVIS_OK) {
			*tok->prevp = tok->next;
			if (tok->next != NULL)
				tok->next->prevp = tok->prevp;
			free(tok);
			o->reg_inflight--;
			reg_failed(o, e, rc, NULL);
		}
	}
	o->in_reg_next = 0;
	if (o->reg_inflight == 0 && o->reg_i >= o->nregs)
		o->reg_finished = 1;
}

void
maybe_register(agent_outputs *o)
{
	struct ent *e;
	size_t n = 0, i, k;

	if (!o->exiting || o->reg_started || o->inflight > 0 || o->qhead != NULL || o->freeing)
		return;
	o->reg_started = 1;
	for (e = o->all_head; e != NULL; e = e->anext)
		if (e->present)
			n++;
	if (n > 0) {
		o->regs = calloc(n, sizeof(struct ent *));
		if (o->regs == NULL) {
			onote(o, "error", "cannot register the outputs: out of memory");
			o->failed += (unsigned)n;
			o->reg_finished = 1;
			return;
		}
	}
	for (e = o->all_head; e != NULL; e = e->anext) {
		if (!e->present)
			continue;
		if (e->state == ST_DONE && e->have) {
			o->regs[o->nregs++] = e;
		} else {
			/* fail() said why at level error when it happened after exit */
			if (e->err[0] == '\0') {
				char shown[SHOW_MAX];

				show(o, shown, sizeof(shown), e->rel);
				onote(o, "error", "cannot upload %s", shown);
			}
			o->failed++;
		}
	}
	if (o->nregs > 1)
		qsort(o->regs, o->nregs, sizeof(struct ent *), cmp_reg);
	/* a (name, SHA-256) pair once */
	for (i = 0, k = 0; i < o->nregs; i++) {
		if (k > 0 && cmp_reg(&o->regs[k - 1], &o->regs[i]) == 0 && o->regs[i]->sha[0] != '\0') {
			char shown[SHOW_MAX], first[SHOW_MAX];

			show(o, shown, sizeof(shown), o->regs[i]->rel);
			show(o, first, sizeof(first), o->regs[k - 1]->rel);
			onote(o, "info", "%s has the same name and content as %s: registered once",
			      shown, first);
			continue;
		}
		o->regs[k++] = o->regs[i];
	}
	o->nregs = k;
	reg_next(o);
}
