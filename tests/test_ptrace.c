/*
 * The ptrace space on real child processes: pages inside a multithreaded target, threads
 * that come and go, fork, exec, injection that leaves no trace, a target killed during an
 * injection, seccomp, and bad input.
 */
#define _GNU_SOURCE
#include "tracee.h"

#include <ptss/ptrace.h>
#include <ptss/ptss.h>

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#ifndef TARGET_PATH
#error "TARGET_PATH: the test target's path"
#endif

/* The ptss lines of /proc/PID/maps: how many, how many executable, any writable+executable. */
struct maps_summary { int ptss, ptss_exec, wx; };

static struct maps_summary summarize_maps(pid_t pid)
{
	struct maps_summary m = { 0 };
	char path[64], line[512], perms[8];
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	FILE *f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%*x-%*x %7s", perms) != 1)
			continue;
		bool ptss = strstr(line, "memfd:ptss") != NULL;
		m.ptss += ptss;
		m.ptss_exec += ptss && perms[2] == 'x';
		m.wx += perms[1] == 'w' && perms[2] == 'x';
	}
	if (f)
		fclose(f);
	return m;
}

/* Per-test state: the tracee, its space and process life, each thread's entry. */
struct world {
	struct tracee t;
	ptss_space *space;
	ptss_proc *p;
	ptss_proc *old; /* the life before an exec */
	pid_t tid_of[TRACEE_MAX_THREADS];
	ptss_entry *entry_of[TRACEE_MAX_THREADS];
	ptss_proc *proc_of[TRACEE_MAX_THREADS]; /* the life each entry belongs to */
	int n;
	int forks_cleaned;
	unsigned long fork_injections;
};

static void remember(struct world *w, pid_t tid, ptss_entry *e)
{
	w->tid_of[w->n] = tid;
	w->proc_of[w->n] = w->p;
	w->entry_of[w->n++] = e;
}

static void forget(struct world *w, int i)
{
	w->n--;
	w->tid_of[i] = w->tid_of[w->n];
	w->proc_of[i] = w->proc_of[w->n];
	w->entry_of[i] = w->entry_of[w->n];
}

static void on_thread(struct tracee *t, pid_t tid, void *arg)
{
	struct world *w = arg;
	(void)t;
	ptss_space_ptrace_use_thread(w->space, tid); /* the new thread is stopped: inject there */
	ptss_entry *e = ptss_claim(w->p);
	assert_non_null(e);
	remember(w, tid, e);
}

static void on_exit_thread(struct tracee *t, pid_t tid, void *arg)
{
	struct world *w = arg;
	(void)t;
	for (int i = 0; i < w->n; i++)
		if (w->tid_of[i] == tid) {
			/* After an exec the old life ignores it; otherwise it returns to the list. */
			assert_int_equal(ptss_release(w->proc_of[i], w->entry_of[i]), 0);
			forget(w, i);
			return;
		}
}

static void start(struct world *w, const char *workers, const char *mode)
{
	memset(w, 0, sizeof(*w));
	char *argv[] = { TARGET_PATH, (char *)workers, (char *)mode, NULL };
	assert_int_equal(tracee_start(&w->t, argv), 0);
	w->t.arg = w;
	w->t.on_thread = on_thread;
	w->t.on_exit = on_exit_thread;
	char why[256] = "";
	assert_int_equal(ptss_ptrace_check_seccomp(w->t.pid, w->t.pid, why, sizeof(why)), 0);
	w->space = ptss_space_ptrace_new(w->t.pid, w->t.pid);
	assert_non_null(w->space);
	w->p = ptss_proc_new(w->space, NULL);
	assert_non_null(w->p);
}

static void enable_all(struct world *w)
{
	ptss_entry *out[TRACEE_MAX_THREADS];
	assert_int_equal(ptss_enable(w->p, (size_t)w->t.ntids, out), 0);
	for (int i = 0; i < w->t.ntids; i++)
		remember(w, w->t.tids[i], out[i]);
}

