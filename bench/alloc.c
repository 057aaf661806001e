/*
 * The allocator bench: one harness, compiled once per variant (see alloc_variant.h), so
 * every variant runs exactly the same workloads. Prints one JSON object per line; bench/run
 * runs the variants in turn, round after round, and alloc_report.py summarises.
 *
 *   pair   T threads, each claiming and releasing in a loop for a fixed time; with hold H
 *          each thread also keeps H entries, releasing the oldest as it claims a new one.
 *          Fixed time rather than fixed work, so a variant that collapses (a spinlock
 *          whose holder was preempted) cannot stretch the run.
 *   churn  threads created W at a time, each claiming once and releasing as it exits (a
 *          traced process's threads); the same loop without the claim is the baseline.
 *
 * A pair-workload thread calls the variant's per-thread hooks around its loop (ptss opens
 * a cache there); churn threads do not.
 *
 * Threads are pinned round-robin over the CPUs this process may use. This is a
 * measurement, not a test: it checks nothing beyond failing loudly on an empty pool.
 *
 *   usage: bench_alloc_<variant> [-m MS] [-t THREADS,...] [-H HOLDS,...] [-c N] [-w WINDOWS,...]
 *          -m  milliseconds per pair measurement (default 100)
 *          -t  thread counts for the pair workload (default 1)
 *          -H  entries held per thread (default 0)
 *          -c  threads per churn measurement (default 0: no churn)
 *          -w  churn windows, threads alive at once (default 1)
 */
#define _GNU_SOURCE
#include "alloc_variant.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MAX_LIST 16
#define MAX_THREADS 1024
#define MAX_HOLD 64
#define MAX_WINDOW 256

static double clock_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}
static double now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }
/* The calling thread's CPU time: what a pair costs, without the time others' processes
 * take from a shared machine. */
static double cpu_ns(void) { return clock_ns(CLOCK_THREAD_CPUTIME_ID); }

static _Noreturn void die(const char *what)
{
	fprintf(stderr, "bench_alloc_%s: %s\n", VARIANT_NAME, what);
	exit(1);
}

/* Keeps the compiler from pairing a malloc with its free and removing both. */
static inline void escape(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

static inline void *must_claim(void)
{
	void *e = variant_claim();
	if (__builtin_expect(!e, 0))
		die("the pool ran empty");
	escape(e);
	return e;
}

/* ---- CPUs: round-robin pinning over the ones we may use ---- */

static int cpus[CPU_SETSIZE];
static int ncpus;

static void cpus_init(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &set))
				cpus[ncpus++] = c;
	if (ncpus == 0) { /* unknown: let the scheduler place threads */
		cpus[0] = -1;
		ncpus = 1;
	}
}

static void attr_pinned(pthread_attr_t *attr, unsigned i)
{
	pthread_attr_init(attr);
	int c = cpus[i % (unsigned)ncpus];
	if (c >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(c, &set);
		pthread_attr_setaffinity_np(attr, sizeof(set), &set);
	}
}

/* ---- pair: claim+release in a loop for a fixed time ---- */

struct worker {
	_Alignas(64) pthread_t tid; /* one line per worker: no false sharing of counters */
	unsigned hold;
	uint64_t pairs;
	double t0, t1;   /* wall clock */
	double cpu;      /* CPU time spent between t0 and t1 */
};

static struct worker workers[MAX_THREADS];
static pthread_barrier_t start_line;
static struct {
	_Alignas(64) _Atomic bool stop; /* read-mostly, away from every variant's hot line */
} run;

/* Pairs per look at the stop flag: the look costs nothing against 64 pairs. */
#define BATCH 64

