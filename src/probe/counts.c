/*
 * Every count of the engine, kept here and nowhere else: hits per probe (rows) and per
 * thread, folded into the row when a thread is gone; the scratch figures over every
 * process life; and the snapshot that reports read.
 *
 *   row.hits == sum over live threads of counts[row.index] + sum of row.threads[].hits
 *
 * Jump probes count in the target (jumps.c): a live thread's hits are its counts plus
 * what its row of counters in the data area holds, folded in when it goes.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The row of MODULE:NAME, made on first use. */
struct row *count_row(struct tracer *t, const char *module, const char *name, uint64_t addr)
{
	for (size_t i = 0; i < t->nrows; i++)
		if (!strcmp(t->rows[i]->module, module) && !strcmp(strchr(t->rows[i]->probe, ':') + 1, name))
			return t->rows[i];
	struct row *r = calloc(1, sizeof(*r));
	t->rows = realloc(t->rows, (t->nrows + 1) * sizeof(*t->rows));
	if (!r || !t->rows)
		abort();
	char *copy = strdup(module);
	if (asprintf(&r->probe, "%s:%s", basename(copy), name) < 0)
		abort();
	free(copy);
	r->module = strdup(module);
	r->addr = addr;
	r->index = t->nrows;
	t->rows[t->nrows++] = r;
	return r;
}

void count_hit(struct tracer *t, struct thread *th, struct row *r, int64_t delta)
{
	if (r->index >= th->ncounts) {
		size_t n = t->nrows;
		th->counts = realloc(th->counts, n * sizeof(*th->counts));
		if (!th->counts)
			abort();
		memset(th->counts + th->ncounts, 0, (n - th->ncounts) * sizeof(*th->counts));
		th->ncounts = n;
	}
	th->counts[r->index] += (uint64_t)delta;
	r->hits += (uint64_t)delta;
}

/* The counts th's trampolines made (jumps.c), moved into th's own; its timed calls too. */
void count_fold_jumps(struct tracer *t, struct thread *th)
{
	const struct jumps *j = th->proc->jumps;
	calls_fold_timed(t, th);
	for (uint32_t c = 0; j && th->jump_counts && c < j->ncols; c++) {
		uint64_t n = __atomic_exchange_n(&th->jump_counts[c], 0, __ATOMIC_RELAXED);
		if (n) {
			count_hit(t, th, j->rows[c], (int64_t)n);
			j->rows[c]->jump_hits += n;
		}
	}
}

/* th's hits of r that its trampolines counted and the tracer has not folded yet. */
static uint64_t live_jump_hits(const struct thread *th, const struct row *r)
{
	const struct jumps *j = th->proc->jumps;
	uint64_t n = 0;
	for (uint32_t c = 0; j && th->jump_counts && c < j->ncols; c++)
		if (j->rows[c] == r)
			n += __atomic_load_n(&th->jump_counts[c], __ATOMIC_RELAXED);
	return n;
}

/* th's hits of r; *jump: of them, those still in its counters, read once. */
static uint64_t thread_hits(const struct thread *th, const struct row *r, uint64_t *jump)
{
	*jump = live_jump_hits(th, r);
	return (r->index < th->ncounts ? th->counts[r->index] : 0) + *jump;
}

void count_fold_thread(struct tracer *t, struct thread *th)
{
	count_fold_jumps(t, th);
	for (size_t i = 0; i < th->ncounts; i++) {
		if (!th->counts[i])
			continue;
		struct row *r = t->rows[i];
		if (r->nthreads == r->cap) {
			r->cap = r->cap ? r->cap * 2 : 8;
			r->threads = realloc(r->threads, r->cap * sizeof(*r->threads));
			if (!r->threads)
				abort();
		}
		r->threads[r->nthreads++] = (struct thread_count){ th->tid, th->counts[i] };
		th->counts[i] = 0;
	}
	free(th->counts);
	th->counts = NULL;
	th->ncounts = 0;
}

/* Per-process high waters, summed: an upper bound when processes come and go. */
static void scratch_max(uint64_t *pages, uint64_t *entries, uint64_t *claimed, const ptss_proc *scratch)
{
	struct ptss_stats st;
	ptss_stats_get(scratch, &st);
	if (st.pages > *pages)
		*pages = st.pages;
	if (st.entries > *entries)
		*entries = st.entries;
	if (st.claimed_high_water > *claimed)
		*claimed = st.claimed_high_water;
}

void count_scratch(struct tracer *t, const ptss_proc *scratch)
{
	if (scratch)
		scratch_max(&t->pages_hw, &t->entries_hw, &t->claimed_hw, scratch);
}