/* Detach: unmap the pages (threads stopped), let the target finish, check its status. */
static void finish(struct world *w)
{
	assert_int_equal(tracee_stop_all(&w->t), 0);
	ptss_space_ptrace_use_thread(w->space, w->t.pid);
	ptss_proc_free(w->p);
	ptss_proc_free(w->old);
	assert_int_equal(summarize_maps(w->t.pid).ptss, 0); /* detach leaves no page behind */
	ptss_space_free(w->space);
	assert_int_equal(tracee_finish(&w->t), 0);
}

static void test_pages_are_rx_in_target_and_run_there(void **state)
{
	(void)state;
	struct world *w = calloc(1, sizeof(*w));
	start(w, "4", NULL);
	enable_all(w);
	struct maps_summary m = summarize_maps(w->t.pid);
	assert_true(m.ptss_exec >= 1);
	assert_int_equal(m.wx, 0);

	/* Point a stopped worker at `mov $42, %eax; int3` in its own entry. */
	pid_t tid = w->tid_of[1];
	ptss_entry *e = w->entry_of[1];
	memcpy(ptss_entry_view(w->p, e), "\xb8\x2a\x00\x00\x00\xcc", 6);
	struct user_regs_struct saved, regs;
	assert_int_equal(ptrace(PTRACE_GETREGS, tid, 0, &saved), 0);
	regs = saved;
	regs.rip = ptss_entry_addr(w->p, e);
	regs.orig_rax = (unsigned long long)-1; /* do not rewind into the interrupted read */
	assert_int_equal(ptrace(PTRACE_SETREGS, tid, 0, &regs), 0);
	assert_int_equal(ptrace(PTRACE_CONT, tid, 0, 0), 0);
	int status;
	assert_int_equal(waitpid(tid, &status, __WALL), tid);
	assert_true(WIFSTOPPED(status) && WSTOPSIG(status) == SIGTRAP);
	assert_int_equal(ptrace(PTRACE_GETREGS, tid, 0, &regs), 0);
	assert_int_equal(regs.rax & 0xffffffff, 42);
	assert_int_equal(regs.rip, ptss_entry_addr(w->p, e) + 6);
	/* Back where it was: its read restarts and completes normally when woken. */
	assert_int_equal(ptrace(PTRACE_SETREGS, tid, 0, &saved), 0);
	assert_int_equal(tracee_cont_all(&w->t), 0);
	assert_int_equal(tracee_send(&w->t, "wake 4\ncall\n"), 0);
	char line[64];
	assert_true(tracee_expect(&w->t, "call", line, sizeof(line), 20));
	assert_string_equal(line, "call 42");
	/* Issue 9, defect 6: the target holds no writable handle on its pages (the memfd is
	 * sealed against writable mappings, and its descriptor closed). */
	assert_int_equal(tracee_send(&w->t, "scratch\n"), 0);
	assert_true(tracee_expect(&w->t, "scratch", line, sizeof(line), 20));
	assert_string_equal(line, "scratch sealed no-fd");
	finish(w);
	free(w);
}

/* The /proc/PID/maps line of addr: its permissions, or "" when nothing is mapped there. */
static void perms_at(pid_t pid, uint64_t addr, char perms[8])
{
	char path[64], line[512];
	unsigned long long a, b;
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	FILE *f = fopen(path, "r");
	perms[0] = '\0';
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "%llx-%llx %7s", &a, &b, perms) == 3 && addr >= a && addr < b)
			break;
		else
			perms[0] = '\0';
	if (f)
		fclose(f);
}