static void *pair_worker(void *arg)
{
	struct worker *w = arg;
	void *ring[MAX_HOLD];
	variant_thread_start(); /* e.g. ptss: this thread's cache, outside the timing */
	for (unsigned k = 0; k < w->hold; k++)
		ring[k] = must_claim();

	pthread_barrier_wait(&start_line);
	w->t0 = now_ns();
	double c0 = cpu_ns();
	uint64_t n = 0;
	if (w->hold == 0) {
		do {
			for (int j = 0; j < BATCH; j++)
				variant_release(must_claim());
			n += BATCH;
		} while (!atomic_load_explicit(&run.stop, memory_order_relaxed));
	} else {
		unsigned k = 0;
		do {
			for (int j = 0; j < BATCH; j++) {
				void *e = must_claim();
				variant_release(ring[k]);
				ring[k] = e;
				k = k + 1 == w->hold ? 0 : k + 1;
			}
			n += BATCH;
		} while (!atomic_load_explicit(&run.stop, memory_order_relaxed));
	}
	w->cpu = cpu_ns() - c0;
	w->t1 = now_ns();
	w->pairs = n;
	for (unsigned k = 0; k < w->hold; k++)
		variant_release(ring[k]);
	variant_thread_end();
	return NULL;
}

static void run_pair(unsigned nthreads, unsigned hold, unsigned ms)
{
	atomic_store_explicit(&run.stop, false, memory_order_relaxed);
	pthread_barrier_init(&start_line, NULL, nthreads + 1);
	for (unsigned i = 0; i < nthreads; i++) {
		pthread_attr_t attr;
		attr_pinned(&attr, i);
		workers[i] = (struct worker){ .hold = hold };
		if (pthread_create(&workers[i].tid, &attr, pair_worker, &workers[i]))
			die("pthread_create failed");
		pthread_attr_destroy(&attr);
	}
	pthread_barrier_wait(&start_line);
	struct timespec d = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };
	nanosleep(&d, NULL);
	atomic_store_explicit(&run.stop, true, memory_order_relaxed);

	uint64_t pairs = 0;
	double first = 0, last = 0, cpu = 0;
	for (unsigned i = 0; i < nthreads; i++) {
		pthread_join(workers[i].tid, NULL);
		pairs += workers[i].pairs;
		cpu += workers[i].cpu;
		if (i == 0 || workers[i].t0 < first)
			first = workers[i].t0;
		if (i == 0 || workers[i].t1 > last)
			last = workers[i].t1;
	}
	pthread_barrier_destroy(&start_line);
	double wall = last - first;
	/* cpu_ns_per_pair: CPU time per pair, summed over threads (retries and spinning
	 * included); with one thread, the cost of a pair. mpairs_s: pairs per wall second. */
	printf("{\"type\":\"pair\",\"variant\":\"%s\",\"threads\":%u,\"hold\":%u,"
	       "\"pairs\":%llu,\"wall_ns\":%.0f,\"cpu_ns_per_pair\":%.3f,\"mpairs_s\":%.3f}\n",
	       VARIANT_NAME, nthreads, hold, (unsigned long long)pairs, wall, cpu / (double)pairs,
	       (double)pairs / wall * 1e3);
}

/* ---- churn: threads that live to claim once ---- */

/*
 * Claims once and releases, as a thread of a traced process would over its life, and
 * records what that took inside the new thread (cold caches, first use of any per-thread
 * state). A NULL slot: the baseline thread, which does nothing.
 */
static void *churn_worker(void *slot)
{
	if (slot) {
		double t0 = now_ns();
		variant_release(must_claim());
		*(double *)slot = now_ns() - t0;
	}
	return NULL;
}

/*
 * Creates `total` threads, `window` alive at once. Returns the wall time; adds the time
 * the threads spent claiming and releasing to *inside (when claim is set).
 */
static double churn_chunk(unsigned total, unsigned window, bool claim, double *inside)
{
	static pthread_t ring[MAX_WINDOW];
	static double spent[MAX_WINDOW];
	double t0 = now_ns();
	for (unsigned i = 0; i < total + window; i++) {
		unsigned r = i % window;
		if (i >= window) {
			pthread_join(ring[r], NULL);
			*inside += spent[r];
		}
		if (i >= total)
			continue;
		pthread_attr_t attr;
		attr_pinned(&attr, i);
		spent[r] = 0;
		if (pthread_create(&ring[r], &attr, churn_worker, claim ? &spent[r] : NULL))
			die("pthread_create failed");
		pthread_attr_destroy(&attr);
	}
	return now_ns() - t0;
}

