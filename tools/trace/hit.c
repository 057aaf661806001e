/*
 * One probe hit: count it, then run the displaced instruction out of line in the thread's
 * own scratch entry (one ptrace stop, nothing removed). A thread stopped for a signal
 * while inside its entry is first put back into the original code, so that a handler's
 * own hit can reuse the entry. A thread without an entry takes the fallback, which needs
 * no scratch: the process is stopped, the original byte put back for one single-step.
 */
#define _GNU_SOURCE
#include "tracer.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

void hit_count(struct tracer *t, struct thread *th, struct row *r, int64_t delta)
{
	if (r->index >= th->ncounts) {
		size_t n = t->nrows;
		th->counts = realloc(th->counts, n * sizeof(*th->counts));
		if (!th->counts)
			abort();
		memset(th->counts + th->ncounts, 0, (n - th->ncounts) * sizeof(*th->counts));
		th->ncounts = n;
	}
	th->counts[r->index] += (uint64_t)delta;
	r->hits += (uint64_t)delta;
}

void thread_fold_counts(struct tracer *t, struct thread *th)
{
	for (size_t i = 0; i < th->ncounts; i++) {
		if (!th->counts[i])
			continue;
		struct row *r = t->rows[i];
		if (r->nthreads == r->cap) {
			r->cap = r->cap ? r->cap * 2 : 8;
			r->threads = realloc(r->threads, r->cap * sizeof(*r->threads));
			if (!r->threads)
				abort();
		}
		r->threads[r->nthreads++] = (struct thread_count){ th->tid, th->counts[i] };
		th->counts[i] = 0;
	}
}

/*
 * A hit counts once its displaced instruction is sure to run. That is decided here, when
 * a thread stopped inside its entry is put back into the original code: unwound before
 * the instruction ran, the hit did not happen. Whatever the program then does with the
 * thread (a handler that returns to the probe, one that never returns, Go parking the
 * goroutine and resuming it on another thread), its next arrival at the probe is a hit of
 * its own and is counted then. At detach the thread runs the instruction untraced, so the
 * hit stays counted (keep).
 */
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
		hit_count(t, th, th->hit_row, -1);
	th->hit_row = NULL;
	return true;
}

/* Stops every other thread of th's process; their stops are queued for the loop. */
static void stop_others(struct tracer *t, struct thread *th);
static void resume_others(struct tracer *t, struct thread *th);

/*
 * The fallback: with every other thread of the process stopped, the original byte goes
 * back for one single-step of this thread, with its signals blocked so that nothing but
 * the displaced instruction runs, then int3 returns.
 */
static int fallback(struct tracer *t, struct thread *th, struct user_regs_struct *regs, const struct site *s)
{
	struct process *p = th->proc;
	uint64_t mask, all = ~0ull;
	int err = 0, status;
	t->fallbacks++;
	stop_others(t, th);
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
			th->stale_interrupt = false; /* the interrupt that was still due */
		ptrace(PTRACE_SINGLESTEP, th->tid, 0, 0); /* an event stop on the way */
	}
	uint8_t int3 = 0xcc;
	mem_write(p, s->addr, &int3, 1);
	if (err != -ESRCH)
		ptrace(PTRACE_SETSIGMASK, th->tid, sizeof(mask), &mask);
	resume_others(t, th);
	if (!err && ptrace(PTRACE_CONT, th->tid, 0, 0))
		err = -errno;
	return err;
}

