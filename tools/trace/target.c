/*
 * Traced processes and threads: the tables, the target's memory, and getting hold of a
 * target — attaching to a running one (every thread) or starting a command.
 */
#define _GNU_SOURCE
#include "tracer.h"

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

/* ---- threads: open addressing on tid, tombstones never needed (rehash on removal) ---- */

static size_t slot_of(const struct tracer *t, pid_t tid)
{
	return ((size_t)tid * 0x9E3779B1u) & (t->tcap - 1);
}

struct thread *thread_find(struct tracer *t, pid_t tid)
{
	if (!t->tcap)
		return NULL;
	for (size_t i = slot_of(t, tid);; i = (i + 1) & (t->tcap - 1)) {
		if (!t->threads[i])
			return NULL;
		if (t->threads[i]->tid == tid)
			return t->threads[i];
	}
}

static void table_put(struct tracer *t, struct thread *th)
{
	size_t i = slot_of(t, th->tid);
	while (t->threads[i])
		i = (i + 1) & (t->tcap - 1);
	t->threads[i] = th;
}

static void table_grow(struct tracer *t)
{
	size_t old = t->tcap;
	struct thread **prev = t->threads;
	t->tcap = old ? old * 2 : 64;
	t->threads = calloc(t->tcap, sizeof(*t->threads));
	if (!t->threads)
		abort();
	for (size_t i = 0; i < old; i++)
		if (prev[i])
			table_put(t, prev[i]);
	free(prev);
}

struct thread *thread_add(struct tracer *t, struct process *p, pid_t tid)
{
	struct thread *th = thread_find(t, tid);
	if (th)
		return th;
	if ((t->tcount + 1) * 2 > t->tcap)
		table_grow(t);
	th = calloc(1, sizeof(*th));
	if (!th)
		abort();
	th->tid = tid;
	th->proc = p;
	table_put(t, th);
	t->tcount++;
	p->nthreads++;
	return th;
}

void thread_remove(struct tracer *t, struct thread *th)
{
	size_t i = slot_of(t, th->tid);
	while (t->threads[i] != th)
		i = (i + 1) & (t->tcap - 1);
	t->threads[i] = NULL;
	/* Re-place the rest of the cluster so that lookups never stop at the hole. */
	for (size_t j = (i + 1) & (t->tcap - 1); t->threads[j]; j = (j + 1) & (t->tcap - 1)) {
		struct thread *moved = t->threads[j];
		t->threads[j] = NULL;
		table_put(t, moved);
	}
	t->tcount--;
	th->proc->nthreads--;
	if (th->entry && th->proc->scratch)
		ptss_release(th->proc->scratch, th->entry);
	thread_fold_counts(t, th);
	free(th->counts);
	free(th);
}

/* Claims the thread's entry (the thread is stopped: injections may run in it). */
void thread_claim(struct tracer *t, struct thread *th)
{
	struct process *p = th->proc;
	if (!p->scratch || th->entry || t->set->no_scratch)
		return;
	ptss_space_ptrace_use_thread(p->space, th->tid);
	th->entry = ptss_claim(p->scratch);
	if (!th->entry) {
		t->claim_failures++;
		info(t, "thread %d has no scratch entry (%s): its hits use the fallback",
		     (int)th->tid, strerror(errno));
	}
	scratch_note(t, p);
}

void scratch_note(struct tracer *t, struct process *p)
{
	if (!p->scratch)
		return;
	struct ptss_stats st;
	ptss_stats_get(p->scratch, &st);
	/* Per-process high waters, summed: an upper bound when processes come and go. */
	if (st.pages > t->pages_hw)
		t->pages_hw = st.pages;
	if (st.entries > t->entries_hw)
		t->entries_hw = st.entries;
	if (st.claimed_high_water > t->claimed_hw)
		t->claimed_hw = st.claimed_high_water;
}

/* ---- processes ---- */

struct process *process_new(struct tracer *t, pid_t pid)
{
	struct process *p = calloc(1, sizeof(*p));
	if (!p)
		abort();
	p->pid = pid;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	p->mem = open(path, O_RDWR | O_CLOEXEC);
	p->resolved = calloc((size_t)t->nspecs + 1, sizeof(*p->resolved));
	p->space = ptss_space_ptrace_new(pid, pid);
	struct ptss_opts o = PTSS_OPTS(.entry_size = t->set->entry_size);
	p->scratch = p->space ? ptss_proc_new(p->space, &o) : NULL;
	if (p->mem < 0 || !p->resolved || !p->scratch) {
		process_free(t, p);
		return NULL;
	}
	p->next = t->procs;
	t->procs = p;
	return p;
}

