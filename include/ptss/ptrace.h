/*
 * Scratch pages inside another process, stopped under ptrace (x86-64).
 *
 * The caller is the tracer: it attached to the target with PTRACE_SEIZE and set
 * PTRACE_O_TRACESYSGOOD, and it is the thread that attached. The space maps pages by
 * injecting system calls into one stopped thread of the target, which the tracer names
 * with ptss_space_ptrace_use_thread before each call that may map or unmap (claim,
 * enable, fork, detach).
 *
 * An injection runs in a thread that is in a ptrace-stop whose pending signal, if any,
 * the tracer means to suppress (an event stop, a PTRACE_INTERRUPT stop, or the SIGTRAP of
 * a breakpoint) — never a syscall-entry-stop. Afterwards the thread is back in an
 * equivalent stop with every register and its signal mask exactly as before; a thread
 * that was stopped inside a restartable system call (read on a pipe, say) restarts it
 * when resumed, as if nothing had happened. The target's code is never modified: the
 * injected `syscall` instruction is one the target already has (its vDSO, or its libc).
 *
 * Pages live in a memfd created inside the target ("memfd:ptss"), mapped there
 * PROT_NONE and committed read+execute page by page; the tracer writes them through its
 * own read+write mapping of the same memfd, opened through /proc/PID/fd, and seals the
 * memfd against any later writable mapping. No mapping is writable and executable, and
 * the target holds no writable handle on its pages.
 */
#ifndef PTSS_PTRACE_H
#define PTSS_PTRACE_H

#include <ptss/space.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A space over process `pid` (a thread-group id). `tid` is the stopped thread to inject
 * into at first. NULL + errno: ESRCH (no such process).
 */
PTSS_API ptss_space *ptss_space_ptrace_new(pid_t pid, pid_t tid);

/* The stopped thread through which the space's next injections run. */
PTSS_API void ptss_space_ptrace_use_thread(ptss_space *s, pid_t tid);

/*
 * The target exec'd or exited: forget the cached syscall instruction and the target's
 * /proc files. (ptss_exec_exit releases the reservation itself; call this after it.)
 */
PTSS_API void ptss_space_ptrace_reset(ptss_space *s);

/*
 * Why the space's last injection was not made — a seccomp filter of the borrowed thread
 * refuses it, would have killed, trapped or suspended the thread, or cannot be read — or
 * NULL when it was
 * made (or none was tried since the space was made or reset). Each system call the space
 * needs is checked against the thread's filters just before it is made: the target is
 * never harmed, the operation fails instead (a claim finds no entry, an unmap leaves the
 * pages mapped). Ask right after the operation that failed.
 */
PTSS_API const char *ptss_space_ptrace_refusal(const ptss_space *s);

/*
 * Where the space's next reservation goes: inside [lo, hi) of the target (a gap of its
 * memory map, the one nearest the middle of the range; MAP_FIXED_NOREPLACE), so that code
 * there can reach code near it with 32-bit displacements. The reserve then fails with
 * -ENOMEM when no gap is large enough. lo == hi == 0: anywhere (the default).
 */
PTSS_API void ptss_space_ptrace_near(ptss_space *s, uint64_t lo, uint64_t hi);

/*
 * Shared data, apart from the reservation: `size` bytes of a new memfd mapped read+write
 * (never executable) both in the target, at *addr, and in the tracer, at *view — what the
 * target writes there the tracer reads at once, without stopping it. 3 injections, each
 * checked as the space's own; a fork child shares the mapping (unmap it there with
 * ptss_space_ptrace_unmap_data on the child's space). 0 or -errno.
 */
PTSS_API int ptss_space_ptrace_map_data(ptss_space *s, size_t size, uint64_t *addr, void **view);

/* Unmaps [addr, addr + size) in the target (1 injection); the tracer's view, if not NULL,
 * is unmapped here too. 0 or -errno (the view is unmapped whatever the target said). */
PTSS_API int ptss_space_ptrace_unmap_data(ptss_space *s, uint64_t addr, size_t size, void *view);

/* Injections made so far by this space: the cost model of growth and fork clean-up. */
PTSS_API unsigned long ptss_space_ptrace_injections(const ptss_space *s);

/*
 * Runs system call `nr` with `args` in stopped thread tid of process pid and returns its
 * result (a negative errno for the target's errors), or a negative errno for ptss's own:
 * ESRCH when the thread died or was killed meanwhile, ENOEXEC when the target has no
 * syscall instruction to borrow, EIO for an unexpected stop, EPERM when the thread's
 * seccomp state would not survive the call (not made; a call its filters refuse with an
 * error returns that error, also without being made). `insn` is the address of a
 * syscall instruction in the target (0: find one). For tests and measurements; the space
 * uses the same path.
 */
PTSS_API long ptss_ptrace_syscall(pid_t pid, pid_t tid, uint64_t insn, long nr, const long args[6]);

/*
 * May ptss inject mmap, mprotect, munmap, memfd_create, ftruncate and close into the
 * target, given its seccomp filters (run here on those very calls)?
 *   0       yes: no filter, or every filter allows them;
 *   1       a filter refuses one with an error: injecting is harmless but no page can be
 *           mapped (claims fail; a tracer falls back), *why says which;
 *   -EPERM  a filter would kill, trap or stop on one (or strict mode): never inject;
 *   -EACCES filters are present but cannot be read (that needs CAP_SYS_ADMIN);
 *   -ESRCH  no such process.
 * The thread tid must be in a ptrace-stop.
 */
PTSS_API int ptss_ptrace_check_seccomp(pid_t pid, pid_t tid, char *why, size_t why_len);

#ifdef __cplusplus
}
#endif
#endif /* PTSS_PTRACE_H */
