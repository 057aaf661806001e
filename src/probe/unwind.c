/*
 * Taking a thread out of its entry, back into the original code: before a signal is
 * delivered to it (so that a handler's own hit can reuse the entry), and at detach.
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

/* Delivers sig to th (0: none), out of its entry first. */
void signal_deliver(struct tracer *t, struct thread *th, int sig)
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
