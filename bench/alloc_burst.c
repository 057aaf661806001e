/*
 * Burst growth: K threads claim at once from an empty pool. Counts the pages mapped
 * against the pages needed, ceil(K / 64) with 64 entries per page:
 *
 *   ptss   through its public API on a space in this process (growth is double-checked
 *          under the lock, so it should map exactly what is needed);
 *   seed   the local model of the seed's racing growth (alloc_seed.h): every thread that
 *          finds the list empty maps a page of its own.
 *
 * Threads start together from a barrier and are pinned round-robin; how many of them find
 * the list empty at once depends on the scheduler, so each K is tried several times. The
 * seed's worst case is one page per thread. Prints one JSON object per line.
 *
 *   usage: bench_alloc_burst [-k K,...] [-r REPS]    (default K = 1,16,64,65,256,1000, 5 reps)
 */
#define _GNU_SOURCE
#include "alloc_seed.h"

#include <ptss/ptss.h>
#include <ptss/space.h>

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_K 4096
#define MAX_KS 16

static pthread_barrier_t start_line;
static ptss_proc *proc;
static struct seed_proc seed;
static void *claimed[MAX_K];

static _Noreturn void die(const char *what)
{
	fprintf(stderr, "bench_alloc_burst: %s\n", what);
	exit(1);
}

static void *ptss_worker(void *slot)
{
	pthread_barrier_wait(&start_line);
	*(void **)slot = ptss_claim(proc);
	return NULL;
}

static void *seed_worker(void *slot)
{
	pthread_barrier_wait(&start_line);
	*(void **)slot = seed_claim(&seed);
	return NULL;
}

static int cpus[CPU_SETSIZE];
static int ncpus;

/* Starts k threads on worker, pinned round-robin, lets them go at once, and joins them. */
static void burst(unsigned k, void *(*worker)(void *))
{
	static pthread_t tids[MAX_K];
	pthread_barrier_init(&start_line, NULL, k + 1);
	for (unsigned i = 0; i < k; i++) {
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, 64 << 10); /* 1000 threads: keep it small */
		if (ncpus) {
			cpu_set_t set;
			CPU_ZERO(&set);
			CPU_SET(cpus[i % (unsigned)ncpus], &set);
			pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
		}
		claimed[i] = NULL;
		if (pthread_create(&tids[i], &attr, worker, &claimed[i]))
			die("pthread_create failed");
		pthread_attr_destroy(&attr);
	}
	pthread_barrier_wait(&start_line);
	for (unsigned i = 0; i < k; i++) {
		pthread_join(tids[i], NULL);
		if (!claimed[i])
			die("a claim failed");
	}
	pthread_barrier_destroy(&start_line);
}

static void report(const char *model, unsigned k, unsigned rep, unsigned long long pages)
{
	printf("{\"type\":\"burst\",\"model\":\"%s\",\"k\":%u,\"rep\":%u,\"pages\":%llu,"
	       "\"needed\":%u}\n",
	       model, k, rep, pages, (k + SEED_ENTRIES_PER_PAGE - 1) / SEED_ENTRIES_PER_PAGE);
}

int main(int argc, char **argv)
{
	unsigned ks[MAX_KS] = { 1, 16, 64, 65, 256, 1000 }, nks = 6, reps = 5;
	int opt;
	while ((opt = getopt(argc, argv, "k:r:")) != -1) {
		if (opt == 'k') {
			char *s = optarg, *end;
			for (nks = 0; *s && nks < MAX_KS; s = *end ? end + 1 : end) {
				unsigned long v = strtoul(s, &end, 10);
				if (end == s || v < 1 || v > MAX_K || (*end && *end != ','))
					die("-k: a list of 1 to 4096");
				ks[nks++] = (unsigned)v;
			}
		} else if (opt == 'r') {
			reps = (unsigned)atoi(optarg);
		} else {
			fprintf(stderr, "usage: bench_alloc_burst [-k K,...] [-r REPS]\n");
			return 2;
		}
	}
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &set))
				cpus[ncpus++] = c;

	ptss_space *space = ptss_space_self_new();
	if (!space)
		die("ptss_space_self_new failed");
	struct ptss_opts opts = PTSS_OPTS(.page_size = SEED_PAGE_SIZE,
					  .entry_size = SEED_ENTRY_SIZE);
	if (sysconf(_SC_PAGESIZE) != SEED_PAGE_SIZE)
		die("this bench assumes 4 KiB pages (64 entries per page)");

	for (unsigned r = 0; r < reps; r++) {
		for (unsigned i = 0; i < nks; i++) {
			proc = ptss_proc_new(space, &opts);
			if (!proc)
				die("ptss_proc_new failed");
			burst(ks[i], ptss_worker);
			struct ptss_stats st;
			ptss_stats_get(proc, &st);
			report("ptss", ks[i], r, (unsigned long long)st.pages);
			ptss_proc_free(proc); /* drops every entry with the reservation */

			seed_proc_init(&seed);
			burst(ks[i], seed_worker);
			report("seed", ks[i], r, seed.npages);
			seed_proc_destroy(&seed);
		}
	}
	ptss_space_free(space);
	return 0;
}