static int by_tid(const void *a, const void *b)
{
	const struct ptss_trace_thread *x = a, *y = b;
	return (x->tid > y->tid) - (x->tid < y->tid);
}

/* A row's per-thread counts: folded ones of threads gone, plus the live threads' (their
 * counters read once: *live_jump says how much of the total they gave). */
static struct ptss_trace_thread *row_threads(const struct tracer *t, const struct row *r, size_t *out,
					     uint64_t *live_jump)
{
	size_t n = r->nthreads;
	uint64_t unused;
	for (size_t i = 0; i < t->tcap; i++)
		n += t->threads[i] && thread_hits(t->threads[i], r, &unused);
	struct ptss_trace_thread *c = malloc((n ? n : 1) * sizeof(*c));
	if (!c)
		return NULL;
	for (size_t k = 0; k < r->nthreads; k++)
		c[k] = (struct ptss_trace_thread){ r->threads[k].tid, r->threads[k].hits };
	size_t k = r->nthreads;
	*live_jump = 0;
	for (size_t i = 0; i < t->tcap && k < n; i++) {
		const struct thread *th = t->threads[i];
		uint64_t jump = 0, hits = th ? thread_hits(th, r, &jump) : 0;
		if (hits) {
			c[k++] = (struct ptss_trace_thread){ th->tid, hits };
			*live_jump += jump;
		}
	}
	n = k; /* a live counter may have gone up since it was counted: never read twice */
	qsort(c, n, sizeof(*c), by_tid);
	*out = n;
	return c;
}

struct ptss_trace_snapshot *count_snapshot(const struct tracer *t)
{
	struct ptss_trace_snapshot *s = calloc(1, sizeof(*s));
	/* The probes, and their latency summaries after them: one block, freed as one. */
	size_t n = t->nrows + 1;
	struct ptss_trace_probe *probes = calloc(1, n * (sizeof(*probes) + sizeof(struct ptss_trace_latency)));
	if (!s || !probes) {
		free(s);
		free(probes);
		errno = ENOMEM;
		return NULL;
	}
	struct ptss_trace_latency *lat = (struct ptss_trace_latency *)(probes + n);
	s->probes = probes;
	s->pid = t->child ? t->child : t->pid;
	s->command = t->command_name ? t->command_name : "";
	for (size_t i = 0; i < t->nrows; i++, s->nprobes++) {
		const struct row *r = t->rows[i];
		probes[i] = (struct ptss_trace_probe){
			.probe = r->probe, .module = r->module, .addr = r->addr,
			.mode = r->jumped ? PTSS_PROBE_JUMP : t->opts.no_scratch ? PTSS_PROBE_FALLBACK : PTSS_PROBE_TRAP,
			.trap_why = r->trap_why };
		uint64_t live_jump;
		probes[i].threads = row_threads(t, r, &probes[i].nthreads, &live_jump);
		if (!probes[i].threads) {
			ptss_trace_snapshot_free(s);
			errno = ENOMEM;
			return NULL;
		}
		/* From the counters read once: hits == the sum of threads[].hits. */
		for (size_t k = 0; k < probes[i].nthreads; k++)
			probes[i].hits += probes[i].threads[k].hits;
		probes[i].jump_hits = r->jump_hits + live_jump;
		if (calls_summary(t, r, &lat[i], &probes[i].returns, &probes[i].jump_returns))
			probes[i].latency = &lat[i];
	}
	/* The live processes' figures with the totals, the totals left as they are. */
	s->pages = t->pages_hw;
	s->entries = t->entries_hw;
	s->claimed_high_water = t->claimed_hw;
	for (const struct process *p = t->procs; p; p = p->next)
		if (p->scratch)
			scratch_max(&s->pages, &s->entries, &s->claimed_high_water, p->scratch);
	s->claim_failures = t->claim_failures;
	s->fallbacks = t->fallbacks;
	return s;
}

void ptss_trace_snapshot_free(struct ptss_trace_snapshot *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->nprobes; i++)
		free((void *)s->probes[i].threads);
	free((void *)s->probes);
	free(s);
}

void counts_free(struct tracer *t)
{
	for (size_t i = 0; i < t->nrows; i++) {
		free(t->rows[i]->probe);
		free(t->rows[i]->module);
		free(t->rows[i]->threads);
		free(t->rows[i]->trap_why);
		calls_free(t->rows[i]);
		free(t->rows[i]);
	}
	free(t->rows);
	t->rows = NULL;
	t->nrows = 0;
}
