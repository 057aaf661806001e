/*
 * Getting hold of a target — attaching to a running one (every thread, until no new one
 * shows up) or starting a command seized before its exec — and its setup: entries for
 * every thread, probes placed, then everything resumed.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#define TRACE_OPTIONS (PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | \
		       PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC | PTRACE_O_TRACEEXIT)

static const char *attach_hint(int err)
{
	switch (err) {
	case EPERM:
		return access("/proc/sys/kernel/yama/ptrace_scope", F_OK) == 0
			       ? ": ptrace is restricted (see /proc/sys/kernel/yama/ptrace_scope; run as root "
				 "or with CAP_SYS_PTRACE, or set it to 0), or the process is already traced"
			       : ": run as the process's owner with ptrace allowed, as root, or with "
				 "CAP_SYS_PTRACE; or the process is already traced by another tracer";
	case ESRCH:
		return ": no such process";
	default:
		return "";
	}
}

/* Task tid's tracer (TracerPid in /proc/TID/status; -1 when unreadable) and its state
 * letter ('X' when unreadable). */
pid_t target_tracer(pid_t tid, char *state)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	FILE *f = fopen(path, "re");
	int tracer = -1;
	*state = 'X';
	while (f && fgets(line, sizeof(line), f)) {
		sscanf(line, "State: %c", state);
		sscanf(line, "TracerPid: %d", &tracer);
	}
	if (f)
		fclose(f);
	return tracer;
}

/* Is task tid traced, and by whom? -1 when it is gone or exiting (a zombie thread cannot
 * be traced). */
static pid_t tracer_of(pid_t tid)
{
	char state;
	pid_t tracer = target_tracer(tid, &state);
	return state == 'Z' || state == 'X' ? -1 : tracer;
}

/*
 * A child process forked while we attach: nothing is armed in it yet, let it go untraced
 * once its first stop is seen.
 */
static void release_fork_child(pid_t child)
{
	int status;
	if (waitpid(child, &status, __WALL) == child && WIFSTOPPED(status))
		ptrace(PTRACE_DETACH, child, 0, 0);
}

/*
 * Waits until th is in its interrupt stop. What comes first is settled so that nothing is
 * lost: a signal is delivered (and th interrupted again), a thread it cloned becomes a
 * thread to wait for (traced from birth, its first stop still to come), a forked child is
 * let go. False when th died.
 */
static bool settle_attach_stop(struct tracer *t, struct thread *th)
{
	for (;;) {
		int status;
		if (waitpid(th->tid, &status, __WALL) < 0 || !WIFSTOPPED(status))
			return false;
		int event = status >> 16;
		if (event == PTRACE_EVENT_STOP)
			return true;
		if (event == PTRACE_EVENT_CLONE || event == PTRACE_EVENT_FORK || event == PTRACE_EVENT_VFORK) {
			unsigned long child;
			ptrace(PTRACE_GETEVENTMSG, th->tid, 0, &child);
			/* A new thread's first stop is still to come, unless the task list showed
			 * the thread first: then it may have been seen already. */
			if (event != PTRACE_EVENT_CLONE)
				release_fork_child((pid_t)child);
			else if (!thread_find(t, (pid_t)child))
				thread_add(t, th->proc, (pid_t)child)->state.stop = TS_STOPPING;
		}
		ptrace(PTRACE_CONT, th->tid, 0, event == 0 ? WSTOPSIG(status) : 0);
		ptrace(PTRACE_INTERRUPT, th->tid, 0, 0);
	}
}

/*
 * Seizes the threads listed in /proc/PID/task that are not ours yet. A thread that another
 * seized thread cloned is ours already (SEIZE says EPERM): its clone event may not have
 * been read yet. Returns how many threads were added, or -errno.
 */
static int seize_listed(struct tracer *t, struct process *p)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)p->pid);
	DIR *d = opendir(path);
	if (!d)
		return -errno;
	int added = 0, err = 0;
	struct dirent *de;
	while (!err && (de = readdir(d))) {
		pid_t tid = atoi(de->d_name);
		if (tid <= 0 || thread_find(t, tid))
			continue;
		if (ptrace(PTRACE_SEIZE, tid, 0, TRACE_OPTIONS) == 0) {
			ptrace(PTRACE_INTERRUPT, tid, 0, 0);
		} else if (errno != EPERM && errno != ESRCH) {
			err = -errno;
			break;
		} else {
			pid_t tracer = tracer_of(tid);
			if (tracer < 0)
				continue; /* it exited meanwhile */
			if (tracer != getpid()) {
				err = -EPERM;
				break;
			}
		}
		thread_add(t, p, tid)->state.stop = TS_STOPPING;
		added++;
	}
	closedir(d);
	return err ? err : added;
}

/*
 * Attaches to every thread of pid and stops them all. Threads are born meanwhile: those
 * that a seized thread creates are traced from birth and announced by its clone event, the
 * others show up in the task list. So: seize what is listed, wait until every seized thread
 * is stopped, list again; when a listing finds nothing new, no thread of the process runs
 * untraced and none can be born. Only then is anything written.
 */
