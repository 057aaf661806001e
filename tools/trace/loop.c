/*
 * The ptrace event loop: every stop of every traced task comes here and is turned into
 * a probe hit, a lifecycle step of the scratch allocator (new thread -> claim, exit ->
 * release, fork -> ptss_fork, exec -> ptss_exec_exit and a new life), or a signal passed
 * on. Ctrl-C, SIGTERM and --duration end in a clean detach.
 */
#define _GNU_SOURCE
#include "tracer.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Stops deferred by the fallback, and first stops of tasks whose parent event is not yet seen. */
struct pending { pid_t tid; int status; };
static struct pending *deferred, *early;
static size_t ndeferred, nearly;

static void push(struct pending **list, size_t *n, pid_t tid, int status)
{
	*list = realloc(*list, (*n + 1) * sizeof(**list));
	if (!*list)
		abort();
	(*list)[(*n)++] = (struct pending){ tid, status };
}

void loop_defer(struct tracer *t, pid_t tid, int status)
{
	struct thread *th = thread_find(t, tid);
	if (th)
		th->queued = true; /* stopped until the loop takes its stop: leave it alone */
	push(&deferred, &ndeferred, tid, status);
}

/* The oldest deferred stop; false when there is none. */
static bool take_deferred(struct tracer *t, pid_t *tid, int *status)
{
	if (!ndeferred)
		return false;
	*tid = deferred[0].tid;
	*status = deferred[0].status;
	memmove(deferred, deferred + 1, --ndeferred * sizeof(*deferred));
	struct thread *th = thread_find(t, *tid);
	if (th)
		th->queued = false;
	return true;
}

static bool take_early(pid_t tid)
{
	for (size_t i = 0; i < nearly; i++)
		if (early[i].tid == tid) {
			early[i] = early[--nearly];
			return true;
		}
	return false;
}

/* Waits for a new task's first stop. False if it died first. */
static bool wait_first_stop(pid_t tid)
{
	if (take_early(tid))
		return true;
	for (;;) {
		int status;
		if (waitpid(tid, &status, __WALL) < 0 || !WIFSTOPPED(status))
			return false;
		if ((status >> 16) == PTRACE_EVENT_STOP)
			return true;
		ptrace(PTRACE_CONT, tid, 0, 0);
	}
}

static void process_ended(struct tracer *t, struct process *p)
{
	scratch_note(t, p);
	process_free(t, p);
}

static void thread_gone(struct tracer *t, struct thread *th)
{
	struct process *p = th->proc;
	thread_remove(t, th);
	if (p->nthreads == 0)
		process_ended(t, p);
}

/*
 * Scratch pages that a seccomp filter keeps ptss from unmapping stay in the process,
 * unused and harmless: read+execute there, sealed against writing. Said, never forced.
 */
static void pages_left(pid_t pid, const char *refusal)
{
	if (refusal)
		msg("process %d keeps its scratch pages, unused: %s", (int)pid, refusal);
}

/* An untraced child's copy of the memory: take our int3s and pages out, then let it go. */
static void let_child_go(struct process *p, pid_t tid)
{
	struct process copy = { .pid = tid, .sites = p->sites, .nsites = p->nsites };
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)tid);
	copy.mem = open(path, O_RDWR | O_CLOEXEC);
	sites_disarm_all(&copy);
	if (copy.mem >= 0)
		close(copy.mem);
	ptss_space *cs = ptss_space_ptrace_new(tid, tid);
	if (cs && ptss_fork(p->scratch, cs))
		pages_left(tid, ptss_space_ptrace_refusal(cs));
	ptss_space_free(cs);
	ptrace(PTRACE_DETACH, tid, 0, 0);
}