static void run_churn(unsigned total, unsigned window)
{
	/* Baseline and claiming threads in alternating chunks, so drift hits both alike. */
	enum { CHUNKS = 4 };
	unsigned per = (total + CHUNKS - 1) / CHUNKS;
	double bare = 0, with = 0, inside = 0, unused = 0;
	for (int c = 0; c < CHUNKS; c++) {
		bare += churn_chunk(per, window, false, &unused);
		with += churn_chunk(per, window, true, &inside);
	}
	double n = (double)per * CHUNKS;
	printf("{\"type\":\"churn\",\"variant\":\"%s\",\"window\":%u,\"threads\":%u,"
	       "\"ns_per_thread\":%.1f,\"ns_per_thread_bare\":%.1f,\"ns_in_thread\":%.1f}\n",
	       VARIANT_NAME, window, per * CHUNKS, with / n, bare / n, inside / n);
}

/* ---- arguments ---- */

static unsigned parse_list(const char *s, unsigned *out, unsigned max_value)
{
	unsigned n = 0;
	char *end;
	while (*s && n < MAX_LIST) {
		unsigned long v = strtoul(s, &end, 10);
		if (end == s || v > max_value)
			die("bad list argument");
		out[n++] = (unsigned)v;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			die("bad list argument");
	}
	return n;
}

int main(int argc, char **argv)
{
	unsigned ms = 100, churn_total = 0;
	unsigned threads[MAX_LIST] = { 1 }, holds[MAX_LIST] = { 0 }, windows[MAX_LIST] = { 1 };
	unsigned nthreads = 1, nholds = 1, nwindows = 1;
	int opt;
	while ((opt = getopt(argc, argv, "m:t:H:c:w:")) != -1) {
		switch (opt) {
		case 'm': ms = (unsigned)atoi(optarg); break;
		case 't': nthreads = parse_list(optarg, threads, MAX_THREADS); break;
		case 'H': nholds = parse_list(optarg, holds, MAX_HOLD); break;
		case 'c': churn_total = (unsigned)atoi(optarg); break;
		case 'w': nwindows = parse_list(optarg, windows, MAX_WINDOW); break;
		default:
			fprintf(stderr, "usage: %s [-m MS] [-t T,...] [-H H,...] [-c N] [-w W,...]\n",
				argv[0]);
			return 2;
		}
	}
	if (ms == 0)
		die("-m must be at least 1");
	for (unsigned i = 0; i < nthreads; i++)
		if (threads[i] == 0)
			die("-t: thread counts start at 1");
	for (unsigned i = 0; i < nwindows; i++)
		if (windows[i] == 0)
			die("-w: windows start at 1");
	cpus_init();

	/* One pool for everything, big enough for the most entries ever held at once. */
	size_t cap = 64;
	for (unsigned t = 0; t < nthreads; t++)
		for (unsigned h = 0; h < nholds; h++)
			if ((size_t)threads[t] * (holds[h] + 1) > cap)
				cap = (size_t)threads[t] * (holds[h] + 1);
	for (unsigned w = 0; w < nwindows; w++)
		if (windows[w] > cap)
			cap = windows[w];
	cap = (cap + 63) / 64 * 64;
	if (variant_init(cap))
		die("cannot set up the pool");

	printf("{\"type\":\"info\",\"variant\":\"%s\",\"bytes_per_entry\":%.3f,\"note\":\"%s\","
	       "\"cpus\":%d,\"pool\":%zu}\n",
	       VARIANT_NAME, variant_bytes(), VARIANT_NOTE, ncpus, cap);
	for (unsigned t = 0; t < nthreads; t++)
		for (unsigned h = 0; h < nholds; h++)
			run_pair(threads[t], holds[h], ms);
	for (unsigned w = 0; w < nwindows && churn_total; w++)
		run_churn(churn_total, windows[w]);
	return 0;
}
