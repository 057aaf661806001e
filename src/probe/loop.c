/*
 * The ptrace event loop: every stop of every traced task comes here and is turned into
 * a probe hit, a lifecycle step of the scratch allocator (new thread -> claim, exit ->
 * release, fork -> ptss_fork, exec -> ptss_exec_exit and a new life), or a signal passed
 * on. A stop signal or the run's duration ends in a clean detach.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>

/* Probe errors are fatal in the command ptss started while it has run no code of its own. */
static bool probes_fatal(const struct process *p)
{
	return p->started && !p->exec_seen && p->before_entry;
}

/* A SIGTRAP at one of our sites. */
static int on_site(struct tracer *t, struct thread *th, struct user_regs_struct *regs, struct site *s)
{
	struct process *p = th->proc;
	if (trap_is_miss(s, regs)) { /* a thread its trampoline does not know yet */
		jumps_miss(t, th, regs, s);
		return ptrace(PTRACE_CONT, th->tid, 0, 0) ? -errno : 0;
	}
	/* Its int3's trap, from before the jmp: run the jmp. (An exit whose jmp starts before
	 * it, whose int3 trapped just before the patch, is a plain hit below: the ret or jmp
	 * is emulated.) */
	if (s->jumped && s->jump.addr == s->addr) {
		regs->rip = s->addr;
		if (ptrace(PTRACE_SETREGS, th->tid, 0, regs) || ptrace(PTRACE_CONT, th->tid, 0, 0))
			return -errno;
		return 0;
	}
	if (s->internal && s->addr == p->entry_site) {
		/* The program's entry: ld.so has loaded every needed library. */
		uint64_t addr = s->addr;
		bool fatal = probes_fatal(p);
		sites_remove(p, addr);
		p->entry_site = 0;
		p->before_entry = false;
		int rc = place_probes(t, p, fatal);
		if (!rc)
			jumps_optimize(t, p, th, false);
		regs->rip = addr;
		if (ptrace(PTRACE_SETREGS, th->tid, 0, regs) || ptrace(PTRACE_CONT, th->tid, 0, 0))
			return -errno;
		return rc;
	}
	int rc = 0;
	if (s->internal && s->addr == p->notice_site) {
		uint64_t addr = s->addr;
		rc = place_probes(t, p, probes_fatal(p)); /* ld.so's startup, or a dlopen */
		if (!rc)
			jumps_optimize(t, p, th, false);
		s = site_find(p, addr);                  /* the table may have moved */
	}
	int err = hit_handle(t, th, regs, s); /* resumes the thread, whatever rc says */
	if (err && err != -ESRCH)
		say_error(t, "thread %d at 0x%llx: %s", (int)th->tid, (unsigned long long)regs->rip, strerror(-err));
	return rc;
}

static int dispatch(struct tracer *t, pid_t tid, int status)
{
	struct thread *th = thread_find(t, tid);
	if (WIFEXITED(status) || WIFSIGNALED(status)) {
		lifecycle_ended(t, tid, status);
		if (th)
			lifecycle_thread_gone(t, th);
		return 0;
	}
	if (!th) {
		if ((status >> 16) == PTRACE_EVENT_STOP)
			queue_early(t, tid, status); /* a new task, before its parent's event */
		else
			ptrace(PTRACE_CONT, tid, 0, 0);
		return 0;
	}
	int sig = WSTOPSIG(status);
	switch (status >> 16) {
	case PTRACE_EVENT_CLONE:
	case PTRACE_EVENT_FORK:
	case PTRACE_EVENT_VFORK:
		lifecycle_new_task(t, th);
		ptrace(PTRACE_CONT, tid, 0, 0);
		return 0;
	case PTRACE_EVENT_EXEC:
		lifecycle_exec(t, tid);
		return 0;
	case PTRACE_EVENT_EXIT:
		lifecycle_thread_gone(t, th);
		ptrace(PTRACE_CONT, tid, 0, 0);
		return 0;
	case PTRACE_EVENT_STOP:
		if (th->state.interrupt_due) {
			th->state.interrupt_due = false;
			ptrace(PTRACE_CONT, tid, 0, 0);
		} else if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU) {
			ptrace(PTRACE_LISTEN, tid, 0, 0); /* a group-stop: stay stopped until SIGCONT */
		} else {
			ptrace(PTRACE_CONT, tid, 0, 0);
		}
		return 0;
	case 0:
		break;
	default:
		ptrace(PTRACE_CONT, tid, 0, 0);
		return 0;
	}
	if (sig == SIGTRAP) {
		struct user_regs_struct regs;
		struct site *s = trap_site(th->proc, tid, &regs, NULL);
		if (s)
			return on_site(t, th, &regs, s);
	}
	signal_deliver(t, th, sig);
	return 0;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One stop handled. A probe of the started program that cannot be placed ends the trace:
 * the program has run no code of its own and must run none: killed while it is still
 * stopped, then everything detached. */
