/*
 * ptss: the command line. `ptss trace` counts function entries in a process, exactly,
 * with jump probes (counted inside the target) or int3 probes whose displaced
 * instructions run in per-thread scratch entries.
 * A client of libptss-probe (<ptss/probe.h>): arguments in, report and messages out.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* Messages of ptss itself: one line each on stderr, prefixed "ptss: "; -q drops INFO. */
static void say(enum ptss_tracer_level level, const char *line, void *ctx)
{
	const struct settings *set = ctx;
	if (level == PTSS_TRACER_INFO && set->quiet)
		return;
	fprintf(stderr, "ptss: %s\n", line);
}

__attribute__((format(printf, 2, 3)))
static void info(const struct settings *set, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	say(PTSS_TRACER_INFO, line, (void *)set);
}

/* "SIGKILL", or the number when the signal has no name. */
static const char *signame(int sig, char *buf, size_t len)
{
	const char *abbrev = sigabbrev_np(sig);
	if (abbrev)
		snprintf(buf, len, "SIG%s", abbrev);
	else
		snprintf(buf, len, "signal %d", sig);
	return buf;
}

/* Writes the final report entirely, or says why not: 0 or PTSS_EXIT_FAILURE. */
static int report_final(const struct settings *set, ptss_tracer *t, FILE *out)
{
	struct ptss_trace_snapshot *s = ptss_tracer_snapshot(t);
	int err = s ? 0 : errno;
	bool failed = !s;
	if (s) {
		errno = 0;
		report_print(set, s, out, true);
		err = errno;
		failed = fflush(out) != 0 || ferror(out);
		if (failed && errno)
			err = errno;
		ptss_trace_snapshot_free(s);
	}
	if (out != stderr && fclose(out) && !failed) {
		failed = true;
		err = errno;
	}
	if (!failed)
		return 0;
	fprintf(stderr, "ptss: cannot write the report to %s: %s\n",
		set->output ? set->output : "standard error", strerror(err ? err : EIO));
	return PTSS_EXIT_FAILURE;
}

/* --interval: a live table on stderr. */
static void live_report(ptss_tracer *t, void *ctx)
{
	struct ptss_trace_snapshot *s = ptss_tracer_snapshot(t);
	if (s)
		report_print(ctx, s, stderr, false);
	ptss_trace_snapshot_free(s);
}

static int exit_of(int err)
{
	switch (err) {
	case 0: return PTSS_EXIT_OK;
	case PTSS_TRACER_ESPEC: return PTSS_EXIT_USAGE;
	case PTSS_TRACER_EPROBE: return PTSS_EXIT_PROBE;
	case PTSS_TRACER_EATTACH: return PTSS_EXIT_ATTACH;
	default: return PTSS_EXIT_FAILURE;
	}
}

