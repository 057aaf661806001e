/*
 * Process and thread lifecycle, wired to the scratch core: a new thread claims an entry
 * (and is keyed for the jump probes), a fork child's copy of the scratch and of the jump
 * probes is removed (ptss_fork, jumps_fork) and it is followed or let go,
 * an exec starts a new life (ptss_exec_exit, a new ptss_proc, probes placed again), a
 * thread's exit releases its entry, the last one ends the process.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <linux/kcmp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

void lifecycle_thread_gone(struct tracer *t, struct thread *th)
{
	struct process *p = th->proc;
	jumps_thread_gone(t, th);
	thread_remove(t, th);
	if (p->nthreads == 0)
		process_free(t, p);
}

/* A traced task ended (exited or killed): the started command's or the attached
 * process's status is kept for the caller. */
void lifecycle_ended(struct tracer *t, pid_t tid, int status)
{
	if (!WIFEXITED(status) && !WIFSIGNALED(status))
		return;
	if (tid == t->child) {
		t->child_exited = true;
		t->child_status = status;
	}
	if (t->pid && tid == t->pid) { /* attached: the process ended while traced */
		t->attached_ended = true;
		t->attached_status = status;
	}
}

/* An untraced child's copy of the memory: take our int3s and pages out, then let it go. */
void lifecycle_let_child_go(struct tracer *t, struct process *p, pid_t tid)
{
	struct process copy = { .pid = tid, .sites = p->sites, .nsites = p->nsites };
	copy.mem = mem_open(tid);
	sites_disarm_all(&copy);
	if (copy.mem >= 0)
		close(copy.mem);
	jumps_fork(t, p, tid, NULL);
	ptss_space *cs = ptss_space_ptrace_new(tid, tid);
	if (cs && ptss_fork(p->scratch, cs))
		scratch_pages_left(t, tid, ptss_space_ptrace_refusal(cs));
	ptss_space_free(cs);
	ptrace(PTRACE_DETACH, tid, 0, 0);
}

/* A clone, fork or vfork: a thread of the same address space, or a child process. */
void lifecycle_new_task(struct tracer *t, struct thread *parent)
{
	unsigned long msg_;
	ptrace(PTRACE_GETEVENTMSG, parent->tid, 0, &msg_);
	pid_t tid = (pid_t)msg_;
	struct process *p = parent->proc;
	if (!queue_wait_first_stop(t, tid))
		return;
	bool same_mm = syscall(SYS_kcmp, p->pid, tid, KCMP_VM, 0, 0) == 0;
	if (same_mm) { /* a thread, or a vfork child borrowing the memory */
		struct thread *th = thread_add(t, p, tid);
		struct user_regs_struct regs;
		scratch_claim(t, th);
		if (!ptrace(PTRACE_GETREGS, tid, 0, &regs))
			jumps_thread_seen(t, th, regs.fs_base);
		ptrace(PTRACE_CONT, tid, 0, 0);
		return;
	}
	/* A copy of the address space: int3s and scratch pages included. */
	if (t->opts.follow) {
		struct process *child = process_new(t, tid);
		if (child && !sites_copy(child, p)) {
			memcpy(child->resolved, p->resolved, (size_t)t->nspecs * sizeof(*p->resolved));
			ptss_space_ptrace_use_thread(child->space, tid);
			ptss_fork(p->scratch, child->space);
			jumps_fork(t, p, tid, child);
			struct thread *th = thread_add(t, child, tid);
			scratch_claim(t, th);
			jumps_optimize(t, child, th, true);
			ptrace(PTRACE_CONT, tid, 0, 0);
			return;
		}
		say_error(t, "cannot follow child %d: %s", (int)tid, strerror(errno));
		if (child)
			process_free(t, child);
	}
	lifecycle_let_child_go(t, p, tid);
}

/* A new image: the old life's scratch is gone with the old memory; start a new one. */
void lifecycle_exec(struct tracer *t, pid_t pid)
{
	unsigned long former;
	ptrace(PTRACE_GETEVENTMSG, pid, 0, &former);
	struct thread *th = thread_find(t, (pid_t)former);
	if (!th)
		th = thread_find(t, pid);
	if (!th) {
		ptrace(PTRACE_CONT, pid, 0, 0);
		return;
	}
	struct process *p = th->proc;
	if (p->pid != pid) {
		/* A vfork child (sharing its parent's memory) left it: now a process of its own. */
		jumps_thread_gone(t, th);
		thread_remove(t, th);
		if (!t->opts.follow) {
			ptrace(PTRACE_DETACH, pid, 0, 0);
			return;
		}
		p = process_new(t, pid);
		if (!p) {
			ptrace(PTRACE_DETACH, pid, 0, 0);
			return;
		}
	} else {
		process_new_image(t, p);
	}
	p->before_entry = true;
	p->exec_seen = true;
	p->refusal_said = false;
	struct thread *nt = thread_add(t, p, pid);
	scratch_claim(t, nt);
	place_probes(t, p, false);
	jumps_optimize(t, p, nt, true);
	ptrace(PTRACE_CONT, pid, 0, 0);
}