/* Shared data (what jump probes count in) and a reservation placed near a given range. */
static void test_shared_data_and_a_reservation_near(void **state)
{
	(void)state;
	struct world *w = calloc(1, sizeof(*w));
	start(w, "2", NULL); /* every thread stopped */
	uint64_t addr;
	void *view;
	assert_int_equal(ptss_space_ptrace_map_data(w->space, 1 << 20, &addr, &view), 0);
	char perms[8];
	perms_at(w->t.pid, addr, perms);
	assert_string_equal(perms, "rw-s"); /* read+write, shared, never executable */
	/* One memory: what the tracer writes, the target's memory holds, and back. */
	char mem[64];
	snprintf(mem, sizeof(mem), "/proc/%d/mem", (int)w->t.pid);
	FILE *f = fopen(mem, "r+");
	assert_non_null(f);
	uint64_t v = 0x1234567890abcdefull, got = 0;
	memcpy((char *)view + 4096, &v, 8);
	assert_int_equal(pread(fileno(f), &got, 8, (off_t)(addr + 4096)), 8);
	assert_true(got == v);
	v = 42;
	assert_int_equal(pwrite(fileno(f), &v, 8, (off_t)(addr + 8192)), 8);
	assert_true(*(volatile uint64_t *)((char *)view + 8192) == 42);
	fclose(f);
	assert_int_equal(ptss_space_ptrace_unmap_data(w->space, addr, 1 << 20, view), 0);
	perms_at(w->t.pid, addr, perms);
	assert_string_equal(perms, "");

	/* The next reservation lands inside the range asked for. */
	uint64_t lo = 0x200000000000ull, hi = lo + (1ull << 32);
	ptss_space_ptrace_near(w->space, lo, hi);
	ptss_entry *e[1];
	assert_int_equal(ptss_enable(w->p, 1, e), 0);
	uint64_t at = ptss_entry_addr(w->p, e[0]);
	assert_true(at >= lo && at < hi);
	assert_int_equal(tracee_cont_all(&w->t), 0);
	ptss_release(w->p, e[0]);
	finish(w);
	free(w);
}

static void test_injection_leaves_registers_and_mask_unchanged(void **state)
{
	(void)state;
	struct world *w = calloc(1, sizeof(*w));
	start(w, "2", NULL);
	for (int i = 0; i < w->t.ntids; i++) { /* each thread is inside a blocking read */
		pid_t tid = w->t.tids[i];
		struct user_regs_struct before, after;
		struct user_fpregs_struct fp_before, fp_after;
		uint64_t mask_before = 0, mask_after = 0; /* valgrind cannot see ptrace fill them */
		assert_int_equal(ptrace(PTRACE_GETREGS, tid, 0, &before), 0);
		assert_int_equal(ptrace(PTRACE_GETFPREGS, tid, 0, &fp_before), 0);
		assert_int_equal(ptrace(PTRACE_GETSIGMASK, tid, sizeof(mask_before), &mask_before), 0);
		assert_int_equal(before.orig_rax, SYS_read);

		const long args[6] = { 0 };
		assert_int_equal(ptss_ptrace_syscall(w->t.pid, tid, 0, SYS_getpid, args), w->t.pid);
		assert_int_equal(ptss_ptrace_syscall(w->t.pid, tid, 0, SYS_gettid, args), tid);
		assert_int_equal(ptss_ptrace_syscall(w->t.pid, tid, 0, SYS_close, (long[6]){ -1 }), -EBADF);

		assert_int_equal(ptrace(PTRACE_GETREGS, tid, 0, &after), 0);
		assert_int_equal(ptrace(PTRACE_GETFPREGS, tid, 0, &fp_after), 0);
		assert_int_equal(ptrace(PTRACE_GETSIGMASK, tid, sizeof(mask_after), &mask_after), 0);
		assert_memory_equal(&before, &after, sizeof(before)); /* every GP reg, flags, fs/gs base */
		assert_memory_equal(&fp_before, &fp_after, sizeof(fp_before));
		assert_int_equal(mask_before, mask_after);
	}
	/* Each interrupted read completes normally (a failed read would exit with 3). */
	assert_int_equal(tracee_cont_all(&w->t), 0);
	assert_int_equal(tracee_send(&w->t, "wake 2\ncall\n"), 0);
	char line[64];
	assert_true(tracee_expect(&w->t, "call 42", line, sizeof(line), 20));
	finish(w);
	free(w);
}

static struct ptss_stats stats_of(ptss_proc *p)
{
	struct ptss_stats st;
	ptss_stats_get(p, &st);
	return st;
}

