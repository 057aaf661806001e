/*
 * ptss: the command line. `ptss trace` counts function entries in a process, exactly,
 * with int3 probes whose displaced instructions run in per-thread scratch entries.
 * A client of libptss's public API and of the probe engine in trace/.
 */
#include "trace/tracer.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

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
		loop_detach_stopped(&t); /* whatever was seized goes back untouched */
		if (t.child && !t.child_exited) {
			kill(t.child, SIGKILL); /* never ran user code: it stopped at its exec */
			waitpid(t.child, NULL, 0);
		}
		goto out;
	}
	loop_resume_all(&t);
	rc = loop_run(&t);
	if (rc != PTSS_EXIT_PROBE) /* nothing to report of a trace that could not start */
		report_print(&t, t.out, true);
	if (t.child && rc == PTSS_EXIT_PROBE && !t.child_exited)
		kill(t.child, SIGKILL); /* stopped at its entry, before any code of its own */
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
		if (rc != PTSS_EXIT_PROBE)
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
	if (t.out != stderr)
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