/* A clone, fork or vfork: a thread of the same address space, or a child process. */
static void new_task(struct tracer *t, struct thread *parent)
{
	unsigned long msg_;
	ptrace(PTRACE_GETEVENTMSG, parent->tid, 0, &msg_);
	pid_t tid = (pid_t)msg_;
	struct process *p = parent->proc;
	if (!wait_first_stop(tid))
		return;
	bool same_mm = syscall(SYS_kcmp, p->pid, tid, KCMP_VM, 0, 0) == 0;
	if (same_mm) { /* a thread, or a vfork child borrowing the memory */
		struct thread *th = thread_add(t, p, tid);
		thread_claim(t, th);
		ptrace(PTRACE_CONT, tid, 0, 0);
		return;
	}
	/* A copy of the address space: int3s and scratch pages included. */
	if (t->set->follow) {
		struct process *child = process_new(t, tid);
		if (child && !sites_copy(child, p)) {
			memcpy(child->resolved, p->resolved, (size_t)t->nspecs * sizeof(*p->resolved));
			ptss_space_ptrace_use_thread(child->space, tid);
			ptss_fork(p->scratch, child->space);
			struct thread *th = thread_add(t, child, tid);
			thread_claim(t, th);
			ptrace(PTRACE_CONT, tid, 0, 0);
			return;
		}
		msg("cannot follow child %d: %s", (int)tid, strerror(errno));
		if (child)
			process_free(t, child);
	}
	let_child_go(p, tid);
}

/* A new image: the old life's scratch is gone with the old memory; start a new one. */
static void exec_event(struct tracer *t, pid_t pid)
{
	unsigned long former;
	ptrace(PTRACE_GETEVENTMSG, pid, 0, &former);
	struct thread *th = thread_find(t, (pid_t)former);
	if (!th)
		th = thread_find(t, pid);
	if (!th) {
		ptrace(PTRACE_CONT, pid, 0, 0);
		return;
	}
	struct process *p = th->proc;
	if (p->pid != pid) {
		/* A vfork child (sharing its parent's memory) left it: now a process of its own. */
		thread_remove(t, th);
		if (!t->set->follow) {
			ptrace(PTRACE_DETACH, pid, 0, 0);
			return;
		}
		p = process_new(t, pid);
		if (!p) {
			ptrace(PTRACE_DETACH, pid, 0, 0);
			return;
		}
	} else {
		ptss_exec_exit(p->scratch); /* every other thread is gone: their entries with it */
		for (size_t i = 0; i < t->tcap; i++)
			if (t->threads[i] && t->threads[i]->proc == p) {
				thread_remove(t, t->threads[i]);
				i = (size_t)-1;
			}
		scratch_note(t, p);
		ptss_proc_free(p->scratch);
		ptss_space_ptrace_reset(p->space);
		struct ptss_opts o = PTSS_OPTS(.entry_size = t->set->entry_size);
		p->scratch = ptss_proc_new(p->space, &o);
		close(p->mem);
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
		p->mem = open(path, O_RDWR | O_CLOEXEC);
		sites_clear(p);
		memset(p->resolved, 0, (size_t)t->nspecs * sizeof(*p->resolved));
		p->entry_site = p->notice_site = 0;
	}
	p->before_entry = true;
	p->exec_seen = true;
	p->refusal_said = false;
	struct thread *nt = thread_add(t, p, pid);
	thread_claim(t, nt);
	sites_place(t, p, false);
	ptrace(PTRACE_CONT, pid, 0, 0);
}

/* Probe errors are fatal in the command ptss started while it has run no code of its own. */
static bool probes_fatal(const struct process *p)
{
	return p->started && !p->exec_seen && p->before_entry;
}

/* A SIGTRAP at one of our sites. */
static int on_site(struct tracer *t, struct thread *th, struct user_regs_struct *regs, struct site *s)
{
	struct process *p = th->proc;
	if (s->internal && s->addr == p->entry_site) {
		/* The program's entry: ld.so has loaded every needed library. */
		uint64_t addr = s->addr;
		bool fatal = probes_fatal(p);
		sites_remove(p, addr);
		p->entry_site = 0;
		p->before_entry = false;
		int rc = sites_place(t, p, fatal);
		regs->rip = addr;
		if (ptrace(PTRACE_SETREGS, th->tid, 0, regs) || ptrace(PTRACE_CONT, th->tid, 0, 0))
			return -errno;
		return rc;
	}
	int rc = 0;
	if (s->internal && s->addr == p->notice_site) {
		uint64_t addr = s->addr;
		rc = sites_place(t, p, probes_fatal(p)); /* ld.so's startup, or a dlopen */
		s = site_find(p, addr);                  /* the table may have moved */
	}
	int err = hit_handle(t, th, regs, s); /* resumes the thread, whatever rc says */
	if (err && err != -ESRCH)
		msg("thread %d at 0x%llx: %s", (int)th->tid, (unsigned long long)regs->rip, strerror(-err));
	return rc;
}

