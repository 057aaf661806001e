/* The command line of ptss: its own settings, apart from the library's options. */
#ifndef PTSS_TOOLS_CLI_H
#define PTSS_TOOLS_CLI_H

#include <ptss/probe.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

/* Exit statuses of ptss itself (documented in ptss(1)). */
enum {
	PTSS_EXIT_OK = 0,
	PTSS_EXIT_USAGE = 2,   /* bad command line */
	PTSS_EXIT_PROBE = 3,   /* a probe cannot be placed: unknown function/module, refused instruction, not an ELF */
	PTSS_EXIT_ATTACH = 4,  /* cannot attach or start: no such process, permission, already traced */
	PTSS_EXIT_FAILURE = 5, /* tracing failed midway; the target was detached; or the report was lost */
	PTSS_EXIT_KILLED = 6,  /* -p: the attached process was killed by a signal while traced */
};

enum trace_format { FORMAT_TABLE, FORMAT_JSON };

/* What the user asked for; settings_default() gives each field's default. */
struct settings {
	char **probes;         /* PROBE arguments */
	int nprobes;
	pid_t pid;             /* -p: attach; 0 (default): start command */
	char **command;        /* after "--" */
	bool follow;           /* -f; default false */
	const char *output;    /* -o FILE; NULL (default): stderr */
	enum trace_format format; /* --format; default table */
	double interval;       /* --interval SECONDS; 0 (default): none */
	double duration;       /* --duration SECONDS; 0 (default): none */
	bool quiet;            /* -q: no informational messages; default false */
	size_t entry_size;     /* --entry-size; default 64 */
	bool no_scratch;       /* --no-scratch: every hit takes the fallback (for comparison) */
	bool no_optimize;      /* --no-optimize: trap probes only */
	bool latency;          /* --latency: time every call (returns probed) */
	bool events;           /* --events: a line per call as it returns (implies latency) */
	bool verbose;          /* -v: why a probe is a trap probe */
};

/* settings.c */
void settings_default(struct settings *s);
int settings_parse(struct settings *s, int argc, char **argv); /* PTSS_EXIT_* or -1 to go on */

/* events.c: --events, written by a thread of its own; events_stop gives the drops */
struct events;
struct events *events_start(FILE *out, enum trace_format format);
void events_call(const struct ptss_trace_call *c, void *ctx); /* a ptss_tracer_call_fn */
uint64_t events_stop(struct events *e);
const char *events_duration(uint64_t ns, char *buf, size_t len); /* "12.3us" */

/* report.c: the report of a snapshot; final: the end-of-run report in s's format, else a
 * live table */
void report_print(const struct settings *set, const struct ptss_trace_snapshot *s, FILE *f, bool final);

#endif
