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

static void print_json(const struct ptss_trace_snapshot *s, FILE *f)
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
		fputs("}}", f);
	}
	fprintf(f, "\n ],\n \"scratch\": {\"pages\": %llu, \"entries\": %llu, \"claimed_high_water\": %llu, "
		   "\"claim_failures\": %llu},\n \"fallbacks\": %llu}\n",
		(unsigned long long)s->pages, (unsigned long long)s->entries,
		(unsigned long long)s->claimed_high_water, (unsigned long long)s->claim_failures,
		(unsigned long long)s->fallbacks);
}

static void print_table(const struct ptss_trace_snapshot *s, FILE *f, bool final, bool verbose)
{
	fprintf(f, "%s%-32s %12s %8s %-8s  %-18s %s\n", final ? "" : "-- live --\n", "PROBE", "HITS",
		"THREADS", "MODE", "ADDRESS", "MODULE");
	for (size_t i = 0; i < s->nprobes; i++) {
		const struct ptss_trace_probe *r = &s->probes[i];
		fprintf(f, "%-32s %12llu %8zu %-8s  0x%-16llx %s\n", r->probe, (unsigned long long)r->hits,
			r->nthreads, mode_names[r->mode], (unsigned long long)r->addr, r->module);
		if (verbose && r->trap_why && r->mode != PTSS_PROBE_JUMP)
			fprintf(f, "  trap: %s\n", r->trap_why);
	}
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
		print_json(s, f);
	else
		print_table(s, f, final, set->verbose);
	fflush(f);
}