void loop_pass_signal(struct tracer *t, struct thread *th, int sig)
{
	struct user_regs_struct regs;
	if (th->in_entry && !ptrace(PTRACE_GETREGS, th->tid, 0, &regs)) {
		uint64_t before = regs.rip;
		if (hit_unwind(t, th, &regs, false)) {
			ptrace(PTRACE_SETREGS, th->tid, 0, &regs);
			/* A fault in the entry names the entry: name the original instruction. */
			siginfo_t si;
			if ((sig == SIGILL || sig == SIGFPE || sig == SIGTRAP) &&
			    !ptrace(PTRACE_GETSIGINFO, th->tid, 0, &si) && (uint64_t)si.si_addr == before) {
				si.si_addr = (void *)regs.rip;
				ptrace(PTRACE_SETSIGINFO, th->tid, 0, &si);
			}
		}
	}
	ptrace(PTRACE_CONT, th->tid, 0, sig);
}

static int dispatch(struct tracer *t, pid_t tid, int status)
{
	struct thread *th = thread_find(t, tid);
	if (WIFEXITED(status) || WIFSIGNALED(status)) {
		if (tid == t->child) {
			t->child_exited = true;
			t->child_status = status;
		}
		if (tid == t->set->pid) { /* -p: the attached process ended while traced */
			t->attached_ended = true;
			t->attached_status = status;
		}
		if (th)
			thread_gone(t, th);
		return 0;
	}
	if (!th) {
		if ((status >> 16) == PTRACE_EVENT_STOP)
			push(&early, &nearly, tid, status); /* a new task, before its parent's event */
		else
			ptrace(PTRACE_CONT, tid, 0, 0);
		return 0;
	}
	int sig = WSTOPSIG(status);
	switch (status >> 16) {
	case PTRACE_EVENT_CLONE:
	case PTRACE_EVENT_FORK:
	case PTRACE_EVENT_VFORK:
		new_task(t, th);
		ptrace(PTRACE_CONT, tid, 0, 0);
		return 0;
	case PTRACE_EVENT_EXEC:
		exec_event(t, tid);
		return 0;
	case PTRACE_EVENT_EXIT:
		thread_gone(t, th);
		ptrace(PTRACE_CONT, tid, 0, 0);
		return 0;
	case PTRACE_EVENT_STOP:
		if (th->stale_interrupt) {
			th->stale_interrupt = false;
			ptrace(PTRACE_CONT, tid, 0, 0);
		} else if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU) {
			ptrace(PTRACE_LISTEN, tid, 0, 0); /* a group-stop: stay stopped until SIGCONT */
		} else {
			ptrace(PTRACE_CONT, tid, 0, 0);
		}
		return 0;
	case 0:
		break;
	default:
		ptrace(PTRACE_CONT, tid, 0, 0);
		return 0;
	}
	if (sig == SIGTRAP) {
		siginfo_t si;
		struct user_regs_struct regs;
		if (!ptrace(PTRACE_GETSIGINFO, tid, 0, &si) && si.si_code == SI_KERNEL &&
		    !ptrace(PTRACE_GETREGS, tid, 0, &regs)) {
			struct site *s = site_find(th->proc, regs.rip - 1);
			if (s)
				return on_site(t, th, &regs, s);
		}
	}
	loop_pass_signal(t, th, sig);
	return 0;
}

/* ---- detach ---- */

/*
 * Has tid, stopped, a SIGTRAP of one of our int3s still queued? A thread that hits a probe
 * just as it is interrupted reports the interrupt stop first and the trap after it; a
 * detach in between would hand the trap to an untraced thread, which dies of it.
 */
