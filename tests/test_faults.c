/*
 * Fault injection: the space fails at the k-th reserve or commit, for every k over a run.
 * After each failure the claim reports ENOMEM, nothing leaks, the invariants hold, claimed
 * entries still run, and the next claim succeeds.
 */
#include "helpers.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#define PER_PAGE 4
#define HELD 40

/* Claims HELD entries, releasing every third, retrying once after a failure. */
static unsigned run_with_failure_at(unsigned k)
{
	ptss_space *space = ptss_space_failing_new(ptss_space_self_new());
	struct ptss_opts o = test_opts(PER_PAGE, 64);
	ptss_proc *p = ptss_proc_new(space, &o);
	ptss_space_failing_arm(space, k, ENOMEM);
	ptss_entry *held[HELD];
	int n = 0, failures = 0;

	for (int i = 0; i < HELD; i++) {
		ptss_entry *e = ptss_claim(p);
		if (!e) {
			failures++;
			assert_int_equal(errno, ENOMEM);
			assert_true(ptss_proc_is_valid(p));
			struct ptss_stats st;
			ptss_stats_get(p, &st);
			assert_int_equal(st.failed_grows, 1);
			assert_int_equal(st.claimed, (uint64_t)n);
			if (st.pages == 0) /* a failed first growth leaves nothing in the target */
				assert_int_equal(test_maps_ptss_count(), 0);
			for (int j = 0; j < n; j++) /* entries already claimed stay valid */
				assert_int_equal(test_run_entry(p, held[j], j), j);
			e = ptss_claim(p); /* mapping works again */
			assert_non_null(e);
		}
		held[n++] = e;
		assert_int_equal(test_run_entry(p, e, i), i);
		if (i % 3 == 2) {
			assert_int_equal(ptss_release(p, held[--n]), 0);
		}
	}
	assert_true(failures <= 1);
	for (int j = 0; j < n; j++)
		assert_int_equal(ptss_release(p, held[j]), 0);
	assert_true(ptss_proc_is_valid(p));
	unsigned calls = ptss_space_failing_calls(space);
	ptss_proc_free(p);
	ptss_space_free(space);
	assert_int_equal(test_maps_ptss_count(), 0);
	return calls;
}

static void test_claim_survives_failure_at_every_call(void **state)
{
	(void)state;
	unsigned k = 1, calls;
	/* The run makes `calls` space calls when nothing fails (k beyond the last). */
	do
		calls = run_with_failure_at(k);
	while (k++ <= calls);
	assert_true(calls >= 8); /* the run did grow several times */
}

static void test_enable_failure_leaves_nothing(void **state)
{
	(void)state;
	for (unsigned k = 1; k <= 3; k++) {
		ptss_space *space = ptss_space_failing_new(ptss_space_self_new());
		struct ptss_opts o = test_opts(PER_PAGE, 64);
		ptss_proc *p = ptss_proc_new(space, &o);
		ptss_space_failing_arm(space, k, ENOMEM);
		ptss_entry *out[10];
		int err = ptss_enable(p, 10, out);
		struct ptss_stats st;
		ptss_stats_get(p, &st);
		if (k <= 2) { /* 1: reserve fails, 2: the commit of all three pages fails */
			assert_int_equal(err, -ENOMEM);
			assert_int_equal(st.pages, 0);
			assert_int_equal(st.claimed, 0);
			assert_int_equal(test_maps_ptss_count(), 0);
			assert_int_equal(ptss_enable(p, 10, out), 0); /* and it can be tried again */
		} else {
			assert_int_equal(err, 0);
		}
		ptss_stats_get(p, &st);
		assert_int_equal(st.pages, 3);
		assert_int_equal(st.claimed, 10);
		assert_true(ptss_proc_is_valid(p));
		ptss_proc_free(p);
		ptss_space_free(space);
		assert_int_equal(test_maps_ptss_count(), 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_claim_survives_failure_at_every_call),
		cmocka_unit_test(test_enable_failure_leaves_nothing),
	};
	return cmocka_run_group_tests_name("faults", tests, NULL, NULL);
}