/* Pumps events until `claimed` entries are claimed (threads appear and exit asynchronously). */
static void pump_until_claimed(struct world *w, uint64_t claimed)
{
	for (int i = 0; i < 400 && stats_of(w->p).claimed != claimed; i++)
		tracee_pump(&w->t, 10);
	assert_int_equal(stats_of(w->p).claimed, claimed);
}

static void test_threads_come_and_go_growth_is_exact(void **state)
{
	(void)state;
	struct world *w = calloc(1, sizeof(*w));
	start(w, "2", NULL);
	enable_all(w); /* main + 2 workers */
	assert_int_equal(stats_of(w->p).pages, 1);
	assert_int_equal(tracee_cont_all(&w->t), 0);

	char line[64];
	assert_int_equal(tracee_send(&w->t, "spawn 100\n"), 0);
	assert_true(tracee_expect(&w->t, "spawned 100", line, sizeof(line), 30));
	assert_int_equal(stats_of(w->p).claimed, 103);
	assert_int_equal(stats_of(w->p).pages, 2); /* ceil(103 / 64) */

	assert_int_equal(tracee_send(&w->t, "wake 60\n"), 0);
	pump_until_claimed(w, 43);
	assert_int_equal(tracee_send(&w->t, "spawn 300\n"), 0);
	assert_true(tracee_expect(&w->t, "spawned 300", line, sizeof(line), 60));
	struct ptss_stats st = stats_of(w->p);
	assert_int_equal(st.claimed, 343);
	assert_int_equal(st.claimed_high_water, 343);
	assert_int_equal(st.pages, (343 + 63) / 64); /* exited threads' entries were reused */
	assert_int_equal(st.failed_grows, 0);
	struct maps_summary m = summarize_maps(w->t.pid);
	assert_int_equal(m.wx, 0);

	assert_int_equal(tracee_send(&w->t, "wake 340\n"), 0);
	pump_until_claimed(w, 3);
	finish(w);
	free(w);
}

static void on_fork_child(struct tracee *t, pid_t child, void *arg)
{
	struct world *w = arg;
	(void)t;
	/* The child is a copy: the pages are there until ptss_fork removes them. */
	assert_true(summarize_maps(child).ptss >= 1);
	ptss_space *cs = ptss_space_ptrace_new(child, child);
	assert_non_null(cs);
	assert_int_equal(ptss_fork(w->p, cs), 0);
	w->fork_injections = ptss_space_ptrace_injections(cs);
	assert_int_equal(summarize_maps(child).ptss, 0);
	assert_true(summarize_maps(w->t.pid).ptss >= 1); /* the parent keeps its pages */
	ptss_space_free(cs); /* no reservation of its own: frees tracer memory only */
	assert_int_equal(ptrace(PTRACE_DETACH, child, 0, 0), 0); /* it runs on, untraced */
	w->forks_cleaned++;
}

static void fork_with_threads(int workers, uint64_t want_pages)
{
	struct world *w = calloc(1, sizeof(*w));
	char n[16];
	snprintf(n, sizeof(n), "%d", workers);
	start(w, n, NULL);
	enable_all(w);
	assert_int_equal(stats_of(w->p).pages, want_pages);
	w->t.on_fork_child = on_fork_child;
	assert_int_equal(tracee_cont_all(&w->t), 0);
	assert_int_equal(tracee_send(&w->t, "fork\n"), 0);
	char line[64];
	assert_true(tracee_expect(&w->t, "child", line, sizeof(line), 20));
	assert_string_equal(line, "child 7"); /* the child ran unharmed */
	assert_int_equal(w->forks_cleaned, 1);
	assert_int_equal(w->fork_injections, 1); /* one unmap, whatever the page count */
	assert_int_equal(tracee_send(&w->t, "wake 1000\n"), 0);
	finish(w);
	free(w);
}

static void test_fork_child_loses_pages_with_one_injection(void **state)
{
	(void)state;
	fork_with_threads(2, 1);
	fork_with_threads(300, 5);
}

