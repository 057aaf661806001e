/*
 * How a jump probe's trampoline may count a hit per thread (issue 12): the options,
 * measured on this machine, one and two threads, ns per hit. Each thread runs the
 * counting sequence HITS times; the figures are wall time / HITS.
 *
 *   fs-table  what ptss's trampoline does: rdfsbase, a multiplicative hash, one probe of
 *             a table of (slot << 48 | fs base) words, an add to the thread's own row;
 *             flags and registers saved and restored as in the trampoline
 *   shared    one counter for all threads, `lock add` (no per-thread counts)
 *   per-cpu   rdpid's CPU number (what rseq's cpu_id gives) indexes a row; `lock add`,
 *             since a thread may move between reading it and adding (per-CPU sums only)
 *   own-row   a counter of its own that the thread already knows: the floor
 *
 * and what timing a call pays at each end (issue 13), the clock read added to a counter:
 *
 *   rdtsc     what ptss's entry and exit trampolines read with --latency
 *   rdtscp    the ordered read, waiting for the instructions before it
 *
 * usage: bench_count_options [HITS]   (default 100000000); prints one JSON line per
 * option and thread count.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

#define TABLE_BITS 14
#define HASH_MUL 0x9e3779b97f4a7c15ull

static uint64_t table[1u << TABLE_BITS];
static uint64_t rows[64][256] __attribute__((aligned(64)));
static uint64_t shared __attribute__((aligned(64)));
static uint64_t hits;

enum option { FS_TABLE, SHARED, PER_CPU, OWN_ROW, RDTSC, RDTSCP, NOPTIONS };
static const char *const names[] = { "fs-table", "shared", "per-cpu", "own-row", "rdtsc", "rdtscp" };

struct run { enum option opt; int slot; pthread_barrier_t *go; };

static inline void count_fs_table(void)
{
	/* The trampoline's sequence (jump.c), but the column, as a function of C. */
	__asm__ volatile(
		"lea -128(%%rsp), %%rsp\n push %%rax\n push %%rcx\n push %%rdx\n push %%rsi\n"
		"lahf\n seto %%al\n push %%rax\n"
		"rdfsbase %%rcx\n movabs %[mul], %%rax\n imul %%rcx, %%rax\n shr %[sh], %%rax\n"
		"1: mov (%[tab],%%rax,8), %%rsi\n test %%rsi, %%rsi\n jz 3f\n"
		"xor %%rcx, %%rsi\n rol $16, %%rsi\n cmp $0xffff, %%rsi\n jbe 2f\n"
		"inc %%eax\n and %[mask], %%eax\n jmp 1b\n"
		"2: imul $2048, %%esi, %%esi\n lea %[rows], %%rdx\n addq $1, (%%rdx,%%rsi)\n"
		"3: pop %%rax\n add $0x7f, %%al\n sahf\n pop %%rsi\n pop %%rdx\n pop %%rcx\n pop %%rax\n"
		"lea 128(%%rsp), %%rsp\n"
		:
		: [mul] "i"(HASH_MUL), [sh] "i"(64 - TABLE_BITS), [tab] "r"(table),
		  [mask] "i"((1u << TABLE_BITS) - 1), [rows] "m"(rows)
		: "memory", "cc");
}

static void *worker(void *arg)
{
	struct run *r = arg;
	uint64_t fs;
	__asm__ volatile("rdfsbase %0" : "=r"(fs));
	uint64_t i = (fs * HASH_MUL) >> (64 - TABLE_BITS);
	while (table[i])
		i = (i + 1) & ((1u << TABLE_BITS) - 1);
	__atomic_store_n(&table[i], fs | (uint64_t)r->slot << 48, __ATOMIC_RELEASE);
	pthread_barrier_wait(r->go);
	for (uint64_t n = 0; n < hits; n++) {
		switch (r->opt) {
		case FS_TABLE: count_fs_table(); break;
		case SHARED: __atomic_fetch_add(&shared, 1, __ATOMIC_RELAXED); break;
		case PER_CPU: {
			unsigned cpu;
			__asm__ volatile("rdpid %q0" : "=r"(cpu));
			__atomic_fetch_add(&rows[cpu & 63][0], 1, __ATOMIC_RELAXED);
			break;
		}
		case RDTSC: rows[r->slot][1] += __rdtsc(); break;
		case RDTSCP: {
			unsigned aux;
			rows[r->slot][1] += __rdtscp(&aux);
			break;
		}
		default: __atomic_store_n(&rows[r->slot][0], rows[r->slot][0] + 1, __ATOMIC_RELAXED); break;
		}
	}
	return NULL;
}

static double seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	hits = argc > 1 ? strtoull(argv[1], NULL, 10) : 100000000;
	for (int opt = 0; opt < NOPTIONS; opt++)
		for (int nthreads = 1; nthreads <= 2; nthreads++) {
			memset(table, 0, sizeof(table));
			pthread_t t[2];
			struct run r[2];
			pthread_barrier_t go;
			pthread_barrier_init(&go, NULL, (unsigned)nthreads + 1);
			for (int k = 0; k < nthreads; k++) {
				r[k] = (struct run){ (enum option)opt, 8 * (k + 1), &go };
				pthread_create(&t[k], NULL, worker, &r[k]);
			}
			pthread_barrier_wait(&go);
			double t0 = seconds();
			for (int k = 0; k < nthreads; k++)
				pthread_join(t[k], NULL);
			double ns = (seconds() - t0) * 1e9 / (double)hits;
			printf("{\"option\": \"%s\", \"threads\": %d, \"ns_per_hit\": %.3f}\n", names[opt],
			       nthreads, ns);
			pthread_barrier_destroy(&go);
		}
	return 0;
}
