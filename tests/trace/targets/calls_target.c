/*
 * A target of the call tests (test_calls.py): calls whose number, duration, arguments and
 * return values are known, printed on stderr as what a tracer must see:
 *   calls_target: expect pid=P ct_sleep=N ...            entries
 *   calls_target: returns pid=P ct_sleep=N ...           returns (the rest never return)
 *   calls_target: sleeps ms=5x10,40x5                    the durations slept
 *
 *   calls_target all       every case below, in this order, on one thread
 *   calls_target threads T T threads, each sleeping 1 ms 20 times in ct_sleep
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

long ct_leaf(long x);
long ct_tail(long x);
long ct_offs(long x);
long ct_mixed(long x);
long ct_mixed2(long x);
int ct_sleep(int ms);
long ct_fib(int n);
void ct_deep(int n);
int ct_args(const char *s, int i, unsigned u, long h, char c, bool b);

__attribute__((noinline)) int ct_sleep(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts))
		;
	return ms * 2;
}

__attribute__((noinline)) long ct_fib(int n)
{
	if (n < 2)
		return n;
	long a = ct_fib(n - 1), b = ct_fib(n - 2);
	__asm__ volatile("" : "+r"(a), "+r"(b)); /* no call in tail position: no loop made of it */
	return a + b;
}

static jmp_buf out;

/* Recurses n deep, then the deepest call jumps out of all of them. */
__attribute__((noinline)) void ct_deep(int n)
{
	if (n < 0)
		return; /* never: n counts down to 0 (a way out, for the compiler) */
	if (n == 0)
		longjmp(out, 1);
	ct_deep(n - 1);
	__asm__ volatile("" ::: "memory"); /* not a tail call */
}

__attribute__((noinline)) int ct_args(const char *s, int i, unsigned u, long h, char c, bool b)
{
	return (int)strlen(s) + i + (int)u + (int)h + c + b;
}

static void *sleeper(void *arg)
{
	(void)arg;
	for (int i = 0; i < 20; i++)
		ct_sleep(1);
	return NULL;
}

static long fib_calls(int n)
{
	return n < 2 ? 1 : 1 + fib_calls(n - 1) + fib_calls(n - 2);
}

int main(int argc, char **argv)
{
	int pid = (int)getpid();
	if (argc == 3 && !strcmp(argv[1], "threads")) {
		int n = atoi(argv[2]);
		pthread_t t[64];
		for (int i = 0; i < n && i < 64; i++)
			pthread_create(&t[i], NULL, sleeper, NULL);
		for (int i = 0; i < n && i < 64; i++)
			pthread_join(t[i], NULL);
		fprintf(stderr, "calls_target: expect pid=%d ct_sleep=%d\n", pid, 20 * n);
		fprintf(stderr, "calls_target: returns pid=%d ct_sleep=%d\n", pid, 20 * n);
		return 0;
	}
	if (argc != 2 || strcmp(argv[1], "all")) {
		fprintf(stderr, "usage: calls_target all | threads T\n");
		return 2;
	}
	long sum = 0;
	for (int i = 0; i < 10; i++)
		sum += ct_sleep(5);
	for (int i = 0; i < 5; i++)
		sum += ct_sleep(40);
	sum += ct_fib(12);
	if (!setjmp(out))
		ct_deep(5);
	for (long i = 0; i < 7; i++)
		sum += ct_tail(i) + ct_offs(i);
	for (long i = -4; i < 5; i++)
		sum += ct_mixed(i) + ct_mixed2(i);
	sum += ct_args("abc\"\n", -5, 7, 0xff, 'x', true);
	printf("sum %ld\n", sum);
	fprintf(stderr, "calls_target: expect pid=%d ct_sleep=15 ct_fib=%ld ct_deep=6 ct_tail=7 "
		"ct_leaf=16 ct_offs=7 ct_args=1 ct_mixed=9 ct_mixed2=9\n", pid, fib_calls(12));
	fprintf(stderr, "calls_target: returns pid=%d ct_sleep=15 ct_fib=%ld ct_deep=0 ct_tail=7 "
		"ct_leaf=16 ct_offs=7 ct_args=1 ct_mixed=9 ct_mixed2=9\n", pid, fib_calls(12));
	fprintf(stderr, "calls_target: sleeps ms=5x10,40x5\n");
	return 0;
}