static bool trap_pending(pid_t tid)
{
	siginfo_t queued[8] = { 0 }; /* valgrind cannot see the kernel fill it */
	struct __ptrace_peeksiginfo_args a = { .off = 0, .flags = 0, .nr = 8 };
	for (;;) {
		long n = ptrace(PTRACE_PEEKSIGINFO, tid, &a, queued);
		for (long i = 0; i < n; i++)
			if (queued[i].si_signo == SIGTRAP && queued[i].si_code == SI_KERNEL)
				return true;
		if (n < (long)a.nr)
			return false;
		a.off += (uint64_t)n;
	}
}

/*
 * Stops every traced task; events that come first are settled on the way. On return each
 * thread is in a stop with no trap of ours left queued: a hit that was under way is taken
 * and counted, and the thread will run the restored instruction.
 */
static void stop_all(struct tracer *t)
{
	for (size_t i = 0; i < t->tcap; i++)
		if (t->threads[i] && !t->threads[i]->held) {
			ptrace(PTRACE_INTERRUPT, t->threads[i]->tid, 0, 0);
			t->threads[i]->stopping = true;
		}
	for (;;) {
		bool waiting = false;
		for (size_t i = 0; i < t->tcap; i++)
			waiting |= t->threads[i] && t->threads[i]->stopping;
		if (!waiting)
			break;
		int status;
		pid_t tid;
		if (!take_deferred(t, &tid, &status) && (tid = waitpid(-1, &status, __WALL)) < 0)
			break;
		struct thread *th = thread_find(t, tid);
		if (!th || WIFEXITED(status) || WIFSIGNALED(status) || (status >> 16) == PTRACE_EVENT_EXIT) {
			if (th)
				thread_gone(t, th);
			if (tid == t->child && (WIFEXITED(status) || WIFSIGNALED(status))) {
				t->child_exited = true;
				t->child_status = status;
			}
			if (tid == t->set->pid && (WIFEXITED(status) || WIFSIGNALED(status))) {
				t->attached_ended = true;
				t->attached_status = status;
			}
			if (WIFSTOPPED(status))
				ptrace(PTRACE_CONT, tid, 0, 0);
			continue;
		}
		th->stopping = false;
		int event = status >> 16, sig = WSTOPSIG(status);
		if (event == PTRACE_EVENT_STOP && trap_pending(tid)) {
			/* Let the trap come: resumed, the thread stops for it before running any code. */
			ptrace(PTRACE_CONT, tid, 0, 0);
			th->stopping = true;
		} else if (event == PTRACE_EVENT_CLONE || event == PTRACE_EVENT_FORK || event == PTRACE_EVENT_VFORK) {
			unsigned long m;
			ptrace(PTRACE_GETEVENTMSG, tid, 0, &m);
			if (wait_first_stop((pid_t)m)) {
				if (syscall(SYS_kcmp, th->proc->pid, (pid_t)m, KCMP_VM, 0, 0) == 0) {
					thread_add(t, th->proc, (pid_t)m);
				} else {
					let_child_go(th->proc, (pid_t)m);
				}
			}
		} else if (event == 0 && sig == SIGTRAP) {
			siginfo_t si;
			struct user_regs_struct regs;
			if (!ptrace(PTRACE_GETSIGINFO, tid, 0, &si) && si.si_code == SI_KERNEL &&
			    !ptrace(PTRACE_GETREGS, tid, 0, &regs)) {
				struct site *s = site_find(th->proc, regs.rip - 1);
				if (s) { /* a hit as we leave: count it, and let the restored instruction run */
					if (s->row)
						hit_count(t, th, s->row, 1);
					regs.rip = s->addr;
					ptrace(PTRACE_SETREGS, tid, 0, &regs);
				} else {
					th->detach_sig = sig;
				}
			}
		} else if (event == 0 && sig != (SIGTRAP | 0x80)) {
			th->detach_sig = sig;
		}
	}
}

