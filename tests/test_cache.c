/*
 * Callers' caches (ptss_cache_*): a claim and a release by one caller touch only its cache,
 * entries move between caches and the shared list without being lost or doubled, the
 * statistics stay exact, and ptss_proc_is_valid sees every cache (issue 11).
 */
#include "helpers.h"

#include <internal.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <cmocka.h>


static void test_a_pair_through_a_cache_touches_no_shared_word(void **state)
{
	struct test_fixture *f = *state;
	ptss_cache *c = ptss_cache_new(f->p);
	assert_non_null(c);
	ptss_entry *e = ptss_cache_claim(c); /* empty cache: the shared path, which grows */
	assert_non_null(e);
	assert_int_equal(ptss_cache_release(c, e), 0);

	uint64_t head = f->p->list.head, word = f->p->list.next[ptss_entry_index(f->p, e)];
	uint64_t high = f->p->claimed_high_water;
	for (int k = 0; k < 1000; k++) {
		ptss_entry *g = ptss_cache_claim(c);
		assert_ptr_equal(g, e); /* the entry it parked */
		assert_int_equal(test_run_entry(f->p, g, k), k);
		assert_int_equal(ptss_cache_release(c, g), 0);
	}
	/* Neither the shared head, nor the entry's word, nor the high water was written. */
	assert_int_equal(f->p->list.head, head);
	assert_int_equal(f->p->list.next[ptss_entry_index(f->p, e)], word);
	assert_int_equal(f->p->claimed_high_water, high);

	struct ptss_stats st;
	ptss_stats_get(f->p, &st);
	assert_int_equal(st.entries, 64);
	assert_int_equal(st.free, 64); /* 63 on the list and one parked */
	assert_int_equal(st.claimed, 0);
	assert_int_equal(st.claimed_high_water, 1);
	assert_true(ptss_proc_is_valid(f->p));
	ptss_cache_free(c);
	assert_true(ptss_proc_is_valid(f->p));
}

static void test_cache_release_refuses_what_is_not_claimed(void **state)
{
	struct test_fixture *f = *state;
	ptss_cache *c = ptss_cache_new(f->p);
	ptss_entry *a = ptss_claim(f->p), *b = ptss_claim(f->p);
	assert_int_equal(ptss_cache_release(c, a), 0);
	assert_int_equal(ptss_cache_release(c, a), -EINVAL);     /* already parked here */
	assert_int_equal(ptss_release(f->p, b), 0);
	assert_int_equal(ptss_cache_release(c, b), -EINVAL);     /* on the shared list */
	assert_int_equal(ptss_cache_release(c, (ptss_entry *)((char *)a + 1)), -EINVAL);
	int local;
	assert_int_equal(ptss_cache_release(c, (ptss_entry *)&local), -EINVAL);
	assert_true(ptss_proc_is_valid(f->p));
	ptss_cache_free(c);
	assert_true(ptss_proc_is_valid(f->p));
}

static void test_a_full_cache_spills_half_with_one_push(void **state)
{
	struct test_fixture *f = *state;
	ptss_cache *c = ptss_cache_new(f->p);
	enum { N = PTSS_CACHE_CAP + 1 };
	ptss_entry *e[N];
	for (int i = 0; i < N; i++)
		assert_non_null(e[i] = ptss_claim(f->p));
	struct ptss_stats st;
	ptss_stats_get(f->p, &st);
	uint64_t listed = st.free;
	for (int i = 0; i < N; i++) {
		assert_int_equal(ptss_cache_release(c, e[i]), 0);
		assert_true(ptss_proc_is_valid(f->p));
	}
	assert_int_equal(c->n, PTSS_CACHE_CAP / 2 + 1);
	assert_int_equal(ptss_freelist_length(&f->p->list), listed + PTSS_CACHE_CAP / 2);
	ptss_stats_get(f->p, &st);
	assert_int_equal(st.claimed, 0);
	assert_int_equal(st.free, st.entries);
	/* The newest stayed: they come back first, newest first. */
	assert_ptr_equal(ptss_cache_claim(c), e[N - 1]);
	assert_ptr_equal(ptss_cache_claim(c), e[N - 2]);
	ptss_cache_flush(c);
	assert_int_equal(c->n, 0);
	ptss_stats_get(f->p, &st);
	assert_int_equal(st.claimed, 2);
	assert_true(ptss_proc_is_valid(f->p));
	assert_int_equal(ptss_release(f->p, e[N - 1]), 0);
	assert_int_equal(ptss_release(f->p, e[N - 2]), 0);
	ptss_cache_free(c);
	assert_true(ptss_proc_is_valid(f->p));
}