int target_attach(struct tracer *t, pid_t pid)
{
	if (kill(pid, 0) && errno == ESRCH) {
		say_error(t, "cannot attach to %d: no such process", (int)pid);
		return OUT_ATTACH;
	}
	pid_t other = tracer_of(pid);
	if (other > 0) {
		say_error(t, "cannot attach to %d: already traced by process %d", (int)pid, (int)other);
		return OUT_ATTACH;
	}
	struct process *p = process_new(t, pid);
	if (!p) {
		int err = errno == EACCES ? EPERM : errno; /* /proc/PID/mem says EACCES for the same cause */
		say_error(t, "cannot attach to %d: %s%s", (int)pid, strerror(err), attach_hint(err));
		return OUT_ATTACH;
	}
	for (;;) {
		int added = seize_listed(t, p);
		if (added < 0) {
			say_error(t, "cannot attach to %d: %s%s", (int)pid, strerror(-added), attach_hint(-added));
			return OUT_ATTACH; /* the caller detaches what was seized */
		}
		for (bool waiting = true; waiting;) {
			waiting = false;
			for (size_t i = 0; i < t->tcap; i++) {
				struct thread *th = t->threads[i];
				if (!th || th->state.stop != TS_STOPPING)
					continue;
				waiting = true; /* a settled thread may have added others: scan again */
				th->state.stop = TS_RUNNING;
				if (!settle_attach_stop(t, th)) {
					thread_remove(t, th);
					break; /* the table moved */
				}
			}
		}
		if (added > 0)
			continue;
		if (p->nthreads)
			return 0;
		say_error(t, "cannot attach to %d: it exited", (int)pid);
		return OUT_ATTACH;
	}
}

int target_start(struct tracer *t, char *const argv[])
{
	int ready[2];
	if (pipe2(ready, O_CLOEXEC))
		return OUT_FAILURE;
	pid_t pid = fork();
	if (pid < 0) {
		say_error(t, "cannot start %s: %s", argv[0], strerror(errno));
		return OUT_ATTACH;
	}
	if (pid == 0) {
		/* Wait to be seized, so that the exec is seen; then become the command. */
		close(ready[1]);
		char c;
		if (read(ready[0], &c, 1) != 1)
			_exit(127);
		execvp(argv[0], argv);
		int err = errno;
		say_error(t, "cannot run %s: %s", argv[0], strerror(err));
		_exit(err == ENOENT ? 127 : 126);
	}
	close(ready[0]);
	t->child = pid;
	if (ptrace(PTRACE_SEIZE, pid, 0, TRACE_OPTIONS | PTRACE_O_EXITKILL)) {
		int err = errno;
		say_error(t, "cannot trace %s: %s%s", argv[0], strerror(err), attach_hint(err));
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		t->child = 0;
		close(ready[1]);
		return OUT_ATTACH;
	}
	if (write(ready[1], "x", 1) != 1) {
		close(ready[1]);
		return OUT_FAILURE;
	}
	close(ready[1]);
	/* Until the exec there is nothing to probe: run the child to its exec event. */
	for (;;) {
		int status;
		if (waitpid(pid, &status, __WALL) < 0)
			return OUT_FAILURE;
		if (WIFEXITED(status) || WIFSIGNALED(status)) {
			t->child_exited = true;
			t->child_status = status;
			t->child = 0;
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		}
		if ((status >> 16) == PTRACE_EVENT_EXEC)
			break;
		int sig = (status >> 16) == 0 && WSTOPSIG(status) != SIGTRAP ? WSTOPSIG(status) : 0;
		ptrace(PTRACE_CONT, pid, 0, sig);
	}
	struct process *p = process_new(t, pid);
	if (!p) {
		say_error(t, "cannot trace %s: %s", argv[0], strerror(errno));
		return OUT_ATTACH;
	}
	p->started = true;
	p->before_entry = true;
	thread_add(t, p, pid);
	return 0;
}

/* The first image: every thread stopped, entries for all (enable), probes placed and
 * optimized. */
int target_setup(struct tracer *t)
{
	struct process *p = t->procs;
	size_t n = 0;
	struct thread **ths = calloc((size_t)p->nthreads + 1, sizeof(*ths));
	ptss_entry **entries = calloc((size_t)p->nthreads + 1, sizeof(*entries));
	if (!ths || !entries)
		abort();
	for (size_t i = 0; i < t->tcap; i++)
		if (t->threads[i] && t->threads[i]->proc == p)
			ths[n++] = t->threads[i];
	ptss_space_ptrace_use_thread(p->space, ths[0]->tid);
	/* Each injection is checked against the thread's seccomp filters: a refusal leaves the
	 * threads without entries, never the target harmed. */
	int err = t->opts.no_scratch ? 0 : ptss_enable(p->scratch, n, entries);
	if (err)
		scratch_refused(t, p, n, err);
	for (size_t i = 0; i < n && !err; i++)
		ths[i]->entry = entries[i];
	free(entries);
	count_scratch(t, p->scratch);
	int rc = place_probes(t, p, true);
	if (!rc)
		jumps_optimize(t, p, ths[0], true);
	free(ths);
	return rc;
}

/* Resumes every thread after setup. */
void target_resume_all(struct tracer *t)
{
	for (size_t i = 0; i < t->tcap; i++)
		if (t->threads[i])
			ptrace(PTRACE_CONT, t->threads[i]->tid, 0, 0);
}
