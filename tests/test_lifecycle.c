/* Every seed operation on the `self` space: claim, claim_locked, release, enable, fork, exec/exit. */
#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>


static void test_claim_maps_lazily_then_one_page(void **state)
{
	struct test_fixture *f = *state;
	struct ptss_stats st;
	ptss_stats_get(f->p, &st);
	assert_int_equal(st.pages, 0); /* nothing in the target before the first claim */

	ptss_entry *e = ptss_claim(f->p);
	assert_non_null(e);
	ptss_stats_get(f->p, &st);
	assert_int_equal(st.pages, 1);
	assert_int_equal(st.entries, 64);
	assert_int_equal(st.claimed, 1);
	assert_int_equal(st.free, 63);
	assert_int_equal(st.grows, 1);
	assert_true(ptss_proc_is_valid(f->p));
	assert_int_equal(ptss_release(f->p, e), 0);
	assert_true(ptss_proc_is_valid(f->p));
}

static void test_entries_are_distinct_and_derived(void **state)
{
	struct test_fixture *f = *state;
	ptss_entry *e[130];
	for (int i = 0; i < 130; i++) {
		e[i] = ptss_claim(f->p);
		assert_non_null(e[i]);
	}
	uint64_t base = ptss_entry_addr(f->p, e[0]) - 64 * ptss_entry_index(f->p, e[0]);
	for (int i = 0; i < 130; i++) {
		uint32_t idx = ptss_entry_index(f->p, e[i]);
		assert_true(idx < 192);
		assert_int_equal(ptss_entry_addr(f->p, e[i]), base + 64ull * idx);
		for (int j = 0; j < i; j++)
			assert_ptr_not_equal(e[i], e[j]);
	}
	struct ptss_stats st;
	ptss_stats_get(f->p, &st);
	assert_int_equal(st.pages, 3); /* ceil(130 / 64): no page more than needed */
	assert_int_equal(st.claimed_high_water, 130);
	assert_true(st.tracer_bytes <= 8 * st.entries);
	for (int i = 0; i < 130; i++)
		assert_int_equal(ptss_release(f->p, e[i]), 0);
	ptss_stats_get(f->p, &st);
	assert_int_equal(st.claimed, 0);
	assert_int_equal(st.free, st.entries);
	assert_true(ptss_proc_is_valid(f->p));
}

static void test_entry_executes_and_nothing_is_wx(void **state)
{
	struct test_fixture *f = *state;
	ptss_entry *a = ptss_claim(f->p), *b = ptss_claim(f->p);
	assert_int_equal(test_run_entry(f->p, a, 42), 42);
	assert_int_equal(test_run_entry(f->p, b, 7), 7);
	assert_int_equal(test_run_entry(f->p, a, -1), -1); /* rewritten in place, runs the new bytes */

	char perms[8];
	assert_string_equal(test_maps_perms(ptss_entry_addr(f->p, a), perms), "r-xs");
	assert_string_equal(test_maps_perms((uintptr_t)ptss_entry_view(f->p, a), perms), "rw-s");
	assert_false(test_maps_ptss_any_wx());
	ptss_release(f->p, a);
	ptss_release(f->p, b);
}

static void test_claim_locked_under_the_lock(void **state)
{
	struct test_fixture *f = *state;
	ptss_lock(f->p);
	ptss_entry *e = ptss_claim_locked(f->p); /* grows: must not take the lock again */
	ptss_entry *g = ptss_claim_locked(f->p);
	ptss_unlock(f->p);
	assert_non_null(e);
	assert_non_null(g);
	assert_ptr_not_equal(e, g);
	assert_true(ptss_proc_is_valid(f->p));
	ptss_release(f->p, e);
	ptss_release(f->p, g);
}

