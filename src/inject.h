/* inject.c: system calls run inside a stopped thread of another process (x86-64). */
#ifndef PTSS_INJECT_H
#define PTSS_INJECT_H

#include "internal.h"
#include <ptss/ptrace.h>

/*
 * Runs syscall nr(args) in stopped thread tid using the syscall instruction at insn, and
 * puts the thread back exactly as it was. The target's result, or a negative errno of
 * ptss's own (ESRCH: the thread died meanwhile).
 */
long _ptss_inject(pid_t tid, uint64_t insn, long nr, const long args[6]);

/* The address of a syscall instruction in process pid, or 0 if none is found. */
uint64_t _ptss_find_syscall_insn(pid_t pid);

#endif
