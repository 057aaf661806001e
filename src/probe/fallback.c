/*
 * The fallback, for a hit on a thread without an entry: it needs no scratch. With every
 * other thread of the process stopped, the original byte goes back for one single-step of
 * this thread, with its signals blocked so that nothing but the displaced instruction
 * runs, then int3 returns. The other threads' stops are settled (hold) or queued for the
 * loop; their states move as engine.h describes.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

/*
 * Waits for u's interrupt stop. A stop that comes first is settled so that u stays
 * stopped with nothing lost: a hit is rewound to re-execute its int3 later, a signal is
 * delivered (its handler runs once u is resumed), and only events are left to the loop.
 */
static void hold(struct tracer *t, struct thread *u)
{
	for (;;) {
		int status;
		if (waitpid(u->tid, &status, __WALL) < 0) {
			u->state = (struct thread_state){ TS_RUNNING, true };
			return;
		}
		int event = status >> 16, sig = WSTOPSIG(status);
		if (WIFSTOPPED(status) && event == PTRACE_EVENT_STOP) {
			u->state.stop = TS_HELD;
			return;
		}
		struct user_regs_struct regs;
		if (WIFSTOPPED(status) && event == 0 && sig == SIGTRAP && trap_site(u->proc, u->tid, &regs, NULL)) {
			regs.rip -= 1; /* the hit happens again when u runs: counted then */
			ptrace(PTRACE_SETREGS, u->tid, 0, &regs);
			ptrace(PTRACE_CONT, u->tid, 0, 0);
		} else if (WIFSTOPPED(status) && event == 0 && sig != (SIGTRAP | 0x80)) {
			signal_deliver(t, u, sig); /* the interrupt stop follows at once */
		} else {
			queue_defer(t, u->tid, status); /* an event, or its exit: the loop's business */
			u->state.stop = TS_HELD_QUEUED;
			return;
		}
	}
}

/* Stops every other thread of th's process; stops that come first are queued for the loop. */
void hold_others(struct tracer *t, struct thread *th)
{
	for (size_t i = 0; i < t->tcap; i++) {
		struct thread *u = t->threads[i];
		if (u && u != th && u->proc == th->proc && u->state.stop == TS_RUNNING) {
			ptrace(PTRACE_INTERRUPT, u->tid, 0, 0);
			u->state.stop = TS_STOPPING;
		}
	}
	for (size_t i = 0; i < t->tcap; i++) {
		struct thread *u = t->threads[i];
		if (u && u->state.stop == TS_STOPPING)
			hold(t, u);
	}
}

void release_others(struct tracer *t, struct thread *th)
{
	for (size_t i = 0; i < t->tcap; i++) {
		struct thread *u = t->threads[i];
		if (u && u != th && u->state.stop == TS_HELD) {
			u->state.stop = TS_RUNNING;
			ptrace(PTRACE_CONT, u->tid, 0, 0);
		} else if (u && u != th && u->state.stop == TS_HELD_QUEUED) {
			u->state.stop = TS_QUEUED;
			u->state.interrupt_due = true; /* its deferred stop is handled by the loop */
		}
	}
}

int fallback_run(struct tracer *t, struct thread *th, struct user_regs_struct *regs, const struct site *s)
{
	struct process *p = th->proc;
	uint64_t mask, all = ~0ull;
	int err = 0, status;
	t->fallbacks++;
	hold_others(t, th);
	if (ptrace(PTRACE_GETSIGMASK, th->tid, sizeof(mask), &mask) ||
	    ptrace(PTRACE_SETSIGMASK, th->tid, sizeof(all), &all) ||
	    ptrace(PTRACE_SETREGS, th->tid, 0, regs) || mem_write(p, s->addr, &s->orig, 1) ||
	    ptrace(PTRACE_SINGLESTEP, th->tid, 0, 0))
		err = -errno;
	while (!err) {
		if (waitpid(th->tid, &status, __WALL) < 0 || !WIFSTOPPED(status)) {
			err = -ESRCH;
			break;
		}
		if (WSTOPSIG(status) == SIGTRAP && (status >> 16) == 0)
			break; /* the step is done */
		if ((status >> 16) == PTRACE_EVENT_STOP)
			th->state.interrupt_due = false; /* the interrupt that was still due */
		ptrace(PTRACE_SINGLESTEP, th->tid, 0, 0); /* an event stop on the way */
	}
	uint8_t int3 = 0xcc;
	mem_write(p, s->addr, &int3, 1);
	if (err != -ESRCH)
		ptrace(PTRACE_SETSIGMASK, th->tid, sizeof(mask), &mask);
	release_others(t, th);
	if (!err && ptrace(PTRACE_CONT, th->tid, 0, 0))
		err = -errno;
	return err;
}
