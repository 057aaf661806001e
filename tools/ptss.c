/*
 * ptss: the command line. `ptss trace` counts function entries in a process, exactly,
 * with int3 probes whose displaced instructions run in per-thread scratch entries.
 * A client of libptss's public API and of the probe engine in trace/.
 */
#define _GNU_SOURCE
#include "trace/tracer.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* "SIGKILL", or the number when the signal has no name. */
static const char *signame(int sig)
{
	static char buf[16];
	const char *abbrev = sigabbrev_np(sig);
	if (abbrev)
		snprintf(buf, sizeof(buf), "SIG%s", abbrev);
	else
		snprintf(buf, sizeof(buf), "signal %d", sig);
	return buf;
}

/* Writes the final report entirely, or says why not: 0 or PTSS_EXIT_FAILURE. */
static int report_final(struct tracer *t)
{
	errno = 0;
	report_print(t, t->out, true);
	int err = errno;
	bool failed = fflush(t->out) != 0 || ferror(t->out);
	if (failed && errno)
		err = errno;
	if (t->out != stderr) {
		if (fclose(t->out) && !failed) {
			failed = true;
			err = errno;
		}
		t->out = NULL;
	}
	if (!failed)
		return 0;
	msg("cannot write the report to %s: %s", t->set->output ? t->set->output : "standard error",
	    strerror(err ? err : EIO));
	return PTSS_EXIT_FAILURE;
}

/* At the end of the run: a probe armed in no process is an error (said once). */
static int probes_never_armed(struct tracer *t)
{
	int rc = 0;
	for (int i = 0; i < t->nspecs; i++) {
		struct spec *sp = &t->specs[i];
		if (sp->armed)
			continue;
		rc = PTSS_EXIT_PROBE;
		if (sp->said)
			continue; /* its error was said when it happened */
		if (sp->parsed.module_is_path)
			msg("probe %s was never armed: %s was never loaded", sp->arg, sp->parsed.module);
		else if (sp->parsed.module)
			msg("probe %s was never armed: no library named '%s' was loaded", sp->arg,
			    sp->parsed.module);
		else
			msg("probe %s was never armed", sp->arg);
	}
	return rc;
}

/* Is PID traced by ptss (TracerPid in /proc/PID/status)? A zombie still is, until reaped. */
static bool traced_by_us(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "re");
	int tracer = 0;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "TracerPid: %d", &tracer) == 1)
			break;
	if (f)
		fclose(f);
	return tracer == getpid();
}

/* -p: did the attached process end while traced, rather than being detached? The loop may
 * have left its last status behind (it ends when no traced thread is left): collect it, and
 * the statuses of its threads that come first. Never waits for a process ptss let go. */
static void reap_attached(struct tracer *t)
{
	for (int tries = 0; !t->attached_ended && tries < 1000;) {
		int status;
		pid_t pid = waitpid(-1, &status, __WALL | WNOHANG);
		if (pid < 0)
			break; /* nothing traced is left */
		if (pid > 0) {
			if (WIFSTOPPED(status)) {
				ptrace(PTRACE_CONT, pid, 0, 0);
			} else if (pid == t->set->pid) {
				t->attached_ended = true;
				t->attached_status = status;
			}
			continue;
		}
		if (!traced_by_us(t->set->pid))
			break; /* detached, or reaped */
		struct timespec ms = { 0, 10 * 1000 * 1000 };
		nanosleep(&ms, NULL);
		tries++;
	}
}

