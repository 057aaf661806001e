/*
 * A process's scratch: one ptss_proc per process life over its ptrace space, an entry
 * claimed for each thread as it appears, and what is said when the scratch is refused
 * (a seccomp filter, no memory) or its pages cannot be taken back out.
 */
#include "engine.h"

#include <errno.h>
#include <string.h>

/* The one place a process life's scratch is created (attach, start, fork, exec). */
ptss_proc *scratch_new(struct tracer *t, ptss_space *space)
{
	struct ptss_opts o = PTSS_OPTS(.entry_size = t->opts.entry_size);
	return space ? ptss_proc_new(space, &o) : NULL;
}

/* Claims the thread's entry (the thread is stopped: injections may run in it). */
void scratch_claim(struct tracer *t, struct thread *th)
{
	struct process *p = th->proc;
	if (!p->scratch || th->entry || t->opts.no_scratch)
		return;
	ptss_space_ptrace_use_thread(p->space, th->tid);
	th->entry = ptss_claim(p->scratch);
	if (!th->entry)
		scratch_refused(t, p, 1, -errno);
	count_scratch(t, p->scratch);
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
		say_error(t, "process %d: %s; threads without a scratch entry take the fallback",
			  (int)p->pid, filter);
	else
		say_info(t, "process %d: no scratch entry (%s); threads without one take the fallback",
			 (int)p->pid, strerror(-err));
}

/*
 * Scratch pages that a seccomp filter keeps ptss from unmapping stay in the process,
 * unused and harmless: read+execute there, sealed against writing. Said, never forced.
 */
void scratch_pages_left(struct tracer *t, pid_t pid, const char *refusal)
{
	if (refusal)
		say_error(t, "process %d keeps its scratch pages, unused: %s", (int)pid, refusal);
}
