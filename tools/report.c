/* The report of a snapshot: a table for people, JSON for scripts (format documented in
 * docs/trace.md). It reads the snapshot and nothing else. */
#include "cli.h"

static const char *const mode_names[] = {
	[PTSS_PROBE_TRAP] = "trap", [PTSS_PROBE_JUMP] = "jump", [PTSS_PROBE_FALLBACK] = "fallback",
};

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

/* [lo, hi) of latency bucket k, in ns */
static uint64_t bucket_lo(unsigned k) { return k ? 1ull << k : 0; }
static uint64_t bucket_hi(unsigned k) { return 2ull << k; }

static void json_latency(FILE *f, const struct ptss_trace_probe *r)
{
	const struct ptss_trace_latency *l = r->latency;
	fprintf(f, ", \"returns\": %llu, \"jump_returns\": %llu", (unsigned long long)r->returns,
		(unsigned long long)r->jump_returns);
	if (!l)
		return;
	fprintf(f, ", \"latency\": {\"count\": %llu, \"min_ns\": %llu, \"max_ns\": %llu, "
		"\"p50_ns\": %llu, \"p99_ns\": %llu, \"hist\": [", (unsigned long long)l->count,
		(unsigned long long)l->min_ns, (unsigned long long)l->max_ns,
		(unsigned long long)l->p50_ns, (unsigned long long)l->p99_ns);
	bool first = true;
	for (unsigned k = 0; k < PTSS_LATENCY_BUCKETS; k++)
		if (l->hist[k]) {
			fprintf(f, "%s{\"lo_ns\": %llu, \"hi_ns\": %llu, \"count\": %llu}", first ? "" : ", ",
				(unsigned long long)bucket_lo(k), (unsigned long long)bucket_hi(k),
				(unsigned long long)l->hist[k]);
			first = false;
		}
	fputs("]}", f);
}

/* A probe's latency as bpftrace's hist() draws it: a row per power of two. */
static void table_latency(FILE *f, const struct ptss_trace_probe *r)
{
	const struct ptss_trace_latency *l = r->latency;
	char a[32], b[32], c[32], d[32];
	if (!l || !l->count) {
		fprintf(f, "\n%s: %llu calls, %llu returns, none timed\n", r->probe,
			(unsigned long long)r->hits, (unsigned long long)r->returns);
		return;
	}
	fprintf(f, "\n%s: %llu calls timed, min %s, p50 %s, p99 %s, max %s\n", r->probe,
		(unsigned long long)l->count, events_duration(l->min_ns, a, sizeof(a)),
		events_duration(l->p50_ns, b, sizeof(b)), events_duration(l->p99_ns, c, sizeof(c)),
		events_duration(l->max_ns, d, sizeof(d)));
	uint64_t top = 1;
	unsigned lo = PTSS_LATENCY_BUCKETS, hi = 0;
	for (unsigned k = 0; k < PTSS_LATENCY_BUCKETS; k++)
		if (l->hist[k]) {
			top = l->hist[k] > top ? l->hist[k] : top;
			lo = k < lo ? k : lo;
			hi = k;
		}
	for (unsigned k = lo; k <= hi; k++) {
		char range[48];
		snprintf(range, sizeof(range), "[%s, %s)", events_duration(bucket_lo(k), a, sizeof(a)),
			 events_duration(bucket_hi(k), b, sizeof(b)));
		int bar = (int)(l->hist[k] * 50 / top);
		fprintf(f, "%-22s %10llu |%.*s%*s|\n", range, (unsigned long long)l->hist[k], bar,
			"@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@", 50 - bar, "");
	}
}

static void print_json(const struct ptss_trace_snapshot *s, FILE *f, bool latency)
{
	fprintf(f, "{\"target\": {\"pid\": %d, \"command\": ", (int)s->pid);
	json_string(f, s->command);
	fputs("},\n \"probes\": [", f);
	for (size_t i = 0; i < s->nprobes; i++) {
		const struct ptss_trace_probe *r = &s->probes[i];
		fprintf(f, "%s\n  {\"probe\": ", i ? "," : "");
		json_string(f, r->probe);
		fputs(", \"module\": ", f);
		json_string(f, r->module);
		fprintf(f, ", \"address\": \"0x%llx\", \"mode\": \"%s\", \"hits\": %llu, "
			"\"jump_hits\": %llu, \"trap_hits\": %llu, ",
			(unsigned long long)r->addr, mode_names[r->mode], (unsigned long long)r->hits,
			(unsigned long long)r->jump_hits, (unsigned long long)(r->hits - r->jump_hits));
		if (r->trap_why) {
			fputs("\"trap_reason\": ", f);
			json_string(f, r->trap_why);
			fputs(", ", f);
		}
		fputs("\"threads\": {", f);
		for (size_t k = 0; k < r->nthreads; k++)
			fprintf(f, "%s\"%d\": %llu", k ? ", " : "", (int)r->threads[k].tid,
				(unsigned long long)r->threads[k].hits);
		fputs("}", f);
		if (latency)
			json_latency(f, r);
		fputs("}", f);
	}
	fprintf(f, "\n ],\n \"scratch\": {\"pages\": %llu, \"entries\": %llu, \"claimed_high_water\": %llu, "
		   "\"claim_failures\": %llu},\n \"fallbacks\": %llu}\n",
		(unsigned long long)s->pages, (unsigned long long)s->entries,
		(unsigned long long)s->claimed_high_water, (unsigned long long)s->claim_failures,
		(unsigned long long)s->fallbacks);
}

static void print_table(const struct ptss_trace_snapshot *s, FILE *f, bool final, bool verbose, bool latency)
{
	fprintf(f, "%s%-32s %12s %8s %-8s  %-18s %s\n", final ? "" : "-- live --\n", "PROBE", "HITS",
		"THREADS", "MODE", "ADDRESS", "MODULE");
	for (size_t i = 0; i < s->nprobes; i++) {
		const struct ptss_trace_probe *r = &s->probes[i];
		fprintf(f, "%-32s %12llu %8zu %-8s  0x%-16llx %s\n", r->probe, (unsigned long long)r->hits,
			r->nthreads, mode_names[r->mode], (unsigned long long)r->addr, r->module);
		if (verbose && r->trap_why && (r->mode != PTSS_PROBE_JUMP || r->jump_returns < r->returns))
			fprintf(f, "  trap: %s\n", r->trap_why);
	}
	for (size_t i = 0; final && latency && i < s->nprobes; i++)
		table_latency(f, &s->probes[i]);
	if (final)
		fprintf(f, "scratch: %llu pages, %llu entries, %llu claimed at most, %llu claim failures; "
			   "%llu fallback hits\n",
			(unsigned long long)s->pages, (unsigned long long)s->entries,
			(unsigned long long)s->claimed_high_water, (unsigned long long)s->claim_failures,
			(unsigned long long)s->fallbacks);
}

void report_print(const struct settings *set, const struct ptss_trace_snapshot *s, FILE *f, bool final)
{
	if (final && set->format == FORMAT_JSON)
		print_json(s, f, set->latency);
	else
		print_table(s, f, final, set->verbose, set->latency);
	fflush(f);
}
