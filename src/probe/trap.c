/* "Is this SIGTRAP one of ours?": a SIGTRAP stop is a probe's (or ptss's own site's)
 * when the kernel sent it for an int3 (SI_KERNEL) and the byte before rip is one of the
 * process's sites, or the int3 of a jump probe's trampoline (a miss: keys.c). */
#define _GNU_SOURCE
#include "engine.h"

#include <signal.h>
#include <sys/ptrace.h>

struct site *trap_site(struct process *p, pid_t tid, struct user_regs_struct *regs, bool *int3)
{
	siginfo_t si;
	if (int3)
		*int3 = false;
	if (ptrace(PTRACE_GETSIGINFO, tid, 0, &si) || si.si_code != SI_KERNEL ||
	    ptrace(PTRACE_GETREGS, tid, 0, regs))
		return NULL;
	if (int3)
		*int3 = true;
	struct site *s = site_find(p, regs->rip - 1);
	if (!s) {
		s = site_of_tramp(p, regs->rip - 1);
		if (s && !trap_is_miss(s, regs))
			s = NULL;
	}
	return s;
}

bool trap_is_miss(const struct site *s, const struct user_regs_struct *regs)
{
	return s->jumped && jump_miss_part(&s->tramp, s->tramp_addr, regs->rip - 1) >= 0;
}
