/*
 * One probe hit: run the displaced instruction out of line in the thread's own scratch
 * entry (one ptrace stop, nothing removed), and count it. A thread without an entry takes
 * the fallback (fallback.c). With opts.latency, an entry opens a call (calls.c) and a hit
 * of an exit site (a ret, a branch out of the function) closes it.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <stdint.h>
#include <sys/ptrace.h>

static bool in_function(const struct site_fn *fn, uint64_t addr)
{
	return (addr >= fn->addr && addr < fn->addr + fn->size) ||
	       (addr >= fn->cold_addr && addr < fn->cold_addr + fn->cold_size);
}

/*
 * A `ret` (c3, c2 iw, with a rep or bnd prefix) at an exit site, emulated: the return
 * address popped from the stack ptss reads. The thread then never runs it in its entry,
 * so no signal can find it half-way and the return is seen exactly once. false when the
 * instruction is another or the stack cannot be read.
 */
static bool ret_emulate(struct thread *th, const struct site *s, struct user_regs_struct *regs)
{
	const uint8_t *b = s->plan.orig;
	size_t at = b[0] == 0xf3 || b[0] == 0xf2 ? 1 : 0;
	uint64_t pop = 8, to;
	if (b[at] == 0xc2 && s->plan.len == at + 3)
		pop += (uint64_t)(b[at + 1] | b[at + 2] << 8);
	else if (b[at] != 0xc3 || s->plan.len != at + 1)
		return false;
	if (mem_read(th->proc, regs->rsp, &to, 8))
		return false;
	regs->rip = to;
	regs->rsp += pop;
	return true;
}

int hit_handle(struct tracer *t, struct thread *th, struct user_regs_struct *regs, const struct site *s)
{
	regs->rip = s->addr;
	const struct user_regs_struct before = *regs;
	if (s->row && t->opts.latency && s->addr == s->fn.addr)
		calls_enter(t, th, s->row, regs);

	uint64_t load_at, loaded;
	const uint64_t *loaded_ptr = NULL;
	if (reloc_hit_load_addr(&s->plan, regs, &load_at) && !mem_read(th->proc, load_at, &loaded, 8))
		loaded_ptr = &loaded;
	struct reloc_hit hit = { 0 };
	int err;
	if (s->exit_row && ret_emulate(th, s, regs)) {
		calls_return(t, th, s->exit_row, before.rsp, before.rax, false);
		err = 0;
	} else if (reloc_plan_entry_need(&s->plan) == 0) {
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
	/* A branch out of the function, emulated: it leaves now (a tail call). */
	if (s->exit_row && !hit.entry_len && regs->rip != before.rip && !in_function(&s->exit_fn, regs->rip) &&
	    reloc_plan_how(&s->plan) != RELOC_COPY_END)
		calls_return(t, th, s->exit_row, before.rsp, before.rax, true);
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
