/*
 * The traced program of the per-hit benchmark (bench/tracer.py): calls bench_hit, a
 * function that is never inlined, N times, and prints the sum it returns so the calls
 * cannot be optimised away. Deterministic: exactly N entries into bench_hit.
 *
 * It also prints the wall time of the loop alone (CLOCK_MONOTONIC, so time spent stopped
 * by a tracer counts): "N calls, sum S, loop_ns T". The whole command's wall time adds the
 * tracer's start-up and tear-down, which bench/tracer.py measures from outside.
 *
 * With T, the calls are made by T worker threads, N/T each (T must divide N). The threads
 * are created first and wait on a barrier; loop_ns is then the wall time from their
 * release to the end of the last one (thread creation, which a tracer sees as clone
 * events, is outside it), and the line adds ", threads T, per thread C1,C2,...": the
 * calls each thread made.
 *
 * usage: bench_hit_target N [T]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MAX_THREADS 64

/* Exported and noinline: a tracer finds it in the symbol table and probes its entry. */
__attribute__((noinline, used)) unsigned long bench_hit(unsigned long x);

__attribute__((noinline, used)) unsigned long bench_hit(unsigned long x)
{
	/* Something the compiler cannot fold away, and an empty asm so the call stays a call. */
	__asm__ volatile("" : "+r"(x));
	return x * 2654435761u + 1;
}

/* A cache line each, so that the threads share nothing but the code they run. */
struct worker {
	_Alignas(64) pthread_t thread;
	pthread_barrier_t *start;
	unsigned long first, calls, done, sum;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	pthread_barrier_wait(w->start);
	unsigned long sum = 0, done = 0;
	for (unsigned long i = w->first; i < w->first + w->calls; i++, done++)
		sum += bench_hit(i);
	w->sum = sum;
	w->done = done;
	return NULL;
}

static unsigned long count_arg(const char *prog, const char *s)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);
	if (*end || end == s) {
		fprintf(stderr, "%s: not a count: '%s'\n", prog, s);
		exit(2);
	}
	return v;
}

static long long since_ns(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (long long)(t1.tv_sec - t0->tv_sec) * 1000000000LL + (t1.tv_nsec - t0->tv_nsec);
}

/* The loop in T threads started together; the sum of the N calls is the same as in main's. */
static int threaded(const char *prog, unsigned long n, unsigned long t)
{
	if (t < 1 || t > MAX_THREADS || n % t) {
		fprintf(stderr, "%s: T must be 1 to %d and divide N\n", prog, MAX_THREADS);
		return 2;
	}
	static struct worker w[MAX_THREADS];
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, (unsigned)t + 1);
	for (unsigned long k = 0; k < t; k++) {
		w[k] = (struct worker){.start = &start, .first = k * (n / t), .calls = n / t};
		if (pthread_create(&w[k].thread, NULL, worker_main, &w[k])) {
			fprintf(stderr, "%s: pthread_create failed\n", prog);
			return 1;
		}
	}
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pthread_barrier_wait(&start);
	unsigned long sum = 0;
	for (unsigned long k = 0; k < t; k++) {
		pthread_join(w[k].thread, NULL);
		sum += w[k].sum;
	}
	long long ns = since_ns(&t0);
	printf("%lu calls, sum %lu, loop_ns %lld, threads %lu, per thread ", n, sum, ns, t);
	for (unsigned long k = 0; k < t; k++)
		printf("%s%lu", k ? "," : "", w[k].done);
	printf("\n");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 2 && argc != 3) {
		fprintf(stderr, "usage: %s N [T]\n", argv[0]);
		return 2;
	}
	unsigned long n = count_arg(argv[0], argv[1]);
	if (argc == 3)
		return threaded(argv[0], n, count_arg(argv[0], argv[2]));
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	unsigned long sum = 0;
	for (unsigned long i = 0; i < n; i++)
		sum += bench_hit(i);
	long long ns = since_ns(&t0);
	printf("%lu calls, sum %lu, loop_ns %lld\n", n, sum, ns);
	return 0;
}
