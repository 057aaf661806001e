/*
 * A target process under ptrace, for the tests of the ptrace space: started with pipes
 * on its stdin and stdout, seized with every thread, and driven by a small event pump.
 */
#ifndef PTSS_TESTS_TRACEE_H
#define PTSS_TESTS_TRACEE_H

#include <stdbool.h>
#include <sys/types.h>

#define TRACEE_MAX_THREADS 1024

struct tracee {
	pid_t pid;
	int to, from;                  /* its stdin, its stdout */
	pid_t tids[TRACEE_MAX_THREADS]; /* live threads, seized */
	int ntids;
	char out[4096];                /* what it printed, not yet consumed */
	size_t outlen;
	/* Called with the new thread stopped in its first stop, and when a thread is gone. */
	void (*on_thread)(struct tracee *t, pid_t tid, void *arg);
	void (*on_exit)(struct tracee *t, pid_t tid, void *arg);
	/* Called at the fork child's first stop (it is seized, stopped); default: detach it. */
	void (*on_fork_child)(struct tracee *t, pid_t child, void *arg);
	/* Called at PTRACE_EVENT_EXEC, the thread stopped; the thread list is reset to pid. */
	void (*on_exec)(struct tracee *t, void *arg);
	void *arg;
	bool stopping; /* inside tracee_stop_all: new threads stay stopped */
};

#define TRACE_OPTIONS (PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | \
		       PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC | PTRACE_O_TRACEEXIT)

/* Starts argv[0] (a path) with its args, waits for its first line, seizes every thread
 * and stops them all. 0 or a negative errno. */
int tracee_start(struct tracee *t, char *const argv[]);
/* Stops every thread (PTRACE_INTERRUPT) and waits for each stop. */
int tracee_stop_all(struct tracee *t);
/* Resumes every stopped thread. */
int tracee_cont_all(struct tracee *t);
/* Sends a command line (with its '\n'). */
int tracee_send(struct tracee *t, const char *line);
/* Runs the event pump until the target printed a line starting with `prefix` (copied to
 * line); false after `seconds`, or if the target died. */
bool tracee_expect(struct tracee *t, const char *prefix, char *line, size_t len, int seconds);
/* Runs the event pump for about ms milliseconds. */
void tracee_pump(struct tracee *t, int ms);
/* Detaches every thread (they must be stopped) and reaps the process after "quit". */
int tracee_finish(struct tracee *t);
/* Kills and reaps. */
void tracee_kill(struct tracee *t);

#endif
