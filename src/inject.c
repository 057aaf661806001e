/*
 * System calls injected into a stopped thread of another process (x86-64).
 *
 * The thread is borrowed: its registers and signal mask are saved, it is pointed at a
 * `syscall` instruction the target already has (nothing of the target's code changes),
 * run from syscall-entry-stop to syscall-exit-stop with PTRACE_SYSCALL, and put back.
 *
 * Restart state. A thread stopped inside a system call (a PTRACE_INTERRUPT during a
 * blocking read) has orig_rax = the call and rax = -ERESTART*: the kernel rewinds it to
 * the syscall instruction only on its way out of signal handling. Two rules keep that:
 * the injected registers carry orig_rax = -1, so that nothing is rewound while the
 * borrowed thread leaves the stop; and when the saved state is one the kernel would
 * rewind, the thread is put back into a PTRACE_INTERRUPT stop (a stop inside signal
 * handling) with its registers exactly as saved, so that the kernel's own restart runs
 * when the tracer resumes it.
 */
#define _GNU_SOURCE
#include "inject.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_SECCOMP
#define SYS_SECCOMP 1 /* si_code of a SIGSYS raised by a seccomp filter */
#endif

/* Kernel-internal errnos that a thread stopped inside a system call may show in rax. */
enum { ERESTARTSYS_ = 512, ERESTARTNOINTR_ = 513, ERESTARTNOHAND_ = 514, ERESTART_RESTARTBLOCK_ = 516 };

static bool will_restart(const struct user_regs_struct *r)
{
	long rax = (long)r->rax;
	return (long)r->orig_rax >= 0 &&
	       (rax == -ERESTARTSYS_ || rax == -ERESTARTNOINTR_ || rax == -ERESTARTNOHAND_ ||
		rax == -ERESTART_RESTARTBLOCK_);
}

static bool is_syscall_stop(int status)
{
	return WIFSTOPPED(status) && WSTOPSIG(status) == (SIGTRAP | 0x80);
}

static bool is_event_stop(int status, int event)
{
	return WIFSTOPPED(status) && (status >> 16) == event;
}

/*
 * Waits for tid's next stop of the kind `want` accepts. Other stops are handled on the
 * way: group-stops are resumed, SIGSTOP is remembered for re-raising, an exit ends the
 * wait with -ESRCH.
 */
static int wait_for(pid_t tid, bool (*want)(int), int *status, int *stopsig)
{
	for (;;) {
		pid_t got = waitpid(tid, status, __WALL);
		if (got < 0)
			return errno == EINTR ? (errno = 0, -EINTR) : -errno;
		if (WIFEXITED(*status) || WIFSIGNALED(*status))
			return -ESRCH;
		if (want(*status))
			return 0;
		if (is_event_stop(*status, PTRACE_EVENT_EXIT)) {
			ptrace(PTRACE_CONT, tid, 0, 0); /* let it die; its exit reaches the tracer */
			return -ESRCH;
		}
		int sig = 0;
		if (WIFSTOPPED(*status) && (*status >> 16) == 0 && WSTOPSIG(*status) != SIGTRAP)
			sig = WSTOPSIG(*status); /* only unblockable ones get here: SIGSTOP */
		if (sig == SIGSTOP)
			*stopsig = sig;
		if (ptrace(PTRACE_SYSCALL, tid, 0, 0))
			return -errno;
	}
}

static bool want_syscall_stop(int status) { return is_syscall_stop(status); }
static bool want_interrupt_stop(int status) { return is_event_stop(status, PTRACE_EVENT_STOP); }

static bool want_signal_stop(int status)
{
	return WIFSTOPPED(status) && (status >> 16) == 0 && WSTOPSIG(status) != (SIGTRAP | 0x80);
}

/*
 * Another thread may install a filter on this one (SECCOMP_FILTER_FLAG_TSYNC) between the
 * verdict and the call. One that traps skips the call and queues a SIGSYS for a call the
 * program never made: take it back. Resumed, the thread stops for it before running any
 * code of its own, and stays in that stop (resumed without it, it never sees it).
 * True when the call was trapped.
 */
static bool take_back_sigsys(pid_t tid, long nr, int *stopsig)
{
	siginfo_t queued[64] = { 0 }; /* valgrind cannot see the kernel fill it */
	struct __ptrace_peeksiginfo_args a = { .off = 0, .flags = 0, .nr = 64 };
	long n = ptrace(PTRACE_PEEKSIGINFO, tid, &a, queued);
	bool trapped = false;
	for (long i = 0; i < n && !trapped; i++)
		trapped = queued[i].si_signo == SIGSYS && queued[i].si_code == SYS_SECCOMP &&
			  queued[i].si_syscall == nr;
	int status;
	if (trapped && !ptrace(PTRACE_CONT, tid, 0, 0))
		wait_for(tid, want_signal_stop, &status, stopsig);
	return trapped;
}

static int restore(pid_t tid, const struct user_regs_struct *regs, uint64_t mask)
{
	if (ptrace(PTRACE_SETREGS, tid, 0, regs))
		return -errno;
	if (ptrace(PTRACE_SETSIGMASK, tid, sizeof(mask), &mask))
		return -errno;
	return 0;
}

/*
 * A ptrace event stop of fork, clone or exec comes from inside the system call, before
 * it stores its result in rax: registers set there would be overwritten on the way out.
 * Such a thread is first let out to the call's syscall-exit-stop, where the result is in
 * place, and is left there: resumed from it, it sees the call return as it would have.
 */
