/*
 * One thread claims and releases an entry in a loop, through the shared list
 * (ptss_claim / ptss_release) and through a cache of its own (ptss_cache_claim /
 * ptss_cache_release); the baseline is two bare 64-bit CAS operations (the least a pop
 * and a push on one shared word can cost), measured in the same run. Reports the median of
 * repetitions, with min and max, and the ratios.
 *
 *   usage: bench_claim_release [PAIRS [REPS]]   (default 10000000 pairs, 9 reps)
 *   goal:  a claim+release pair costs at most 2x two bare CAS (issue 11; bench/run reports
 *          the goals from the full suite)
 */
#include <ptss/ptss.h>
#include <ptss/space.h>

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static _Alignas(64) _Atomic uint64_t word;

/* Two CAS per iteration, each depending on the last, as a pop then a push would. */
static double run_two_cas(long pairs)
{
	double t0 = now_ns();
	uint64_t v = atomic_load_explicit(&word, memory_order_relaxed);
	for (long i = 0; i < pairs; i++) {
		while (!atomic_compare_exchange_weak_explicit(&word, &v, v + 1, memory_order_acq_rel,
							      memory_order_acquire))
			;
		v++;
		while (!atomic_compare_exchange_weak_explicit(&word, &v, v + 1, memory_order_release,
							      memory_order_relaxed))
			;
		v++;
	}
	return (now_ns() - t0) / (double)pairs;
}

static double run_claim_release(ptss_proc *p, long pairs)
{
	double t0 = now_ns();
	for (long i = 0; i < pairs; i++) {
		ptss_entry *e = ptss_claim(p);
		if (!e || ptss_release(p, e)) {
			fprintf(stderr, "bench: claim/release failed\n");
			exit(1);
		}
	}
	return (now_ns() - t0) / (double)pairs;
}

static double run_cache_pair(ptss_cache *c, long pairs)
{
	double t0 = now_ns();
	for (long i = 0; i < pairs; i++) {
		ptss_entry *e = ptss_cache_claim(c);
		if (!e || ptss_cache_release(c, e)) {
			fprintf(stderr, "bench: cache claim/release failed\n");
			exit(1);
		}
	}
	return (now_ns() - t0) / (double)pairs;
}

struct summary { double median, min, max; };

static struct summary summarize(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return (struct summary){ v[n / 2], v[0], v[n - 1] };
}

int main(int argc, char **argv)
{
	long pairs = argc > 1 ? atol(argv[1]) : 10000000;
	int reps = argc > 2 ? atoi(argv[2]) : 9;
	if (pairs < 1 || reps < 1 || reps > 101) {
		fprintf(stderr, "usage: bench_claim_release [PAIRS [REPS (1-101)]]\n");
		return 2;
	}
	ptss_space *space = ptss_space_self_new();
	ptss_proc *p = ptss_proc_new(space, NULL);
	ptss_entry *warm = ptss_claim(p); /* map the first page outside the timing */
	ptss_release(p, warm);

	ptss_cache *cache = ptss_cache_new(p);
	if (!cache) {
		fprintf(stderr, "bench: ptss_cache_new failed\n");
		return 1;
	}
	double cas[101], ptss[101], cached[101];
	for (int r = 0; r < reps; r++) { /* interleaved, so drift hits all alike */
		cas[r] = run_two_cas(pairs);
		ptss[r] = run_claim_release(p, pairs);
		cached[r] = run_cache_pair(cache, pairs);
	}
	struct summary c = summarize(cas, reps), s = summarize(ptss, reps);
	struct summary k = summarize(cached, reps);
	printf("%-28s %10s %10s %10s\n", "single thread", "median ns", "min", "max");
	printf("%-28s %10.2f %10.2f %10.2f\n", "two bare CAS", c.median, c.min, c.max);
	printf("%-28s %10.2f %10.2f %10.2f\n", "ptss claim+release (shared)", s.median, s.min,
	       s.max);
	printf("%-28s %10.2f %10.2f %10.2f\n", "ptss cache claim+release", k.median, k.min, k.max);
	printf("ratio cache pair / two CAS: %.2fx (goal <= 2x); shared pair / two CAS: %.2fx\n",
	       k.median / c.median, s.median / c.median);
	ptss_cache_free(cache);
	ptss_proc_free(p);
	ptss_space_free(space);
	return 0;
}
