/*
 * Letting go: every traced task stopped, every thread out of its entry or trampoline,
 * every int3 and jmp byte restored, every scratch page and jump area unmapped, every
 * thread detached with the signal it was stopped for. The target runs on as if never
 * traced.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <linux/kcmp.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

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

static bool any_stopping(const struct tracer *t)
{
	for (size_t i = 0; i < t->tcap; i++)
		if (t->threads[i] && t->threads[i]->state.stop == TS_STOPPING)
			return true;
	return false;
}

/*
 * Stops every traced task; events that come first are settled on the way. On return each
 * thread is in a stop with no trap of ours left queued: a hit that was under way is taken
 * and counted, and the thread will run the restored instruction.
 */
static void stop_all(struct tracer *t)
{
	for (size_t i = 0; i < t->tcap; i++) {
		struct thread *th = t->threads[i];
		if (th && th->state.stop != TS_HELD && th->state.stop != TS_HELD_QUEUED) {
			ptrace(PTRACE_INTERRUPT, th->tid, 0, 0);
			th->state.stop = TS_STOPPING;
		}
	}
	while (any_stopping(t)) {
		int status;
		pid_t tid;
		if (!queue_take(t, &tid, &status) && (tid = waitpid(-1, &status, __WALL)) < 0)
			break;
		struct thread *th = thread_find(t, tid);
		if (!th && WIFSTOPPED(status) && (status >> 16) == PTRACE_EVENT_STOP) {
			/* A new task, before its parent's clone or fork event: kept stopped for that
			 * event, which comes before the parent's own stop. Continued, it would run
			 * on untraced by ptss and never give the first stop the event waits for. */
			queue_early(t, tid, status);
			continue;
		}
		if (!th || WIFEXITED(status) || WIFSIGNALED(status) || (status >> 16) == PTRACE_EVENT_EXIT) {
			if (th)
				lifecycle_thread_gone(t, th);
			lifecycle_ended(t, tid, status);
			if (WIFSTOPPED(status))
				ptrace(PTRACE_CONT, tid, 0, 0);
			continue;
		}
		th->state.stop = TS_RUNNING; /* its stop is seen: stopped, and ours to handle */
		int event = status >> 16, sig = WSTOPSIG(status);
		if (event == PTRACE_EVENT_STOP && trap_pending(tid)) {
			/* Let the trap come: resumed, the thread stops for it before running any code. */
			ptrace(PTRACE_CONT, tid, 0, 0);
			th->state.stop = TS_STOPPING;
		} else if (event == PTRACE_EVENT_CLONE || event == PTRACE_EVENT_FORK || event == PTRACE_EVENT_VFORK) {
			unsigned long m;
			ptrace(PTRACE_GETEVENTMSG, tid, 0, &m);
			if (queue_wait_first_stop(t, (pid_t)m)) {
				if (syscall(SYS_kcmp, th->proc->pid, (pid_t)m, KCMP_VM, 0, 0) == 0)
					thread_add(t, th->proc, (pid_t)m);
				else
					lifecycle_let_child_go(t, th->proc, (pid_t)m);
			}
		} else if (event == 0 && sig == SIGTRAP) {
			struct user_regs_struct regs;
			bool int3;
			struct site *s = trap_site(th->proc, tid, &regs, &int3);
			if (s && trap_is_miss(s, &regs)) { /* counted; it leaves the trampoline below */
				jumps_miss(t, th, &regs, s);
			} else if (s) { /* a hit as we leave: count it, and let the restored instruction run */
				if (s->row)
					count_hit(t, th, s->row, 1);
				regs.rip = s->addr;
				ptrace(PTRACE_SETREGS, tid, 0, &regs);
			} else if (int3) {
				th->detach_sig = sig;
			}
		} else if (event == 0 && sig != (SIGTRAP | 0x80)) {
			th->detach_sig = sig;
		}
	}
}

void detach_all(struct tracer *t, bool stopped)
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
			/* No thread stays inside a scratch entry or a trampoline. */
			if (!ptrace(PTRACE_GETREGS, th->tid, 0, &regs) && hit_unwind(t, th, &regs, true))
				ptrace(PTRACE_SETREGS, th->tid, 0, &regs);
			if (!ptrace(PTRACE_GETREGS, th->tid, 0, &regs))
				jumps_leave(t, th, &regs, true, &th->detach_sig);
		}
		if (any)
			jumps_disarm(t, p, any);
		sites_disarm_all(p);
		if (any) {
			struct ptss_stats st;
			ptss_space_ptrace_use_thread(p->space, any->tid);
			count_scratch(t, p->scratch);
			ptss_stats_get(p->scratch, &st);
			ptss_proc_free(p->scratch); /* unmaps every page: one injection */
			p->scratch = NULL;
			if (st.pages)
				scratch_pages_left(t, p->pid, ptss_space_ptrace_refusal(p->space));
		}
		for (size_t i = 0; i < t->tcap; i++) {
			struct thread *th = t->threads[i];
			if (th && th->proc == p)
				ptrace(PTRACE_DETACH, th->tid, 0, th->detach_sig);
		}
		process_free(t, p);
	}
	queue_detach_early(t);
}