static int leave_syscall_event(pid_t tid, int *stopsig)
{
	siginfo_t si;
	if (ptrace(PTRACE_GETSIGINFO, tid, 0, &si) || si.si_signo != SIGTRAP)
		return 0;
	int status;
	switch (si.si_code >> 8) {
	case PTRACE_EVENT_VFORK:
		return -EBUSY; /* the parent would wait for the child: inject into the child */
	case PTRACE_EVENT_FORK:
	case PTRACE_EVENT_CLONE:
	case PTRACE_EVENT_EXEC:
	case PTRACE_EVENT_VFORK_DONE:
		if (ptrace(PTRACE_SYSCALL, tid, 0, 0))
			return -errno;
		return wait_for(tid, want_syscall_stop, &status, stopsig);
	}
	struct __ptrace_syscall_info info = { 0 }; /* valgrind cannot see the kernel fill it */
	if (ptrace(PTRACE_GET_SYSCALL_INFO, tid, sizeof(info), &info) > 0 &&
	    info.op == PTRACE_SYSCALL_INFO_ENTRY)
		return -EBUSY; /* a call about to run: the caller must let it run first */
	return 0;
}

long _ptss_inject(pid_t tid, uint64_t insn, long nr, const long args[6], char *why, size_t why_len)
{
	struct user_regs_struct saved, regs;
	uint64_t mask, all = ~0ull;
	int status, stopsig = 0;

	long result;
	switch (_ptss_seccomp_verdict(tid, insn, nr, args, &result, why, why_len)) {
	case SECCOMP_VERDICT_ALLOW:
		break;
	case SECCOMP_VERDICT_FAIL:
		return result; /* what the call would return, without making it */
	case SECCOMP_VERDICT_FORBID:
		return -EPERM;
	}
	int err = leave_syscall_event(tid, &stopsig);
	if (err)
		return err;
	if (ptrace(PTRACE_GETREGS, tid, 0, &saved))
		return -errno;
	if (ptrace(PTRACE_GETSIGMASK, tid, sizeof(mask), &mask))
		return -errno;
	/* No handler may run on the borrowed thread: block everything blockable. */
	if (ptrace(PTRACE_SETSIGMASK, tid, sizeof(all), &all))
		return -errno;

	regs = saved;
	regs.rax = (uint64_t)nr;
	regs.orig_rax = (uint64_t)-1; /* leaving the stop must not rewind anything */
	regs.rdi = (uint64_t)args[0];
	regs.rsi = (uint64_t)args[1];
	regs.rdx = (uint64_t)args[2];
	regs.r10 = (uint64_t)args[3];
	regs.r8 = (uint64_t)args[4];
	regs.r9 = (uint64_t)args[5];
	regs.rip = insn;
	if (ptrace(PTRACE_SETREGS, tid, 0, &regs) || ptrace(PTRACE_SYSCALL, tid, 0, 0)) {
		result = -errno;
		goto put_back;
	}
	err = wait_for(tid, want_syscall_stop, &status, &stopsig); /* entry */
	if (!err && ptrace(PTRACE_SYSCALL, tid, 0, 0))
		err = -errno;
	if (!err)
		err = wait_for(tid, want_syscall_stop, &status, &stopsig); /* exit */
	if (err)
		return err; /* the thread is gone: nothing left to put back */
	if (ptrace(PTRACE_GETREGS, tid, 0, &regs)) {
		result = -errno;
		goto put_back;
	}
	result = take_back_sigsys(tid, nr, &stopsig) ? -EPERM : (long)regs.rax;

put_back:
	err = restore(tid, &saved, mask);
	if (err)
		return err;
	if (will_restart(&saved)) {
		/* Back into a stop inside signal handling, registers as saved: see the top. */
		if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) || ptrace(PTRACE_CONT, tid, 0, 0))
			return -errno;
		err = wait_for(tid, want_interrupt_stop, &status, &stopsig);
		if (err)
			return err;
	}
	if (stopsig)
		syscall(SYS_tgkill, tid, tid, stopsig); /* a SIGSTOP that came meanwhile */
	return result;
}

/*
 * Finds a `syscall` instruction (0f 05) the target can execute: in its vDSO first, which
 * every process has, else in any executable file mapping. Read through /proc/PID/mem.
 */
uint64_t _ptss_find_syscall_insn(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	FILE *maps = fopen(path, "re");
	if (!maps)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	int mem = open(path, O_RDONLY | O_CLOEXEC);
	uint64_t found = 0, fallback = 0;
	char line[512];
	unsigned char buf[4096];
	while (mem >= 0 && !found && fgets(line, sizeof(line), maps)) {
		unsigned long lo, hi;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 || perms[2] != 'x')
			continue;
		bool vdso = strstr(line, "[vdso]") != NULL;
		if (!vdso && fallback)
			continue;
		for (unsigned long at = lo; at < hi && !(vdso ? found : fallback);) {
			size_t len = hi - at < sizeof(buf) ? hi - at : sizeof(buf);
			ssize_t n = pread(mem, buf, len, (off_t)at);
			if (n < 2)
				break;
			unsigned char *hit = memmem(buf, (size_t)n, "\x0f\x05", 2);
			if (hit)
				*(vdso ? &found : &fallback) = at + (uint64_t)(hit - buf);
			at += (unsigned long)n - 1; /* overlap by one byte: a pair may straddle */
		}
	}
	if (mem >= 0)
		close(mem);
	fclose(maps);
	return found ? found : fallback;
}

long ptss_ptrace_syscall(pid_t pid, pid_t tid, uint64_t insn, long nr, const long args[6])
{
	if (!insn)
		insn = _ptss_find_syscall_insn(pid);
	if (!insn)
		return -ENOEXEC;
	return _ptss_inject(tid, insn, nr, args, NULL, 0);
}