static void test_double_release_is_refused(void **state)
{
	struct test_fixture *f = *state;
	ptss_entry *e = ptss_claim(f->p);
	assert_int_equal(ptss_release(f->p, e), 0);
	assert_int_equal(ptss_release(f->p, e), -EINVAL);
	assert_int_equal(ptss_release(f->p, (ptss_entry *)((char *)e + 1)), -EINVAL);
	assert_int_equal(ptss_entry_addr(f->p, (ptss_entry *)((char *)e + 1)), 0);
	assert_null(ptss_entry_view(f->p, (ptss_entry *)((char *)e + 1)));
	assert_true(ptss_proc_is_valid(f->p));
}

static void test_enable_all_or_nothing(void **state)
{
	(void)state;
	ptss_space *s = ptss_space_self_new();
	struct ptss_opts o = test_opts(64, 4);
	ptss_proc *p = ptss_proc_new(s, &o);
	ptss_entry *out[300];

	assert_int_equal(ptss_enable(p, 257, out), -ENOSPC); /* needs 5 pages, room for 4 */
	struct ptss_stats st;
	ptss_stats_get(p, &st);
	assert_int_equal(st.pages, 0);
	assert_int_equal(st.claimed, 0);

	assert_int_equal(ptss_enable(p, 100, out), 0);
	ptss_stats_get(p, &st);
	assert_int_equal(st.pages, 2);
	assert_int_equal(st.grows, 1); /* both pages in one space call */
	assert_int_equal(st.claimed, 100);
	assert_int_equal(st.free, 28);
	for (int i = 0; i < 100; i++)
		assert_int_equal(test_run_entry(p, out[i], i), i);
	assert_true(ptss_proc_is_valid(p));
	assert_int_equal(ptss_enable(p, 1, out), -EBUSY); /* once per life */
	ptss_proc_free(p);
	ptss_space_free(s);
}

static void test_exec_exit_then_late_release_ignored(void **state)
{
	(void)state;
	int before = test_maps_ptss_count();
	ptss_space *s = ptss_space_self_new();
	ptss_proc *p = ptss_proc_new(s, NULL);
	ptss_entry *e = ptss_claim(p), *g = ptss_claim(p);
	uint64_t addr = ptss_entry_addr(p, e);
	assert_int_equal(test_run_entry(p, e, 5), 5);

	ptss_exec_exit(p);
	struct ptss_stats st;
	ptss_stats_get(p, &st);
	assert_int_equal(st.tracer_bytes, 0);
	assert_int_equal(st.pages, 0);
	assert_true(ptss_proc_is_valid(p));
	/* The target's pages are left alone: the target's exec or exit removes them. */
	char perms[8];
	assert_string_equal(test_maps_perms(addr, perms), "r-xs");
	/* Late releases are ignored without touching the entries; claims fail. */
	assert_int_equal(ptss_release(p, e), 0);
	assert_int_equal(ptss_release(p, g), 0);
	ptss_stats_get(p, &st);
	assert_int_equal(st.ignored_releases, 2);
	errno = 0;
	assert_null(ptss_claim(p));
	assert_int_equal(errno, ESRCH);
	assert_int_equal(ptss_enable(p, 1, &e), -ESRCH);
	ptss_exec_exit(p); /* twice is harmless */
	ptss_proc_free(p);
	ptss_space_free(s);

	/* This process is not really replaced: remove what an exec would have removed. */
	assert_int_equal(munmap((void *)(uintptr_t)addr, PTSS_RESERVE_SIZE_DEFAULT), 0);
	assert_int_equal(test_maps_ptss_count(), before);
}

static void test_proc_free_unmaps_everything(void **state)
{
	(void)state;
	int before = test_maps_ptss_count();
	ptss_space *s = ptss_space_self_new();
	ptss_proc *p = ptss_proc_new(s, NULL);
	ptss_entry *e = ptss_claim(p);
	uint64_t addr = ptss_entry_addr(p, e);
	/* committed r-x, uncommitted ---, and the view */
	assert_int_equal(test_maps_ptss_count(), before + 3);
	ptss_proc_free(p);
	assert_int_equal(test_maps_overlapping(addr, PTSS_RESERVE_SIZE_DEFAULT), 0);
	assert_int_equal(test_maps_ptss_count(), before);
	ptss_space_free(s);
}

