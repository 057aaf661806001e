/*
 * Taking a thread out of its entry or its trampoline, back into the original code: before
 * a signal is delivered to it (so that a handler's own hit can reuse the entry, and no
 * signal frame holds a trampoline's address), and at detach.
 *
 * A hit counts once its displaced instruction is sure to run. That is decided here: a
 * thread unwound before the instruction ran did not make the hit. Whatever the program
 * then does with the thread (a handler that returns to the probe, one that never returns,
 * Go parking the goroutine and resuming it on another thread), its next arrival at the
 * probe is a hit of its own and is counted then. At detach the thread runs the
 * instruction untraced, so the hit stays counted (keep).
 */
#define _GNU_SOURCE
#include "engine.h"

#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

bool hit_unwind(struct tracer *t, struct thread *th, struct user_regs_struct *regs, bool keep)
{
	if (!th->in_entry || !th->entry)
		return false;
	bool rerun = false;
	uint64_t entry = ptss_entry_addr(th->proc->scratch, th->entry);
	if (reloc_unwind(&th->plan, entry, &th->hit, regs, &rerun))
		return false; /* not inside its entry */
	th->in_entry = false;
	if (rerun && !keep && th->hit_row)
		count_hit(t, th, th->hit_row, -1);
	th->hit_row = NULL;
	return true;
}

/* A hit counted in the counting part, taken back: the thread is back at the site. */
static void uncount(struct tracer *t, struct thread *th, const struct site *s)
{
	if (th->jump_counts && th->jump_counts[s->col])
		th->jump_counts[s->col]--;
	else
		count_hit(t, th, s->row, -1);
}

/* One single-step of th: 0 done, a signal number for a fault on the way, -1 gone. */
static int step(struct thread *th)
{
	if (ptrace(PTRACE_SINGLESTEP, th->tid, 0, 0))
		return -1;
	for (;;) {
		int status;
		if (waitpid(th->tid, &status, __WALL) < 0 || !WIFSTOPPED(status))
			return -1;
		int event = status >> 16, sig = WSTOPSIG(status);
		if (event == 0 && sig == SIGTRAP)
			return 0;
		if (event == 0)
			return sig;
		if (event == PTRACE_EVENT_STOP)
			th->state.interrupt_due = false;
		if (ptrace(PTRACE_SINGLESTEP, th->tid, 0, 0)) /* an event on the way: step again */
			return -1;
	}
}

bool jumps_leave(struct tracer *t, struct thread *th, struct user_regs_struct *regs, bool keep, int *sig)
{
	struct site *s = site_of_tramp(th->proc, regs->rip);
	if (!s)
		return false;
	/* The signal to deliver keeps its siginfo: the steps' traps replace the stop's own. */
	siginfo_t si;
	bool have_si = sig && *sig && !ptrace(PTRACE_GETSIGINFO, th->tid, 0, &si);
	/* Nothing but a fault may interrupt the steps: the signals wait, blocked. */
	uint64_t mask, all = ~0ull;
	bool masked = !ptrace(PTRACE_GETSIGMASK, th->tid, sizeof(mask), &mask) &&
		      !ptrace(PTRACE_SETSIGMASK, th->tid, sizeof(all), &all);
	for (unsigned n = 0; n < 100000; n++) {
		enum jump_where w = jump_locate(&s->tramp, s->tramp_addr, regs->rip);
		if (w == JUMP_OUTSIDE)
			break;
		if (w == JUMP_AT_FIRST && keep) { /* at detach: the thread runs the original */
			regs->rip = s->jump.addr;
			ptrace(PTRACE_SETREGS, th->tid, 0, regs);
			break;
		}
		uint64_t before = regs->rip;
		int r = step(th);
		if (r < 0 || ptrace(PTRACE_GETREGS, th->tid, 0, regs))
			break;
		if (r == 0 && jump_miss_part(&s->tramp, s->tramp_addr, before) >= 0) {
			jumps_miss(t, th, regs, s); /* the step ran the miss's int3 */
		} else if (r > 0) {
			/* A fault. At the first displaced instruction the thread is at the site, its
			 * hit not made: it faults there again once the signal is dealt with. A fault
			 * later (the stack) stays where it is: there is no site address for it. */
			if (w == JUMP_AT_FIRST) {
				regs->rip = s->jump.addr;
				ptrace(PTRACE_SETREGS, th->tid, 0, regs);
				if (s->jump.entry) /* its count came before */
					uncount(t, th, s);
			} else if (sig) {
				*sig = r;
				have_si = false;
			}
			break;
		}
	}
	if (masked)
		ptrace(PTRACE_SETSIGMASK, th->tid, sizeof(mask), &mask);
	if (have_si)
		ptrace(PTRACE_SETSIGINFO, th->tid, 0, &si);
	return true;
}

/* Delivers sig to th (0: none), out of its entry or trampoline first. */
void signal_deliver(struct tracer *t, struct thread *th, int sig)
{
	struct user_regs_struct regs;
	if ((th->in_entry || th->proc->jumps) && !ptrace(PTRACE_GETREGS, th->tid, 0, &regs)) {
		uint64_t before = regs.rip;
		if (hit_unwind(t, th, &regs, false))
			ptrace(PTRACE_SETREGS, th->tid, 0, &regs);
		else
			jumps_leave(t, th, &regs, false, &sig);
		/* A fault out of line names where it ran: name the original instruction. */
		siginfo_t si;
		if (regs.rip != before && (sig == SIGILL || sig == SIGFPE || sig == SIGTRAP) &&
		    !ptrace(PTRACE_GETSIGINFO, th->tid, 0, &si) && (uint64_t)si.si_addr == before) {
			si.si_addr = (void *)regs.rip;
			ptrace(PTRACE_SETSIGINFO, th->tid, 0, &si);
		}
	}
	ptrace(PTRACE_CONT, th->tid, 0, sig);
}