void process_free(struct tracer *t, struct process *p)
{
	for (struct process **pp = &t->procs; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	for (size_t i = 0; i < t->tcap; i++) /* threads still listed: forget them */
		if (t->threads[i] && t->threads[i]->proc == p) {
			thread_remove(t, t->threads[i]);
			i = (size_t)-1; /* the table moved under us: start over */
		}
	if (p->scratch) {
		scratch_note(t, p);
		ptss_exec_exit(p->scratch); /* gone with its image: nothing to unmap */
		ptss_proc_free(p->scratch);
	}
	ptss_space_free(p->space);
	sites_clear(p);
	free(p->resolved);
	if (p->mem >= 0)
		close(p->mem);
	free(p);
}

int mem_read(struct process *p, uint64_t addr, void *buf, size_t len)
{
	return pread(p->mem, buf, len, (off_t)addr) == (ssize_t)len ? 0 : -EFAULT;
}

int mem_write(struct process *p, uint64_t addr, const void *buf, size_t len)
{
	return pwrite(p->mem, buf, len, (off_t)addr) == (ssize_t)len ? 0 : -EFAULT;
}

/* ---- getting hold of a target ---- */

/* Waits for tid's PTRACE_EVENT_STOP after PTRACE_INTERRUPT or SEIZE of a stopped task. */
static int wait_event_stop(pid_t tid)
{
	for (;;) {
		int status;
		if (waitpid(tid, &status, __WALL) < 0)
			return -errno;
		if (!WIFSTOPPED(status))
			return -ESRCH;
		if ((status >> 16) == PTRACE_EVENT_STOP)
			return 0;
		/* A signal got there first: keep it for the target, stop again. */
		int sig = (status >> 16) == 0 ? WSTOPSIG(status) : 0;
		ptrace(PTRACE_CONT, tid, 0, sig);
		ptrace(PTRACE_INTERRUPT, tid, 0, 0);
	}
}

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

/* Is pid traced by someone (TracerPid in /proc/PID/status)? */
static pid_t tracer_of(pid_t pid)
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
	return tracer;
}

int target_attach(struct tracer *t, pid_t pid)
{
	if (kill(pid, 0) && errno == ESRCH) {
		msg("cannot attach to %d: no such process", (int)pid);
		return PTSS_EXIT_ATTACH;
	}
	pid_t other = tracer_of(pid);
	if (other) {
		msg("cannot attach to %d: already traced by process %d", (int)pid, (int)other);
		return PTSS_EXIT_ATTACH;
	}
	struct process *p = process_new(t, pid);
	if (!p) {
		int err = errno == EACCES ? EPERM : errno; /* /proc/PID/mem says EACCES for the same cause */
		msg("cannot attach to %d: %s%s", (int)pid, strerror(err), attach_hint(err));
		return PTSS_EXIT_ATTACH;
	}
	/* Seize every thread; threads may be born meanwhile, so repeat until none is new. */
	for (bool grew = true; grew;) {
		grew = false;
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
		DIR *d = opendir(path);
		struct dirent *de;
		while (d && (de = readdir(d))) {
			pid_t tid = atoi(de->d_name);
			if (tid <= 0 || thread_find(t, tid))
				continue;
			if (ptrace(PTRACE_SEIZE, tid, 0, TRACE_OPTIONS)) {
				int err = errno;
				if (err == ESRCH)
					continue; /* it exited meanwhile */
				msg("cannot attach to %d: %s%s", (int)pid, strerror(err), attach_hint(err));
				if (d)
					closedir(d);
				return PTSS_EXIT_ATTACH; /* loop_run's cleanup detaches what we seized */
			}
			struct thread *th = thread_add(t, p, tid);
			ptrace(PTRACE_INTERRUPT, tid, 0, 0);
			th->stopping = true;
			grew = true;
		}
		if (d)
			closedir(d);
	}
	return 0;
}

/* Waits for every seized thread's first stop. */
int target_wait_stopped(struct tracer *t)
{
	for (size_t i = 0; i < t->tcap; i++) {
		struct thread *th = t->threads[i];
		if (th && th->stopping) {
			if (wait_event_stop(th->tid)) {
				thread_remove(t, th);
				i = (size_t)-1;
				continue;
			}
			th->stopping = false;
		}
	}
	return 0;
}

int target_start(struct tracer *t, char **argv)
{
	int ready[2];
	if (pipe2(ready, O_CLOEXEC))
		return PTSS_EXIT_FAILURE;
	pid_t pid = fork();
	if (pid < 0) {
		msg("cannot start %s: %s", argv[0], strerror(errno));
		return PTSS_EXIT_ATTACH;
	}
	if (pid == 0) {
		/* Wait to be seized, so that the exec is seen; then become the command. */
		close(ready[1]);
		char c;
		if (read(ready[0], &c, 1) != 1)
			_exit(127);
		execvp(argv[0], argv);
		int err = errno;
		fprintf(stderr, "ptss: cannot run %s: %s\n", argv[0], strerror(err));
		_exit(err == ENOENT ? 127 : 126);
	}
	close(ready[0]);
	t->child = pid;
	if (ptrace(PTRACE_SEIZE, pid, 0, TRACE_OPTIONS | PTRACE_O_EXITKILL)) {
		int err = errno;
		msg("cannot trace %s: %s%s", argv[0], strerror(err), attach_hint(err));
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		t->child = 0;
		close(ready[1]);
		return PTSS_EXIT_ATTACH;
	}
	if (write(ready[1], "x", 1) != 1) {
		close(ready[1]);
		return PTSS_EXIT_FAILURE;
	}
	close(ready[1]);
	/* Until the exec there is nothing to probe: run the child to its exec event. */
	for (;;) {
		int status;
		if (waitpid(pid, &status, __WALL) < 0)
			return PTSS_EXIT_FAILURE;
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
		msg("cannot trace %s: %s", argv[0], strerror(errno));
		return PTSS_EXIT_ATTACH;
	}
	p->started = true;
	p->before_entry = true;
	thread_add(t, p, pid);
	return 0;
}