static void on_exec(struct tracee *t, void *arg)
{
	struct world *w = arg;
	(void)t;
	ptss_exec_exit(w->p);            /* the old image is gone: its pages with it */
	assert_int_equal(stats_of(w->p).tracer_bytes, 0);
	w->old = w->p;
	ptss_space_ptrace_reset(w->space);
	ptss_space_ptrace_use_thread(w->space, w->t.pid);
	w->p = ptss_proc_new(w->space, NULL);
	assert_non_null(w->p);
	ptss_entry *e = ptss_claim(w->p); /* the exec'ing thread, in the new image */
	assert_non_null(e);
	/* Its old entry belongs to the old life: released there, ignored. */
	for (int i = 0; i < w->n; i++)
		if (w->tid_of[i] == w->t.pid) {
			assert_int_equal(ptss_release(w->old, w->entry_of[i]), 0);
			forget(w, i);
			break;
		}
	remember(w, w->t.pid, e);
}

static void test_exec_frees_and_new_image_is_enabled_afresh(void **state)
{
	(void)state;
	struct world *w = calloc(1, sizeof(*w));
	start(w, "3", NULL);
	enable_all(w);
	w->t.on_exec = on_exec;
	assert_int_equal(tracee_cont_all(&w->t), 0);
	assert_int_equal(tracee_send(&w->t, "exec\n"), 0);
	char line[64];
	assert_true(tracee_expect(&w->t, "ready 2", line, sizeof(line), 20));
	for (int i = 0; i < 400 && !w->old; i++) /* its output may overtake the exec event */
		tracee_pump(&w->t, 10);
	assert_non_null(w->old);
	pump_until_claimed(w, 3); /* main + the new image's 2 workers */
	/* The old main thread's entry came back after exec_exit: ignored. (The old workers'
	 * exits may come before the exec event or after; either way no record is left.) */
	assert_true(stats_of(w->old).ignored_releases >= 1);
	for (int i = 0; i < w->n; i++)
		assert_ptr_equal(w->proc_of[i], w->p);
	assert_int_equal(summarize_maps(w->t.pid).wx, 0);
	assert_int_equal(tracee_send(&w->t, "call\n"), 0);
	assert_true(tracee_expect(&w->t, "call 42", line, sizeof(line), 20));
	assert_int_equal(tracee_send(&w->t, "wake 2\n"), 0);
	finish(w);
	free(w);
}

static void test_target_killed_during_injection_is_an_error(void **state)
{
	(void)state;
	struct world *w = calloc(1, sizeof(*w));
	start(w, "1", NULL);
	pid_t killer = fork();
	if (killer == 0) {
		usleep(200 * 1000);
		kill(w->t.pid, SIGKILL);
		_exit(0);
	}
	const long args[6] = { 0 };
	/* pause() blocks for ever: only the kill ends the injection. */
	assert_int_equal(ptss_ptrace_syscall(w->t.pid, w->t.pid, 0, SYS_pause, args), -ESRCH);
	waitpid(killer, NULL, 0);
	ptss_proc_free(w->p); /* nothing was mapped; nothing to unmap */
	ptss_space_free(w->space);
	tracee_kill(&w->t);
	free(w);
}

static void test_no_such_process(void **state)
{
	(void)state;
	errno = 0;
	assert_null(ptss_space_ptrace_new(INT_MAX - 1, INT_MAX - 1));
	assert_int_equal(errno, ESRCH);
	char why[256];
	assert_int_equal(ptss_ptrace_check_seccomp(INT_MAX - 1, INT_MAX - 1, why, sizeof(why)), -ESRCH);
}