static int handle(struct tracer *t, pid_t tid, int status)
{
	int r = dispatch(t, tid, status);
	if (r == OUT_PROBE) {
		if (t->child)
			kill(t->child, SIGKILL);
		detach_all(t, false);
	}
	return r;
}

/*
 * Signals reach the loop only through sigtimedwait: they stay blocked, so that no handler
 * interrupts the many waits of injections and fallbacks, and a SIGCHLD that comes between
 * the last waitpid and the sleep is still pending when the sleep starts.
 */
int loop_run(struct tracer *t, const struct ptss_run_opts *o)
{
	sigset_t stop, wake, old;
	if (o->stop) {
		stop = *o->stop;
	} else {
		sigemptyset(&stop);
		sigaddset(&stop, SIGINT);
		sigaddset(&stop, SIGTERM);
		sigaddset(&stop, SIGHUP);
	}
	wake = stop;
	sigaddset(&wake, SIGCHLD);
	sigprocmask(SIG_BLOCK, &wake, &old);
	double start = now(), last_tick = start;
	int rc = 0, stop_signal = 0;
	for (unsigned events = 0; t->procs; events++) {
		/* Under a steady stream of stops the loop never sleeps: look for Ctrl-C every 16
		 * events too (a few hundred µs of stops; a system call each time would cost 4%). */
		static const struct timespec no_wait;
		int sig;
		if (!stop_signal && events % 16 == 0 && (sig = sigtimedwait(&stop, NULL, &no_wait)) > 0)
			stop_signal = sig;
		if (stop_signal || (o->duration > 0 && now() - start >= o->duration)) {
			detach_all(t, false);
			break;
		}
		if (o->interval > 0 && o->tick && now() - last_tick >= o->interval) {
			last_tick = now();
			o->tick((ptss_tracer *)t, o->tick_ctx);
		}
		pid_t tid;
		int status;
		if (!queue_take(t, &tid, &status)) {
			tid = waitpid(-1, &status, __WALL | WNOHANG);
			if (tid < 0)
				break; /* no traced task left */
			if (tid == 0) { /* nothing ready: sleep until a stop or a signal, 100 ms at most */
				struct timespec tick = { 0, 100 * 1000 * 1000 };
				sig = sigtimedwait(&wake, NULL, &tick);
				if (sig > 0 && sig != SIGCHLD)
					stop_signal = sig;
				continue;
			}
		}
		int r = handle(t, tid, status);
		if (r && !rc)
			rc = r;
		if (r == OUT_PROBE)
			break;
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	queue_free(t);
	return rc;
}

int loop_step(struct tracer *t, int timeout_ms)
{
	pid_t tid;
	int status;
	if (!t->procs)
		return -ECHILD;
	if (!queue_take(t, &tid, &status)) {
		sigset_t chld, old;
		sigemptyset(&chld);
		sigaddset(&chld, SIGCHLD);
		sigprocmask(SIG_BLOCK, &chld, &old);
		tid = waitpid(-1, &status, __WALL | WNOHANG);
		if (tid == 0 && timeout_ms != 0) {
			struct timespec ts = { timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000 };
			sigtimedwait(&chld, NULL, timeout_ms < 0 ? NULL : &ts);
			tid = waitpid(-1, &status, __WALL | WNOHANG);
		}
		int err = errno;
		sigprocmask(SIG_SETMASK, &old, NULL);
		if (tid < 0)
			return err == ECHILD ? -ECHILD : -err;
		if (tid == 0)
			return 0;
	}
	int r = handle(t, tid, status);
	return r ? r : 1;
}
