/* inject.c: system calls run inside a stopped thread of another process (x86-64). */
#ifndef PTSS_INJECT_H
#define PTSS_INJECT_H

#include "internal.h"
#include <ptss/ptrace.h>
#include <sys/mman.h>

/* The flags of the memfd that holds a ptrace space's pages (MFD_EXEC: Linux >= 6.3). */
#define PTSS_MEMFD_FLAGS (MFD_CLOEXEC | MFD_ALLOW_SEALING | 0x0010U)

/*
 * Runs syscall nr(args) in stopped thread tid using the syscall instruction at insn, and
 * puts the thread back exactly as it was. The target's result, or a negative errno of
 * ptss's own (ESRCH: the thread died meanwhile). Never makes a call that the thread's
 * seccomp filters would not let through at that moment: -EPERM for one they would kill,
 * trap or suspend the thread on, the error they give for one they refuse; the reason in
 * why (if not NULL), left untouched when the call was made.
 */
long _ptss_inject(pid_t tid, uint64_t insn, long nr, const long args[6], char *why, size_t why_len);

/* seccomp_check.c: what a thread's seccomp state does with one call ptss would inject. */
enum seccomp_verdict {
	SECCOMP_VERDICT_ALLOW,  /* allowed (or only logged): inject it */
	SECCOMP_VERDICT_FAIL,   /* refused with an error, *result: no need to inject it at all
	                           (why says which, unless the thread is gone) */
	SECCOMP_VERDICT_FORBID, /* it would kill, trap or suspend the thread (or the filters
	                           cannot be read): never inject it; why says which */
};
enum seccomp_verdict _ptss_seccomp_verdict(pid_t tid, uint64_t insn, long nr, const long args[6],
					   long *result, char *why, size_t why_len);

/* The address of a syscall instruction in process pid, or 0 if none is found. */
uint64_t _ptss_find_syscall_insn(pid_t pid);

#endif