static void test_entries_move_between_paths_and_caches(void **state)
{
	struct test_fixture *f = *state;
	ptss_cache *a = ptss_cache_new(f->p), *b = ptss_cache_new(f->p);
	assert_ptr_not_equal(a, b);
	ptss_entry *x = ptss_cache_claim(a), *y = ptss_claim(f->p), *z = ptss_cache_claim(b);
	assert_int_equal(ptss_release(f->p, x), 0);       /* claimed in a cache, released shared */
	assert_int_equal(ptss_cache_release(a, y), 0);    /* claimed shared, parked in a */
	assert_int_equal(ptss_cache_release(a, z), 0);    /* claimed in b, parked in a */
	assert_true(ptss_proc_is_valid(f->p));
	struct ptss_stats st;
	ptss_stats_get(f->p, &st);
	assert_int_equal(st.claimed, 0);
	assert_ptr_equal(ptss_cache_claim(a), z);
	assert_ptr_equal(ptss_cache_claim(a), y);
	assert_ptr_equal(ptss_cache_claim(b), x);         /* b is empty: from the shared list */
	ptss_stats_get(f->p, &st);
	assert_int_equal(st.claimed, 3);
	assert_int_equal(st.claimed_high_water, 3);
	ptss_cache_release(b, x);
	ptss_cache_release(b, y);
	ptss_cache_release(a, z);
	ptss_cache_free(a);
	ptss_cache_free(b);
	ptss_stats_get(f->p, &st);
	assert_int_equal(st.free, st.entries);
	assert_true(ptss_proc_is_valid(f->p));
}

static void test_a_freed_cache_is_reused(void **state)
{
	struct test_fixture *f = *state;
	ptss_cache *a = ptss_cache_new(f->p);
	ptss_cache_release(a, ptss_claim(f->p));
	ptss_cache_free(a); /* its entry goes back to the list */
	ptss_cache *b = ptss_cache_new(f->p);
	assert_ptr_equal(a, b); /* the registry did not grow */
	assert_int_equal(b->n, 0);
	assert_int_equal(ptss_freelist_length(&f->p->list), 64);
	ptss_cache_free(b);
	ptss_cache_free(NULL);
	assert_true(ptss_proc_is_valid(f->p));
}

static void test_exec_exit_empties_every_cache(void **state)
{
	(void)state;
	ptss_space *s = ptss_space_self_new();
	ptss_proc *p = ptss_proc_new(s, NULL);
	ptss_cache *a = ptss_cache_new(p), *b = ptss_cache_new(p);
	ptss_entry *e = ptss_cache_claim(a), *g = ptss_cache_claim(a);
	uint64_t addr = ptss_entry_addr(p, e);
	ptss_cache_release(a, e);
	ptss_cache_release(b, g);

	ptss_exec_exit(p);
	assert_true(ptss_proc_is_valid(p));
	struct ptss_stats st;
	ptss_stats_get(p, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.free, 0);
	assert_int_equal(st.claimed_high_water, 2);
	errno = 0;
	assert_null(ptss_cache_claim(a));
	assert_int_equal(errno, ESRCH);
	assert_int_equal(ptss_cache_release(b, g), 0); /* ignored */
	ptss_stats_get(p, &st);
	assert_int_equal(st.ignored_releases, 1);
	errno = 0;
	assert_null(ptss_cache_new(p));
	assert_int_equal(errno, ESRCH);
	ptss_cache_free(a); /* flushes nothing */
	ptss_proc_free(p);  /* frees b, still open */
	ptss_space_free(s);
	munmap((void *)(uintptr_t)addr, PTSS_RESERVE_SIZE_DEFAULT); /* what the exec removed */
}

/* ptss_proc_is_valid catches an entry in two places, or lost. */
static void test_is_valid_sees_the_caches(void **state)
{
	struct test_fixture *f = *state;
	ptss_cache *c = ptss_cache_new(f->p);
	ptss_entry *e = ptss_claim(f->p), *g = ptss_claim(f->p);
	ptss_release(f->p, g);
	ptss_cache_release(c, e);
	assert_true(ptss_proc_is_valid(f->p));

	c->idx[0] = ptss_entry_index(f->p, g); /* g: on the list and parked */
	assert_false(ptss_proc_is_valid(f->p));
	c->idx[0] = ptss_entry_index(f->p, e);
	c->n = 2;
	c->idx[1] = c->idx[0]; /* parked twice */
	assert_false(ptss_proc_is_valid(f->p));
	c->n = 1;
	assert_true(ptss_proc_is_valid(f->p));
	uint64_t depth_word = f->p->list.next[ptss_head_top(f->p->list.head)];
	f->p->list.next[ptss_head_top(f->p->list.head)] = ptss_link(ptss_link_below(depth_word),
								   ptss_link_depth(depth_word) + 1);
	assert_false(ptss_proc_is_valid(f->p)); /* the recorded length is wrong */
	f->p->list.next[ptss_head_top(f->p->list.head)] = depth_word;
	assert_true(ptss_proc_is_valid(f->p));
	ptss_cache_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_a_pair_through_a_cache_touches_no_shared_word,
						test_fixture_setup, test_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_cache_release_refuses_what_is_not_claimed, test_fixture_setup,
						test_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_a_full_cache_spills_half_with_one_push, test_fixture_setup,
						test_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_entries_move_between_paths_and_caches, test_fixture_setup,
						test_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_a_freed_cache_is_reused, test_fixture_setup, test_fixture_teardown),
		cmocka_unit_test(test_exec_exit_empties_every_cache),
		cmocka_unit_test_setup_teardown(test_is_valid_sees_the_caches, test_fixture_setup, test_fixture_teardown),
	};
	return cmocka_run_group_tests_name("cache", tests, NULL, NULL);
}