int hit_handle(struct tracer *t, struct thread *th, struct user_regs_struct *regs, const struct site *s)
{
	regs->rip = s->addr;

	uint64_t load_at, loaded;
	const uint64_t *loaded_ptr = NULL;
	if (reloc_hit_load_addr(&s->plan, regs, &load_at) && !mem_read(th->proc, load_at, &loaded, 8))
		loaded_ptr = &loaded;
	struct reloc_hit hit;
	int err;
	if (reloc_plan_entry_need(&s->plan) == 0) {
		uint8_t unused[RELOC_ENTRY_MAX];
		err = reloc_hit_prepare(&s->plan, 0, unused, sizeof(unused), regs, loaded_ptr, &hit);
	} else if (th->entry) {
		ptss_proc *sc = th->proc->scratch;
		err = reloc_hit_prepare(&s->plan, ptss_entry_addr(sc, th->entry), ptss_entry_view(sc, th->entry),
					ptss_entry_size(sc), regs, loaded_ptr, &hit);
		th->in_entry = true; /* until its next stop shows otherwise */
		th->plan = s->plan;  /* a copy: the site table may move when a library loads */
		th->hit = hit;
	} else {
		if (s->row)
			hit_count(t, th, s->row, 1); /* the single-step runs it, whatever comes */
		return fallback(t, th, regs, s);
	}
	if (err)
		return err;
	/* Counted now; hit_unwind takes it back if a signal finds the thread before it ran. */
	th->hit_row = NULL;
	if (s->row && !(th->in_entry && reloc_hit_returns_to_probe(&hit))) {
		hit_count(t, th, s->row, 1);
		th->hit_row = th->in_entry ? s->row : NULL;
	}
	if (ptrace(PTRACE_SETREGS, th->tid, 0, regs) || ptrace(PTRACE_CONT, th->tid, 0, 0))
		return -errno;
	return 0;
}

/* ---- stopping the other threads of a process, for the fallback ---- */

/*
 * Waits for u's interrupt stop. A stop that comes first is settled so that u stays
 * stopped with nothing lost: a hit is rewound to re-execute its int3 later, a signal is
 * delivered (its handler runs once u is resumed), and only events are left to the loop.
 */
static void hold(struct tracer *t, struct thread *u)
{
	for (;;) {
		int status;
		if (waitpid(u->tid, &status, __WALL) < 0)
			return;
		int event = status >> 16, sig = WSTOPSIG(status);
		if (WIFSTOPPED(status) && event == PTRACE_EVENT_STOP) {
			u->held_by_interrupt = true;
			return;
		}
		struct user_regs_struct regs;
		siginfo_t si;
		if (WIFSTOPPED(status) && event == 0 && sig == SIGTRAP && !ptrace(PTRACE_GETSIGINFO, u->tid, 0, &si) &&
		    si.si_code == SI_KERNEL && !ptrace(PTRACE_GETREGS, u->tid, 0, &regs) &&
		    site_find(u->proc, regs.rip - 1)) {
			regs.rip -= 1; /* the hit happens again when u runs: counted then */
			ptrace(PTRACE_SETREGS, u->tid, 0, &regs);
			ptrace(PTRACE_CONT, u->tid, 0, 0);
		} else if (WIFSTOPPED(status) && event == 0 && sig != (SIGTRAP | 0x80)) {
			loop_pass_signal(t, u, sig); /* the interrupt stop follows at once */
		} else {
			loop_defer(t, u->tid, status); /* an event, or its exit: the loop's business */
			return;
		}
	}
}

static void stop_others(struct tracer *t, struct thread *th)
{
	for (size_t i = 0; i < t->tcap; i++) {
		struct thread *u = t->threads[i];
		if (u && u != th && u->proc == th->proc && !u->held && !u->queued) {
			ptrace(PTRACE_INTERRUPT, u->tid, 0, 0);
			u->stopping = true;
		}
	}
	for (size_t i = 0; i < t->tcap; i++) {
		struct thread *u = t->threads[i];
		if (!u || !u->stopping)
			continue;
		u->stopping = false;
		u->held = true;
		hold(t, u);
	}
}

static void resume_others(struct tracer *t, struct thread *th)
{
	for (size_t i = 0; i < t->tcap; i++) {
		struct thread *u = t->threads[i];
		if (u && u != th && u->held && u->held_by_interrupt) {
			u->held = u->held_by_interrupt = false;
			ptrace(PTRACE_CONT, u->tid, 0, 0);
		} else if (u && u != th && u->held) {
			u->held = false;
			u->stale_interrupt = true; /* its deferred stop is handled by the loop */
		}
	}
}
