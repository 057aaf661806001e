/*
 * The traced program of the per-hit benchmark (bench/tracer.py): calls bench_hit, a
 * function that is never inlined, N times, and prints the sum it returns so the calls
 * cannot be optimised away. Deterministic: exactly N entries into bench_hit.
 *
 * It also prints the wall time of the loop alone (CLOCK_MONOTONIC, so time spent stopped
 * by a tracer counts): "N calls, sum S, loop_ns T". The whole command's wall time adds the
 * tracer's start-up and tear-down, which bench/tracer.py measures from outside.
 *
 * usage: bench_hit_target N
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Exported and noinline: a tracer finds it in the symbol table and probes its entry. */
__attribute__((noinline, used)) unsigned long bench_hit(unsigned long x);

__attribute__((noinline, used)) unsigned long bench_hit(unsigned long x)
{
	/* Something the compiler cannot fold away, and an empty asm so the call stays a call. */
	__asm__ volatile("" : "+r"(x));
	return x * 2654435761u + 1;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s N\n", argv[0]);
		return 2;
	}
	char *end;
	unsigned long n = strtoul(argv[1], &end, 10);
	if (*end || end == argv[1]) {
		fprintf(stderr, "%s: not a count: '%s'\n", argv[0], argv[1]);
		return 2;
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	unsigned long sum = 0;
	for (unsigned long i = 0; i < n; i++)
		sum += bench_hit(i);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
	printf("%lu calls, sum %lu, loop_ns %lld\n", n, sum, ns);
	return 0;
}
