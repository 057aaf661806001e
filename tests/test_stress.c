/*
 * Concurrency: more threads than cores claim and release in random patterns. Ownership
 * marks prove that no entry is ever owned by two threads at once; at the end every entry
 * is back and claimed + free == entries. Deterministic seeds, bounded work. Not a benchmark.
 */
#include "helpers.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#define THREADS 8   /* 4x this machine's cores, and oversubscribed anywhere small */
#define HELD_MAX 24 /* entries one thread may hold at once */
static int stress_rounds = 40000; /* PTSS_STRESS_ROUNDS overrides (valgrind runs use fewer) */

static ptss_proc *proc;
static bool use_caches; /* odd threads then claim and release through caches of their own */
static _Atomic int *owner;          /* owner[index] = thread id + 1, or 0 */
static _Atomic unsigned long double_owned, corrupted;
static pthread_barrier_t start;

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void take(int me, ptss_entry *e)
{
	int expected = 0;
	if (!atomic_compare_exchange_strong(&owner[ptss_entry_index(proc, e)], &expected, me))
		double_owned++;
	memcpy(ptss_entry_view(proc, e), &me, sizeof(me)); /* the owner writes its entry */
}

static void give_back(int me, ptss_cache *c, uint64_t r, ptss_entry *e)
{
	int mark;
	memcpy(&mark, ptss_entry_view(proc, e), sizeof(mark));
	if (mark != me)
		corrupted++; /* someone else wrote into our entry */
	atomic_store(&owner[ptss_entry_index(proc, e)], 0);
	/* A cached thread parks most of its releases and sends some to the shared list. */
	if (c && (r & 0x70) ? ptss_cache_release(c, e) : ptss_release(proc, e))
		corrupted++;
}

static void *worker(void *arg)
{
	int me = (int)(intptr_t)arg;
	uint64_t seed = 0x9E3779B97F4A7C15ull * (uint64_t)me;
	ptss_entry *held[HELD_MAX];
	int n = 0;
	ptss_cache *c = use_caches && (me & 1) ? ptss_cache_new(proc) : NULL;
	if (use_caches && (me & 1) && !c)
		corrupted++;
	pthread_barrier_wait(&start);
	for (int round = 0; round < stress_rounds; round++) {
		uint64_t r = xorshift(&seed);
		if (n < HELD_MAX && (n == 0 || (r & 3) != 0 || (round & 1024))) {
			ptss_entry *e = c ? ptss_cache_claim(c) : ptss_claim(proc);
			if (!e) {
				corrupted++;
				break;
			}
			take(me, e);
			held[n++] = e;
		} else {
			int k = (int)((r >> 8) % (uint64_t)n); /* release in random order */
			give_back(me, c, r, held[k]);
			held[k] = held[--n];
		}
	}
	while (n)
		give_back(me, c, xorshift(&seed), held[--n]);
	ptss_cache_free(c);
	return NULL;
}

static void no_entry_is_ever_owned_twice(bool caches)
{
	use_caches = caches;
	ptss_space *s = ptss_space_self_new();
	struct ptss_opts o = test_opts(16, 64); /* small pages: growth races too */
	proc = ptss_proc_new(s, &o);
	assert_non_null(proc);
	owner = calloc(16 * 64, sizeof(*owner));
	pthread_barrier_init(&start, NULL, THREADS);

	pthread_t t[THREADS];
	for (int i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, worker, (void *)(intptr_t)(i + 1));
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);

	assert_int_equal(double_owned, 0);
	assert_int_equal(corrupted, 0);
	struct ptss_stats st;
	ptss_stats_get(proc, &st);
	assert_int_equal(st.claimed, 0);
	assert_int_equal(st.claimed + st.free, st.entries);
	assert_true(st.claimed_high_water <= st.entries);
	/* Growth only when the list is empty, and caches park at most PTSS_CACHE_CAP each. */
	assert_true(st.entries <= THREADS * HELD_MAX + 16 + (caches ? THREADS / 2 * PTSS_CACHE_CAP : 0));
	assert_true(ptss_proc_is_valid(proc));
	pthread_barrier_destroy(&start);
	free(owner);
	ptss_proc_free(proc);
	ptss_space_free(s);
}

static void test_no_entry_is_ever_owned_twice(void **state)
{
	(void)state;
	no_entry_is_ever_owned_twice(false);
}

/* Issue 11: half the threads claim and release through caches, and hand entries back both
 * ways; caches spill and refill while others grow. */
static void test_no_entry_is_ever_owned_twice_with_caches(void **state)
{
	(void)state;
	no_entry_is_ever_owned_twice(true);
}

/* Burst growth: K threads find the list empty at once; exactly ceil(K / per page) pages. */
static _Atomic int burst_failures;
static void *burst_claimer(void *arg)
{
	ptss_entry **slot = arg;
	pthread_barrier_wait(&start);
	*slot = ptss_claim(proc);
	if (!*slot)
		burst_failures++;
	return NULL;
}

static void burst(int k, int per_page)
{
	ptss_space *s = ptss_space_self_new();
	struct ptss_opts o = test_opts((unsigned)per_page, 64);
	proc = ptss_proc_new(s, &o);
	pthread_barrier_init(&start, NULL, (unsigned)k);
	pthread_t *t = calloc((size_t)k, sizeof(*t));
	ptss_entry **got = calloc((size_t)k, sizeof(*got));
	for (int i = 0; i < k; i++)
		pthread_create(&t[i], NULL, burst_claimer, &got[i]);
	for (int i = 0; i < k; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(burst_failures, 0);

	struct ptss_stats st;
	ptss_stats_get(proc, &st);
	assert_int_equal(st.pages, (uint64_t)((k + per_page - 1) / per_page));
	assert_int_equal(st.grows, st.pages);
	assert_int_equal(st.claimed, (uint64_t)k);
	assert_true(ptss_proc_is_valid(proc));
	pthread_barrier_destroy(&start);
	free(t);
	free(got);
	ptss_proc_free(proc);
	ptss_space_free(s);
}

static void test_burst_growth_maps_exactly_what_is_needed(void **state)
{
	(void)state;
	for (int rep = 0; rep < (stress_rounds < 40000 ? 2 : 20); rep++) { /* fewer under valgrind */
		burst(16, 64);  /* one page for sixteen racing growers */
		burst(64, 64);  /* exactly a page */
		burst(65, 64);  /* one more */
		burst(40, 8);   /* five pages */
	}
}

int main(void)
{
	const char *rounds = getenv("PTSS_STRESS_ROUNDS");
	if (rounds && atoi(rounds) > 0)
		stress_rounds = atoi(rounds);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_entry_is_ever_owned_twice),
		cmocka_unit_test(test_no_entry_is_ever_owned_twice_with_caches),
		cmocka_unit_test(test_burst_growth_maps_exactly_what_is_needed),
	};
	return cmocka_run_group_tests_name("stress", tests, NULL, NULL);
}