/* A wait status as ptss's own exit status. */
static int status_exit(int status)
{
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The run, after the target was got hold of: ptss's own status, or the command's. */
static int trace_run(const struct settings *set, ptss_tracer *t, FILE *out, struct events *ev)
{
	char sig[32];
	struct ptss_run_opts ro = PTSS_RUN_OPTS(.duration = set->duration, .interval = set->interval,
					       .tick = live_report, .tick_ctx = (void *)set);
	/* ptss's own status: 0, or its first failure; it wins over the command's. */
	int own = exit_of(ptss_tracer_run(t, &ro));
	uint64_t dropped = events_stop(ev); /* every event out before the report */
	if (dropped)
		fprintf(stderr, "ptss: %llu events dropped: the output was slower than the calls\n",
			(unsigned long long)dropped);
	int status = 0, ended = 0;
	if (set->pid)
		ended = ptss_tracer_wait(t, &status) == 1;
	if (own == PTSS_EXIT_PROBE) { /* nothing to report of a trace that could not start */
		if (out != stderr)
			fclose(out);
	} else {
		int r = report_final(set, t, out);
		if (!own)
			own = r;
		r = exit_of(ptss_tracer_check_armed(t));
		if (!own)
			own = r;
	}
	if (set->pid && ended) {
		if (WIFSIGNALED(status)) {
			fprintf(stderr, "ptss: process %d was killed by %s%s while traced\n", (int)set->pid,
				signame(WTERMSIG(status), sig, sizeof(sig)), WCOREDUMP(status) ? " (core dumped)" : "");
			if (!own)
				own = PTSS_EXIT_KILLED;
		} else {
			info(set, "process %d exited with status %d while traced", (int)set->pid,
			     WEXITSTATUS(status));
		}
	}
	if (set->pid)
		return own;
	/* Our child: its status is ours, once it is done (also after a detach). */
	ptss_tracer_wait(t, &status);
	if (own != PTSS_EXIT_PROBE && WIFSIGNALED(status)) {
		struct ptss_trace_snapshot *s = ptss_tracer_snapshot(t);
		info(set, "%s (process %d) was killed by %s%s", set->command[0], s ? (int)s->pid : 0,
		     signame(WTERMSIG(status), sig, sizeof(sig)), WCOREDUMP(status) ? " (core dumped)" : "");
		ptss_trace_snapshot_free(s);
	}
	return own ? own : status_exit(status);
}

static int trace_main(int argc, char **argv)
{
	struct settings set;
	int rc = settings_parse(&set, argc, argv);
	if (rc >= 0)
		return rc;
	FILE *out = stderr;
	if (set.output && !(out = fopen(set.output, "w"))) {
		fprintf(stderr, "ptss: cannot write %s: %s\n", set.output, strerror(errno));
		return PTSS_EXIT_USAGE;
	}
	ptss_tracer *t = NULL;
	struct events *ev = NULL;
	if (set.events && !(ev = events_start(out, set.format))) {
		fprintf(stderr, "ptss: %s\n", strerror(errno));
		rc = PTSS_EXIT_FAILURE;
		goto out;
	}
	struct ptss_tracer_opts o = PTSS_TRACER_OPTS(.entry_size = set.entry_size, .follow = set.follow,
						     .no_scratch = set.no_scratch,
						     .no_optimize = set.no_optimize, .latency = set.latency,
						     .on_call = ev ? events_call : NULL, .call_ctx = ev,
						     .print = say, .print_ctx = &set);
	t = ptss_tracer_new(&o);
	if (!t) {
		fprintf(stderr, "ptss: %s\n", strerror(errno));
		rc = PTSS_EXIT_FAILURE;
		goto out;
	}
	for (int i = 0; i < set.nprobes; i++)
		if ((rc = exit_of(ptss_tracer_add_probe(t, set.probes[i]))))
			goto out;
	int err = set.pid ? ptss_tracer_attach(t, set.pid) : ptss_tracer_start(t, set.command);
	if (err == PTSS_TRACER_EEXITED) { /* it never reached its exec: its status is ours */
		int status = 0;
		ptss_tracer_wait(t, &status);
		rc = status_exit(status);
		if (!rc)
			rc = PTSS_EXIT_ATTACH;
		goto out;
	}
	if ((rc = exit_of(err)))
		goto out;
	rc = trace_run(&set, t, out, ev);
	ev = NULL;
	out = NULL;
out:
	ptss_tracer_free(t);
	events_stop(ev);
	if (out && out != stderr)
		fclose(out);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "trace"))
		return trace_main(argc - 1, argv + 1);
	if (argc >= 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))) {
		printf("ptss %s\n", PTSS_VERSION);
		return 0;
	}
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("usage: ptss trace [options] PROBE... [-- COMMAND [ARG...]]\n"
		       "       ptss trace --help | ptss --version\n");
		return 0;
	}
	fprintf(stderr, "ptss: %s (try 'ptss trace --help')\n",
		argc < 2 ? "no command given" : "unknown command");
	return PTSS_EXIT_USAGE;
}