static int trace_main(int argc, char **argv)
{
	struct settings set;
	int rc = settings_parse(&set, argc, argv);
	if (rc >= 0)
		return rc;
	struct tracer t = { .set = &set, .out = stderr };
	if (set.output && !(t.out = fopen(set.output, "w"))) {
		msg("cannot write %s: %s", set.output, strerror(errno));
		return PTSS_EXIT_USAGE;
	}
	t.specs = calloc((size_t)set.nprobes, sizeof(*t.specs));
	t.nspecs = set.nprobes;
	for (int i = 0; i < set.nprobes; i++) {
		char err[256];
		t.specs[i].arg = set.probes[i];
		if (probe_spec_parse(set.probes[i], &t.specs[i].parsed, err, sizeof(err))) {
			msg("bad probe '%s': %s", set.probes[i], err);
			rc = PTSS_EXIT_USAGE;
			goto out;
		}
		/* The vDSO is the kernel's code, mapped from no file: refused before anything runs. */
		if (probe_spec_is_vdso(&t.specs[i].parsed)) {
			msg("probe %s: the vDSO cannot be probed (kernel-provided code, no file); "
			    "probe the libc function that calls it, e.g. libc:%s", set.probes[i],
			    t.specs[i].parsed.func);
			rc = PTSS_EXIT_PROBE;
			goto out;
		}
		/* A module named by path must be an ELF file now, whenever it gets mapped. */
		struct sym_file *f;
		if (t.specs[i].parsed.module_is_path &&
		    sym_open(t.specs[i].parsed.module, SYM_HEADERS_ONLY, &f, err, sizeof(err)) < 0) {
			msg("probe %s: %s", set.probes[i], err);
			rc = PTSS_EXIT_PROBE;
			goto out;
		} else if (t.specs[i].parsed.module_is_path) {
			sym_close(f);
		}
	}
	if (set.pid) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/comm", (int)set.pid);
		FILE *f = fopen(path, "r");
		static char comm[64];
		if (f && fgets(comm, sizeof(comm), f))
			comm[strcspn(comm, "\n")] = 0, t.command_name = comm;
		if (f)
			fclose(f);
		rc = target_attach(&t, set.pid);
	} else {
		t.command_name = set.command[0];
		rc = target_start(&t, set.command);
		if (rc == 0 && !t.procs)
			rc = PTSS_EXIT_ATTACH;
		else if (rc > 0 && t.child_exited)
			goto out; /* it never reached its exec: its status is ours */
	}
	if (rc == 0)
		rc = loop_setup(&t);
	if (rc) {
		/* The started command never runs: killed while still stopped at its exec, before
		 * any detach could let it go on. */
		if (t.child && !t.child_exited)
			kill(t.child, SIGKILL);
		loop_detach_stopped(&t); /* whatever was seized goes back untouched */
		if (t.child && !t.child_exited)
			waitpid(t.child, NULL, 0);
		goto out;
	}
	loop_resume_all(&t);
	/* ptss's own status: 0, or its first failure; it wins over the command's. */
	int own = loop_run(&t);
	if (own < 0) { /* a request on a task that was just killed: its end is said below */
		if (own != -ESRCH)
			msg("tracing failed: %s", strerror(-own));
		own = own == -ESRCH ? 0 : PTSS_EXIT_FAILURE;
	}
	if (t.child && own == PTSS_EXIT_PROBE && !t.child_exited)
		kill(t.child, SIGKILL); /* stopped at its entry, before any code of its own */
	if (set.pid)
		reap_attached(&t);
	if (own != PTSS_EXIT_PROBE) { /* nothing to report of a trace that could not start */
		int r = report_final(&t);
		if (!own)
			own = r;
		r = probes_never_armed(&t);
		if (!own)
			own = r;
	}
	if (set.pid && t.attached_ended) {
		int st = t.attached_status;
		if (WIFSIGNALED(st)) {
			msg("process %d was killed by %s%s while traced", (int)set.pid, signame(WTERMSIG(st)),
			    WCOREDUMP(st) ? " (core dumped)" : "");
			if (!own)
				own = PTSS_EXIT_KILLED;
		} else {
			info(&t, "process %d exited with status %d while traced", (int)set.pid, WEXITSTATUS(st));
		}
	}
	rc = own;
	if (t.child) {
		/* Our child: its status is ours, once it is done (also after a detach). */
		int status = t.child_status;
		/* Reap with __WALL: a traced thread's exit must be collected before its leader's. */
		while (!t.child_exited) {
			pid_t pid = waitpid(-1, &status, __WALL);
			if (pid < 0) {
				status = 0;
				break;
			}
			if (pid == t.child && (WIFEXITED(status) || WIFSIGNALED(status)))
				t.child_exited = true;
			else if (WIFSTOPPED(status))
				ptrace(PTRACE_CONT, pid, 0, 0);
		}
		if (own != PTSS_EXIT_PROBE && WIFSIGNALED(status))
			info(&t, "%s (process %d) was killed by %s%s", set.command[0], (int)t.child,
			     signame(WTERMSIG(status)), WCOREDUMP(status) ? " (core dumped)" : "");
		if (!own)
			rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	}
out:
	for (int i = 0; i < t.nspecs; i++)
		probe_spec_free(&t.specs[i].parsed);
	free(t.specs);
	for (size_t i = 0; i < t.nrows; i++) {
		free(t.rows[i]->probe);
		free(t.rows[i]->module);
		free(t.rows[i]->threads);
		free(t.rows[i]);
	}
	free(t.rows);
	free(t.threads);
	if (t.out && t.out != stderr)
		fclose(t.out);
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
