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
	if (!th->entry)
		scratch_refused(t, p, 1, -errno);
	scratch_note(t, p);
}

void scratch_refused(struct tracer *t, struct process *p, size_t nthreads, int err)
{
	t->claim_failures += nthreads;
	if (p->refusal_said)
		return;
	p->refusal_said = true;
	/* A seccomp filter that ptss must not cross is worth saying even with -q. */
	const char *filter = ptss_space_ptrace_refusal(p->space);
	if (filter)
		msg("process %d: %s; threads without a scratch entry take the fallback", (int)p->pid, filter);
	else
		info(t, "process %d: no scratch entry (%s); threads without one take the fallback",
		     (int)p->pid, strerror(-err));
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

/* Is task tid traced, and by whom (TracerPid in /proc/TID/status)? -1 when it is gone or
 * exiting (a zombie thread cannot be traced). */
static pid_t tracer_of(pid_t tid)
{
	char path[64], line[256], state = 'X';
	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	FILE *f = fopen(path, "re");
	int tracer = -1;
	while (f && fgets(line, sizeof(line), f)) {
		sscanf(line, "State: %c", &state);
		sscanf(line, "TracerPid: %d", &tracer);
	}
	if (f)
		fclose(f);
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
				thread_add(t, th->proc, (pid_t)child)->stopping = true;
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
		thread_add(t, p, tid)->stopping = true;
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
		msg("cannot attach to %d: no such process", (int)pid);
		return PTSS_EXIT_ATTACH;
	}
	pid_t other = tracer_of(pid);
	if (other > 0) {
		msg("cannot attach to %d: already traced by process %d", (int)pid, (int)other);
		return PTSS_EXIT_ATTACH;
	}
	struct process *p = process_new(t, pid);
	if (!p) {
		int err = errno == EACCES ? EPERM : errno; /* /proc/PID/mem says EACCES for the same cause */
		msg("cannot attach to %d: %s%s", (int)pid, strerror(err), attach_hint(err));
		return PTSS_EXIT_ATTACH;
	}
	for (;;) {
		int added = seize_listed(t, p);
		if (added < 0) {
			msg("cannot attach to %d: %s%s", (int)pid, strerror(-added), attach_hint(-added));
			return PTSS_EXIT_ATTACH; /* the caller detaches what was seized */
		}
		for (bool waiting = true; waiting;) {
			waiting = false;
			for (size_t i = 0; i < t->tcap; i++) {
				struct thread *th = t->threads[i];
				if (!th || !th->stopping)
					continue;
				waiting = true; /* a settled thread may have added others: scan again */
				th->stopping = false;
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
		msg("cannot attach to %d: it exited", (int)pid);
		return PTSS_EXIT_ATTACH;
	}
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
