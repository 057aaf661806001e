/*
 * One probe hit: run the displaced instruction out of line in the thread's own scratch
 * entry (one ptrace stop, nothing removed), and count it. A thread without an entry takes
 * the fallback (fallback.c).
 */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <sys/ptrace.h>

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
			count_hit(t, th, s->row, 1); /* the single-step runs it, whatever comes */
		return fallback_run(t, th, regs, s);
	}
	if (err)
		return err;
	/* Counted now; hit_unwind takes it back if a signal finds the thread before it ran. */
	th->hit_row = NULL;
	if (s->row && !(th->in_entry && reloc_hit_returns_to_probe(&hit))) {
		count_hit(t, th, s->row, 1);
		th->hit_row = th->in_entry ? s->row : NULL;
	}
	if (ptrace(PTRACE_SETREGS, th->tid, 0, regs) || ptrace(PTRACE_CONT, th->tid, 0, 0))
		return -errno;
	return 0;
}
