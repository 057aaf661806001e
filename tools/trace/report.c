/* The report: a table for people, JSON for scripts (format documented in docs/trace.md). */
#include "tracer.h"

#include <stdlib.h>
#include <string.h>

/* A row's per-thread counts: folded ones of threads gone, plus the live threads'. */
static size_t collect(struct tracer *t, const struct row *r, struct thread_count **out)
{
	size_t n = r->nthreads;
	for (size_t i = 0; i < t->tcap; i++)
		n += t->threads[i] && r->index < t->threads[i]->ncounts && t->threads[i]->counts[r->index];
	struct thread_count *c = malloc((n ? n : 1) * sizeof(*c));
	if (!c)
		abort();
	if (r->nthreads) /* memcpy from NULL is undefined even for 0 bytes */
		memcpy(c, r->threads, r->nthreads * sizeof(*c));
	size_t k = r->nthreads;
	for (size_t i = 0; i < t->tcap; i++) {
		struct thread *th = t->threads[i];
		if (th && r->index < th->ncounts && th->counts[r->index])
			c[k++] = (struct thread_count){ th->tid, th->counts[r->index] };
	}
	*out = c;
	return n;
}

static int by_tid(const void *a, const void *b)
{
	const struct thread_count *x = a, *y = b;
	return (x->tid > y->tid) - (x->tid < y->tid);
}

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void print_json(struct tracer *t, FILE *f)
{
	fprintf(f, "{\"target\": {\"pid\": %d, \"command\": ", (int)(t->child ? t->child : t->set->pid));
	json_string(f, t->command_name ? t->command_name : "");
	fputs("},\n \"probes\": [", f);
	for (size_t i = 0; i < t->nrows; i++) {
		struct row *r = t->rows[i];
		struct thread_count *c;
		size_t n = collect(t, r, &c);
		qsort(c, n, sizeof(*c), by_tid);
		fprintf(f, "%s\n  {\"probe\": ", i ? "," : "");
		json_string(f, r->probe);
		fputs(", \"module\": ", f);
		json_string(f, r->module);
		fprintf(f, ", \"address\": \"0x%llx\", \"hits\": %llu, \"threads\": {",
			(unsigned long long)r->addr, (unsigned long long)r->hits);
		for (size_t k = 0; k < n; k++)
			fprintf(f, "%s\"%d\": %llu", k ? ", " : "", (int)c[k].tid, (unsigned long long)c[k].hits);
		fputs("}}", f);
		free(c);
	}
	fprintf(f, "\n ],\n \"scratch\": {\"pages\": %llu, \"entries\": %llu, \"claimed_high_water\": %llu, "
		   "\"claim_failures\": %llu},\n \"fallbacks\": %llu}\n",
		(unsigned long long)t->pages_hw, (unsigned long long)t->entries_hw,
		(unsigned long long)t->claimed_hw, (unsigned long long)t->claim_failures,
		(unsigned long long)t->fallbacks);
}

static void print_table(struct tracer *t, FILE *f, bool final)
{
	fprintf(f, "%s%-32s %12s %8s  %-18s %s\n", final ? "" : "-- live --\n", "PROBE", "HITS",
		"THREADS", "ADDRESS", "MODULE");
	for (size_t i = 0; i < t->nrows; i++) {
		struct row *r = t->rows[i];
		struct thread_count *c;
		size_t n = collect(t, r, &c);
		free(c);
		fprintf(f, "%-32s %12llu %8zu  0x%-16llx %s\n", r->probe, (unsigned long long)r->hits, n,
			(unsigned long long)r->addr, r->module);
	}
	if (final)
		fprintf(f, "scratch: %llu pages, %llu entries, %llu claimed at most, %llu claim failures; "
			   "%llu fallback hits\n",
			(unsigned long long)t->pages_hw, (unsigned long long)t->entries_hw,
			(unsigned long long)t->claimed_hw, (unsigned long long)t->claim_failures,
			(unsigned long long)t->fallbacks);
}

void report_print(struct tracer *t, FILE *f, bool final)
{
	for (struct process *p = t->procs; p; p = p->next)
		scratch_note(t, p);
	if (final && t->set->format == FORMAT_JSON)
		print_json(t, f);
	else
		print_table(t, f, final);
	fflush(f);
}