/* In the child: are the pages there, does ptss_fork remove them, is the view gone? */
static int child_after_fork(ptss_proc *p, uint64_t addr, uintptr_t view)
{
	int bad = 0;
	if (test_maps_overlapping(addr, 1) != 1)
		bad |= 1; /* the copy is there before ptss_fork */
	if (test_maps_overlapping(view, 1) != 0)
		bad |= 2; /* the writable view never reaches a child */
	ptss_space *child = ptss_space_self_new();
	if (ptss_fork(p, child) != 0)
		bad |= 4;
	if (test_maps_ptss_count() != 0)
		bad |= 8;
	ptss_space_free(child);
	return bad;
}

static void test_fork_removes_pages_in_child_only(void **state)
{
	struct test_fixture *f = *state;
	ptss_entry *e[200];
	for (int i = 0; i < 200; i++)
		e[i] = ptss_claim(f->p);
	uint64_t addr = ptss_entry_addr(f->p, e[0]);
	uintptr_t view = (uintptr_t)ptss_entry_view(f->p, e[0]);
	struct ptss_stats st;
	ptss_stats_get(f->p, &st);
	assert_int_equal(st.pages, 4);

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(child_after_fork(f->p, addr, view));
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	/* The parent's entries still run. */
	for (int i = 0; i < 200; i++)
		assert_int_equal(test_run_entry(f->p, e[i], i + 1), i + 1);
	for (int i = 0; i < 200; i++)
		ptss_release(f->p, e[i]);
	assert_true(ptss_proc_is_valid(f->p));
}

/*
 * Issue 9, defect 6: ptss_fork runs in a fork child of the self space. A fork copies the
 * process lock in whatever state it is in: if another thread held it at the fork, the
 * child's copy stays locked forever, so ptss_fork must not take it.
 */
static sem_t lock_held, lock_release;

static void *hold_the_lock(void *arg)
{
	ptss_proc *p = arg;
	ptss_lock(p);
	sem_post(&lock_held);
	sem_wait(&lock_release);
	ptss_unlock(p);
	return NULL;
}

static void test_defect6_fork_while_another_thread_holds_the_lock(void **state)
{
	struct test_fixture *f = *state;
	ptss_entry *e = ptss_claim(f->p);
	assert_non_null(e);
	uint64_t addr = ptss_entry_addr(f->p, e);
	sem_init(&lock_held, 0, 0);
	sem_init(&lock_release, 0, 0);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, hold_the_lock, f->p), 0);
	sem_wait(&lock_held);

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(10); /* a deadlocked ptss_fork dies of SIGALRM instead of hanging the test */
		ptss_space *child = ptss_space_self_new();
		int bad = ptss_fork(f->p, child) != 0;
		bad |= (test_maps_overlapping(addr, 1) != 0) << 1;
		ptss_space_free(child);
		_exit(bad);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	sem_post(&lock_release);
	pthread_join(t, NULL);
	assert_false(WIFSIGNALED(status)); /* SIGALRM: ptss_fork deadlocked on the copied lock */
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(ptss_release(f->p, e), 0);
	assert_true(ptss_proc_is_valid(f->p));
	sem_destroy(&lock_held);
	sem_destroy(&lock_release);
}

/* Does any fd of this process point at a ptss memfd? */
static bool has_ptss_memfd_fd(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return true; /* cannot tell: count it as a failure */
	bool found = false;
	struct dirent *de;
	while ((de = readdir(d))) {
		char path[300], target[256];
		snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		if (n > 0) {
			target[n] = 0;
			found |= strstr(target, "memfd:ptss") != NULL;
		}
	}
	closedir(d);
	return found;
}

