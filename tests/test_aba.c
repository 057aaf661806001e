/*
 * The ABA interleaving, played deterministically. A popper reads head A and its next B,
 * then is paused (by a hook between the read and its CAS) while the main thread pops A,
 * pops B and pushes A back. When the popper resumes:
 *   - the plain-pointer Treiber stack's CAS succeeds and puts B, which main owns, back on
 *     the list: B is claimed and free at once;
 *   - ptss's list sees a new tag, retries, and pops A: the invariants hold.
 */
#include "helpers.h"
#include "treiber.h"

#include <freelist.h>

#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <unistd.h>
#include <cmocka.h>

/* The pause: the paused thread posts `paused` and waits for `resume`, once. */
static sem_t paused, resume;
static _Thread_local int pause_next_pop, pause_next_push;

static void pause_hook(void)
{
	if (!pause_next_pop)
		return;
	pause_next_pop = 0;
	sem_post(&paused);
	sem_wait(&resume);
}

static void push_pause_hook(void)
{
	if (!pause_next_push)
		return;
	pause_next_push = 0;
	sem_post(&paused);
	sem_wait(&resume);
}

/* ---- The plain-pointer stack ---- */

static struct treiber plain = { .pop_hook = pause_hook };

static void *plain_popper(void *arg)
{
	pause_next_pop = 1;
	*(struct treiber_node **)arg = treiber_pop(&plain);
	return NULL;
}

static void test_plain_pointer_stack_suffers_aba(void **state)
{
	(void)state;
	struct treiber_node n[3]; /* A, B, C */
	struct treiber_node *A = &n[0], *B = &n[1], *C = &n[2];
	treiber_push(&plain, C);
	treiber_push(&plain, B);
	treiber_push(&plain, A); /* A -> B -> C */

	pthread_t t;
	struct treiber_node *popped = NULL;
	pthread_create(&t, NULL, plain_popper, &popped);
	sem_wait(&paused); /* the popper holds head A and next B */

	assert_ptr_equal(treiber_pop(&plain), A);
	struct treiber_node *owned_by_main = treiber_pop(&plain);
	assert_ptr_equal(owned_by_main, B);
	treiber_push(&plain, A); /* A -> C */

	sem_post(&resume);
	pthread_join(t, NULL);

	/* The popper got A, and installed B as the head although main owns B. */
	assert_ptr_equal(popped, A);
	assert_ptr_equal(atomic_load(&plain.head), owned_by_main);
	/* The next claim hands B out a second time: the corruption the seed is open to. */
	assert_ptr_equal(treiber_pop(&plain), owned_by_main);
}

/* ---- ptss's list, under the same interleaving ---- */

static struct ptss_freelist list;
static _Atomic uint64_t next_slots[3];

static void *tagged_popper(void *arg)
{
	pause_next_pop = 1;
	uint32_t depth;
	*(uint32_t *)arg = ptss_freelist_pop(&list, &depth);
	return NULL;
}

static void test_tagged_list_survives_aba(void **state)
{
	(void)state;
	enum { A, B, C };
	list.next = next_slots;
	list.head = PTSS_NIL;
	_ptss_freelist_pop_hook = pause_hook;
	ptss_freelist_push(&list, C);
	ptss_freelist_push(&list, B);
	ptss_freelist_push(&list, A); /* A -> B -> C */

	pthread_t t;
	uint32_t popped = PTSS_NIL;
	pthread_create(&t, NULL, tagged_popper, &popped);
	sem_wait(&paused);

	uint32_t depth;
	assert_int_equal(ptss_freelist_length(&list), 3);
	assert_int_equal(ptss_freelist_pop(&list, &depth), A);
	assert_int_equal(depth, 3);
	assert_int_equal(ptss_freelist_pop(&list, &depth), B); /* main owns B */
	assert_int_equal(depth, 2);
	ptss_freelist_push(&list, A);                          /* A -> C */

	sem_post(&resume);
	pthread_join(t, NULL);
	_ptss_freelist_pop_hook = NULL;

	/* The stale CAS failed; the retry popped A. The list is C alone; B stays owned. */
	assert_int_equal(popped, A);
	assert_int_equal(ptss_head_top(list.head), C);
	assert_int_equal(ptss_link_below(next_slots[C]), PTSS_NIL);
	assert_int_equal(ptss_link_depth(next_slots[C]), 1); /* the length travels with the list */
	assert_int_equal(ptss_freelist_length(&list), 1);
	assert_int_equal(next_slots[B], PTSS_CLAIMED);
	assert_int_equal(next_slots[A], PTSS_CLAIMED);
	assert_int_equal(ptss_freelist_pop(&list, &depth), C);
	assert_int_equal(depth, 1);
	assert_int_equal(ptss_freelist_pop(&list, &depth), PTSS_NIL);
	assert_int_equal(ptss_freelist_length(&list), 0);
}

/* The same interleaving through the public API: claims and releases of a real process. */
static ptss_proc *proc;

static void *claimer(void *arg)
{
	pause_next_pop = 1;
	*(ptss_entry **)arg = ptss_claim(proc);
	return NULL;
}