static void seccomp_refused(const char *mode, int want)
{
	struct tracee t = { 0 };
	char *argv[] = { TARGET_PATH, "1", (char *)mode, NULL };
	assert_int_equal(tracee_start(&t, argv), 0);
	char why[256] = "";
	assert_int_equal(ptss_ptrace_check_seccomp(t.pid, t.pid, why, sizeof(why)), want);
	assert_non_null(strstr(why, "memfd_create"));
	assert_int_equal(kill(t.pid, 0), 0); /* the target is unharmed */
	assert_int_equal(tracee_cont_all(&t), 0);
	assert_int_equal(tracee_send(&t, "call\n"), 0);
	char line[64];
	assert_true(tracee_expect(&t, "call 42", line, sizeof(line), 20));
	assert_int_equal(tracee_send(&t, "wake 1\n"), 0);
	assert_int_equal(tracee_stop_all(&t), 0);
	assert_int_equal(tracee_finish(&t), 0);
}

static void test_seccomp_filter_forbidding_memfd_is_refused(void **state)
{
	(void)state;
	seccomp_refused("seccomp-kill", -EPERM); /* injecting would kill it: never */
	seccomp_refused("seccomp-errno", 1);     /* harmless, but no page can be had */
}

/*
 * A claim in a target whose filter refuses memfd_create (mode: seccomp-errno) or would
 * kill the thread on it (seccomp-kill, issue 9 defect 3: no check at setup can be relied
 * on, filters come at any time). The injection is not made: the claim fails with EPERM,
 * the space says why, nothing is mapped, and the target runs on.
 */
static void claim_refused(const char *mode, const char *why_says)
{
	struct tracee t = { 0 };
	char *argv[] = { TARGET_PATH, "1", (char *)mode, NULL };
	assert_int_equal(tracee_start(&t, argv), 0);
	ptss_space *s = ptss_space_ptrace_new(t.pid, t.pid);
	ptss_proc *p = ptss_proc_new(s, NULL);
	errno = 0;
	assert_null(ptss_claim(p));
	assert_int_equal(errno, EPERM);
	const char *why = ptss_space_ptrace_refusal(s);
	assert_non_null(why);
	assert_non_null(strstr(why, why_says));
	long args[6] = { 0 };
	assert_int_equal(ptss_ptrace_syscall(t.pid, t.pid, 0, SYS_memfd_create, args), -EPERM);
	assert_int_equal(summarize_maps(t.pid).ptss, 0);
	ptss_proc_free(p);
	ptss_space_free(s);
	assert_int_equal(tracee_cont_all(&t), 0);
	assert_int_equal(tracee_send(&t, "call\n"), 0);
	char line[64];
	assert_true(tracee_expect(&t, "call 42", line, sizeof(line), 20));
	assert_int_equal(tracee_send(&t, "wake 1\n"), 0);
	assert_int_equal(tracee_stop_all(&t), 0);
	assert_int_equal(tracee_finish(&t), 0);
}

static void test_seccomp_errno_reaches_the_claim(void **state)
{
	(void)state;
	claim_refused("seccomp-errno", "refuses memfd_create (Operation not permitted)");
}

static void test_seccomp_kill_filter_is_never_crossed(void **state)
{
	(void)state;
	claim_refused("seccomp-kill", "would kill it on memfd_create");
}

int main(void)
{
	alarm(240); /* a hang is a failure, never a stuck CI */
	if (getenv("PTSS_TEST_FILTER"))
		cmocka_set_test_filter(getenv("PTSS_TEST_FILTER"));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pages_are_rx_in_target_and_run_there),
		cmocka_unit_test(test_injection_leaves_registers_and_mask_unchanged),
		cmocka_unit_test(test_shared_data_and_a_reservation_near),
		cmocka_unit_test(test_threads_come_and_go_growth_is_exact),
		cmocka_unit_test(test_fork_child_loses_pages_with_one_injection),
		cmocka_unit_test(test_exec_frees_and_new_image_is_enabled_afresh),
		cmocka_unit_test(test_target_killed_during_injection_is_an_error),
		cmocka_unit_test(test_no_such_process),
		cmocka_unit_test(test_seccomp_filter_forbidding_memfd_is_refused),
		cmocka_unit_test(test_seccomp_errno_reaches_the_claim),
		cmocka_unit_test(test_seccomp_kill_filter_is_never_crossed),
	};
	return cmocka_run_group_tests_name("ptrace", tests, NULL, NULL);
}