/* In a fork child: the executable copy cannot be made writable, and no fd reaches it. */
static int child_tries_to_write(uint64_t addr, size_t page)
{
	int bad = 0;
	if (has_ptss_memfd_fd())
		bad |= 1; /* a writable handle to the scratch memfd was inherited */
	errno = 0;
	if (mprotect((void *)(uintptr_t)addr, page, PROT_READ | PROT_WRITE) == 0)
		bad |= 2; /* the parent's entries could be written through the copy */
	else if (errno != EACCES && errno != EPERM)
		bad |= 4;
	if (mprotect((void *)(uintptr_t)addr, page, PROT_READ | PROT_WRITE | PROT_EXEC) == 0)
		bad |= 8;
	return bad;
}

/*
 * Issue 9, defect 6: the process holds no writable handle to its scratch beyond its own
 * view. No fd to the memfd stays open; the memfd is sealed so that the executable mapping
 * can never be made writable, here or in a fork child, whose copy holds the parent's code.
 */
static void test_defect6_no_writable_handle_to_the_scratch(void **state)
{
	struct test_fixture *f = *state;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	ptss_entry *e = ptss_claim(f->p);
	assert_non_null(e);
	uint64_t addr = ptss_entry_addr(f->p, e);
	assert_int_equal(test_run_entry(f->p, e, 11), 11);
	assert_false(has_ptss_memfd_fd());
	/* Not even this process can make its executable range writable. */
	assert_int_not_equal(mprotect((void *)(uintptr_t)addr, page, PROT_READ | PROT_WRITE), 0);
	char perms[8];
	assert_string_equal(test_maps_perms(addr, perms), "r-xs");

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(child_tries_to_write(addr, page));
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	/* The view still writes, and the entry runs what was written. */
	assert_int_equal(test_run_entry(f->p, e, 12), 12);
	assert_int_equal(ptss_release(f->p, e), 0);
}

static void test_fork_before_any_page_is_a_no_op(void **state)
{
	struct test_fixture *f = *state;
	ptss_space *other = ptss_space_self_new();
	assert_int_equal(ptss_fork(f->p, other), 0);
	ptss_space_free(other);
}

static void test_bad_options(void **state)
{
	(void)state;
	ptss_space *s = ptss_space_self_new();
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	const struct ptss_opts bad[] = {
		PTSS_OPTS(.entry_size = 48),              /* not a power of two */
		PTSS_OPTS(.entry_size = 8),               /* too small for an instruction and a jump */
		PTSS_OPTS(.entry_size = page * 2),        /* bigger than a page */
		PTSS_OPTS(.page_size = page / 2),         /* smaller than the system's */
		PTSS_OPTS(.page_size = page * 3),         /* not a power of two */
		PTSS_OPTS(.reserve_size = page * 3 / 2),  /* not whole pages */
		PTSS_OPTS(.reserve_size = page / 2),      /* less than one page */
		{ .sz = 0 },                              /* unknown size */
	};
	int before = test_maps_ptss_count();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		errno = 0;
		assert_null(ptss_proc_new(s, &bad[i]));
		assert_int_equal(errno, EINVAL);
	}
	errno = 0;
	assert_null(ptss_proc_new(NULL, NULL));
	assert_int_equal(errno, EINVAL);
	assert_int_equal(test_maps_ptss_count(), before);

	/* A newer caller's larger struct is accepted when the fields we don't know are zero. */
	struct { struct ptss_opts o; size_t future; } newer = { PTSS_OPTS(.entry_size = 128), 0 };
	newer.o.sz = sizeof(newer);
	ptss_proc *p = ptss_proc_new(s, &newer.o);
	assert_non_null(p);
	assert_int_equal(ptss_entry_size(p), 128);
	ptss_proc_free(p);
	newer.future = 1;
	assert_null(ptss_proc_new(s, &newer.o));

	/* Page size above the system's, entry == page: one entry per page. */
	struct ptss_opts big = PTSS_OPTS(.entry_size = page * 2, .page_size = page * 2,
					 .reserve_size = page * 8);
	p = ptss_proc_new(s, &big);
	assert_non_null(p);
	ptss_entry *a = ptss_claim(p), *b = ptss_claim(p);
	struct ptss_stats st;
	ptss_stats_get(p, &st);
	assert_int_equal(st.pages, 2);
	assert_int_equal(st.free, 0);
	assert_int_equal(test_run_entry(p, b, 3), 3);
	ptss_release(p, a);
	ptss_release(p, b);
	assert_true(ptss_proc_is_valid(p));
	ptss_proc_free(p);
	ptss_space_free(s);
}