static void detach_all(struct tracer *t, bool stopped)
{
	if (!stopped)
		stop_all(t);
	while (t->procs) {
		struct process *p = t->procs;
		struct thread *any = NULL;
		for (size_t i = 0; i < t->tcap; i++) {
			struct thread *th = t->threads[i];
			struct user_regs_struct regs;
			if (!th || th->proc != p)
				continue;
			any = th;
			/* No thread stays inside a scratch entry. */
			if (!ptrace(PTRACE_GETREGS, th->tid, 0, &regs) && hit_unwind(t, th, &regs, true))
				ptrace(PTRACE_SETREGS, th->tid, 0, &regs);
		}
		sites_disarm_all(p);
		if (any) {
			struct ptss_stats st;
			ptss_space_ptrace_use_thread(p->space, any->tid);
			scratch_note(t, p);
			ptss_stats_get(p->scratch, &st);
			ptss_proc_free(p->scratch); /* unmaps every page: one injection */
			p->scratch = NULL;
			if (st.pages)
				pages_left(p->pid, ptss_space_ptrace_refusal(p->space));
		}
		for (size_t i = 0; i < t->tcap; i++) {
			struct thread *th = t->threads[i];
			if (th && th->proc == p)
				ptrace(PTRACE_DETACH, th->tid, 0, th->detach_sig);
		}
		process_free(t, p);
	}
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Signals reach the loop only through sigtimedwait: they stay blocked, so that no handler
 * interrupts the many waits of injections and fallbacks, and a SIGCHLD that comes between
 * the last waitpid and the sleep is still pending when the sleep starts.
 */
int loop_run(struct tracer *t)
{
	sigset_t stop, wake, old;
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGHUP);
	wake = stop;
	sigaddset(&wake, SIGCHLD);
	sigprocmask(SIG_BLOCK, &wake, &old);
	double start = now(), last_report = start;
	int rc = 0, stop_signal = 0;
	while (t->procs) {
		/* Under a steady stream of stops the loop never sleeps: look for Ctrl-C each time. */
		static const struct timespec no_wait;
		int sig;
		if (!stop_signal && (sig = sigtimedwait(&stop, NULL, &no_wait)) > 0)
			stop_signal = sig;
		if (stop_signal || (t->set->duration > 0 && now() - start >= t->set->duration)) {
			detach_all(t, false);
			break;
		}
		if (t->set->interval > 0 && now() - last_report >= t->set->interval) {
			last_report = now();
			report_print(t, stderr, false);
		}
		pid_t tid;
		int status;
		if (!take_deferred(t, &tid, &status)) {
			tid = waitpid(-1, &status, __WALL | WNOHANG);
			if (tid < 0)
				break; /* no traced task left */
			if (tid == 0) { /* nothing ready: sleep until a stop or a signal, 100 ms at most */
				struct timespec tick = { 0, 100 * 1000 * 1000 };
				sig = sigtimedwait(&wake, NULL, &tick);
				if (sig > 0 && sig != SIGCHLD)
					stop_signal = sig;
				continue;
			}
		}
		int r = dispatch(t, tid, status);
		if (r && !rc)
			rc = r;
		if (r == PTSS_EXIT_PROBE) {
			/* A probe of the started program cannot be placed. It has run no code of its
			 * own and must run none: killed while it is still stopped, then detached. */
			if (t->child)
				kill(t->child, SIGKILL);
			detach_all(t, false);
			break;
		}
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	free(deferred);
	free(early);
	deferred = early = NULL;
	ndeferred = nearly = 0;
	return rc;
}

/* The first image: every thread stopped, entries for all (enable), probes placed. */
int loop_setup(struct tracer *t)
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
	int err = t->set->no_scratch ? 0 : ptss_enable(p->scratch, n, entries);
	if (err)
		scratch_refused(t, p, n, err);
	for (size_t i = 0; i < n && !err; i++)
		ths[i]->entry = entries[i];
	free(ths);
	free(entries);
	scratch_note(t, p);
	return sites_place(t, p, true);
}

/* Resumes every thread after setup. */
void loop_resume_all(struct tracer *t)
{
	for (size_t i = 0; i < t->tcap; i++)
		if (t->threads[i])
			ptrace(PTRACE_CONT, t->threads[i]->tid, 0, 0);
}

void loop_detach_stopped(struct tracer *t)
{
	detach_all(t, true);
}