static void test_claims_survive_aba(void **state)
{
	(void)state;
	ptss_space *s = ptss_space_self_new();
	struct ptss_opts o = test_opts(4, 4);
	proc = ptss_proc_new(s, &o);
	ptss_entry *e[4];
	assert_int_equal(ptss_enable(proc, 4, e), 0);
	for (int i = 3; i >= 0; i--)
		ptss_release(proc, e[i]); /* e0 -> e1 -> e2 -> e3 */

	_ptss_freelist_pop_hook = pause_hook;
	pthread_t t;
	ptss_entry *got = NULL;
	pthread_create(&t, NULL, claimer, &got);
	sem_wait(&paused);
	ptss_entry *a = ptss_claim(proc), *b = ptss_claim(proc);
	assert_ptr_equal(a, e[0]);
	assert_ptr_equal(b, e[1]);
	ptss_release(proc, a);
	sem_post(&resume);
	pthread_join(t, NULL);
	_ptss_freelist_pop_hook = NULL;

	assert_ptr_equal(got, e[0]);
	assert_true(ptss_proc_is_valid(proc));
	struct ptss_stats st;
	ptss_stats_get(proc, &st);
	assert_int_equal(st.claimed, 2);
	assert_int_equal(st.pages, 1); /* the retry found e0: no growth */
	ptss_entry *c = ptss_claim(proc), *d = ptss_claim(proc);
	assert_true(c != b && d != b && c != got && d != got);
	ptss_proc_free(proc);
	ptss_space_free(s);
}

/*
 * Issue 9, defect 6: claimed_high_water must never under-report. One entry per page, so
 * every claim that finds the list empty grows. A releaser is paused inside its push, its
 * entry off the list; main claims meanwhile and must grow: two entries are held at once
 * (one by main, one in the releaser's hands), and the statistic must say two. Counting a
 * release before its push said one.
 */
static ptss_entry *to_release;

static void *releaser(void *arg)
{
	(void)arg;
	pause_next_push = 1;
	ptss_release(proc, to_release);
	return NULL;
}

static void test_defect6_high_water_counts_a_release_until_its_push(void **state)
{
	(void)state;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	ptss_space *s = ptss_space_self_new();
	struct ptss_opts o = PTSS_OPTS(.entry_size = page, .page_size = page, .reserve_size = 4 * page);
	proc = ptss_proc_new(s, &o);
	to_release = ptss_claim(proc);
	assert_non_null(to_release);

	_ptss_freelist_push_hook = push_pause_hook;
	pthread_t t;
	pthread_create(&t, NULL, releaser, NULL);
	sem_wait(&paused); /* the releaser is between its head load and its CAS */
	ptss_entry *b = ptss_claim(proc);
	assert_non_null(b);
	struct ptss_stats st;
	ptss_stats_get(proc, &st);
	assert_int_equal(st.pages, 2); /* the list was empty: the first entry was not back yet */
	assert_true(st.claimed_high_water >= 2);
	sem_post(&resume);
	pthread_join(t, NULL);
	_ptss_freelist_push_hook = NULL;

	ptss_stats_get(proc, &st);
	assert_int_equal(st.claimed, 1);
	assert_int_equal(st.free, 1);
	assert_int_equal(st.claimed_high_water, 2);
	assert_true(ptss_proc_is_valid(proc));
	assert_int_equal(ptss_release(proc, b), 0);
	ptss_proc_free(proc);
	ptss_space_free(s);
}

/*
 * Issue 9, defect 6, the claim's side: K threads each claim one entry and hold it until
 * all have theirs. Whatever the interleaving, the high water is at least K at the end.
 */
#define HW_THREADS 8
static pthread_barrier_t all_hold;

static void *claim_and_hold(void *arg)
{
	ptss_entry *e = ptss_claim(proc);
	*(ptss_entry **)arg = e;
	pthread_barrier_wait(&all_hold);
	pthread_barrier_wait(&all_hold);
	if (e)
		ptss_release(proc, e);
	return NULL;
}

static void test_defect6_high_water_of_concurrent_claims(void **state)
{
	(void)state;
	ptss_space *s = ptss_space_self_new();
	struct ptss_opts o = test_opts(4, 16);
	proc = ptss_proc_new(s, &o);
	for (int round = 0; round < 50; round++) {
		pthread_barrier_init(&all_hold, NULL, HW_THREADS + 1);
		pthread_t t[HW_THREADS];
		ptss_entry *got[HW_THREADS];
		for (int i = 0; i < HW_THREADS; i++)
			pthread_create(&t[i], NULL, claim_and_hold, &got[i]);
		pthread_barrier_wait(&all_hold); /* every thread holds its entry */
		struct ptss_stats st;
		ptss_stats_get(proc, &st);
		assert_int_equal(st.claimed, HW_THREADS);
		assert_true(st.claimed_high_water >= HW_THREADS);
		pthread_barrier_wait(&all_hold);
		for (int i = 0; i < HW_THREADS; i++) {
			pthread_join(t[i], NULL);
			assert_non_null(got[i]);
		}
		pthread_barrier_destroy(&all_hold);
		ptss_stats_get(proc, &st);
		assert_int_equal(st.claimed, 0);
		assert_true(st.claimed_high_water >= HW_THREADS);
		assert_true(st.claimed_high_water <= st.entries);
	}
	assert_true(ptss_proc_is_valid(proc));
	ptss_proc_free(proc);
	ptss_space_free(s);
}

int main(void)
{
	sem_init(&paused, 0, 0);
	sem_init(&resume, 0, 0);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_pointer_stack_suffers_aba),
		cmocka_unit_test(test_tagged_list_survives_aba),
		cmocka_unit_test(test_claims_survive_aba),
		cmocka_unit_test(test_defect6_high_water_counts_a_release_until_its_push),
		cmocka_unit_test(test_defect6_high_water_of_concurrent_claims),
	};
	return cmocka_run_group_tests_name("aba", tests, NULL, NULL);
}