static void test_reservation_full_is_enospc(void **state)
{
	(void)state;
	ptss_space *s = ptss_space_self_new();
	struct ptss_opts o = test_opts(4, 2);
	ptss_proc *p = ptss_proc_new(s, &o);
	ptss_entry *e[8];
	for (int i = 0; i < 8; i++)
		assert_non_null(e[i] = ptss_claim(p));
	errno = 0;
	assert_null(ptss_claim(p));
	assert_int_equal(errno, ENOSPC);
	struct ptss_stats st;
	ptss_stats_get(p, &st);
	assert_int_equal(st.failed_grows, 1);
	ptss_release(p, e[3]);
	assert_ptr_equal(ptss_claim(p), e[3]); /* a released entry is claimable again */
	for (int i = 0; i < 8; i++)
		ptss_release(p, e[i]);
	assert_true(ptss_proc_is_valid(p));
	ptss_proc_free(p);
	ptss_space_free(s);
}

static int print_count;
static int count_prints(enum ptss_print_level level, const char *fmt, va_list ap)
{
	(void)level, (void)fmt, (void)ap;
	return ++print_count;
}

static void test_failures_reach_the_print_callback(void **state)
{
	(void)state;
	ptss_set_print(count_prints);
	ptss_space *s = ptss_space_self_new();
	struct ptss_opts o = test_opts(4, 1);
	ptss_proc *p = ptss_proc_new(s, &o);
	ptss_entry *e[4];
	assert_int_equal(ptss_enable(p, 4, e), 0);
	assert_int_equal(print_count, 0);
	errno = 0;
	assert_null(ptss_claim(p));
	assert_int_equal(errno, ENOSPC); /* errno is the claim's, not the printer's */
	assert_int_equal(print_count, 1);
	assert_ptr_equal(ptss_set_print(NULL), count_prints);
	ptss_proc_free(p);
	ptss_space_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_claim_maps_lazily_then_one_page, test_fixture_setup, test_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_entries_are_distinct_and_derived, test_fixture_setup, test_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_entry_executes_and_nothing_is_wx, test_fixture_setup, test_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_claim_locked_under_the_lock, test_fixture_setup, test_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_double_release_is_refused, test_fixture_setup, test_fixture_teardown),
		cmocka_unit_test(test_enable_all_or_nothing),
		cmocka_unit_test(test_exec_exit_then_late_release_ignored),
		cmocka_unit_test(test_proc_free_unmaps_everything),
		cmocka_unit_test_setup_teardown(test_fork_removes_pages_in_child_only, test_fixture_setup, test_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_fork_before_any_page_is_a_no_op, test_fixture_setup, test_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_defect6_fork_while_another_thread_holds_the_lock,
						test_fixture_setup, test_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_defect6_no_writable_handle_to_the_scratch, test_fixture_setup,
						test_fixture_teardown),
		cmocka_unit_test(test_bad_options),
		cmocka_unit_test(test_reservation_full_is_enospc),
		cmocka_unit_test(test_failures_reach_the_print_callback),
	};
	return cmocka_run_group_tests_name("lifecycle", tests, NULL, NULL);
}
