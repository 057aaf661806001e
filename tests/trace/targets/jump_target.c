/*
 * A target of the jump-probe tests (test_jump.py), built non-PIE so that `far` can fill
 * the address space around its code.
 *
 *   jump_target calls N       jt_plain and jt_branch_into N times each
 *   jump_target far N         every gap within 2.25 GiB of the code filled (PROT_NONE):
 *                             no trampoline fits in reach; prints "ready", and at a line
 *                             on stdin (ptss attached meanwhile) does what `calls` does
 *   jump_target threads T N   T threads, each calling jt_plain N times
 *   jump_target loop SECONDS  calls jt_plain for that long, then prints how often
 *   jump_target signals N     a thread calls jt_plain N times while the main thread
 *                             queues it SIGUSR1s with a value (sigqueue); the handler
 *                             checks its siginfo and calls jt_plain too
 *   jump_target spin          a thread runs jt_spin in a loop; commands on stdin:
 *                             "check" answers "ok" if every result was right, "quit"
 *
 * stderr: `jump_target: expect pid=P jt_plain=N ...`, what a tracer must count.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

long jt_branch_into(long n);
long jt_spin(long x);
long jt_plain(long x);

__attribute__((noinline)) long jt_plain(long x)
{
	__asm__ volatile("" : "+r"(x));
	return x * 3 + 1;
}

static void expect(const char *counts)
{
	fprintf(stderr, "jump_target: expect pid=%d %s\n", (int)getpid(), counts);
}

static int calls(long n)
{
	long sum = 0, want = 0;
	for (long i = 0; i < n; i++) {
		sum += jt_plain(i) + jt_branch_into(i % 7 + 1);
		want += i * 3 + 1 + i % 7 + 1;
	}
	char line[128];
	snprintf(line, sizeof(line), "jt_plain=%ld jt_branch_into=%ld", n, n);
	expect(line);
	printf("sum %ld\n", sum);
	return sum == want ? 0 : 1;
}

/* Every gap of the memory map that starts below `hi`, from 64 KiB up, made PROT_NONE. */
static void fill_below(uint64_t hi)
{
	FILE *f = fopen("/proc/self/maps", "r");
	uint64_t gaps[256][2], prev = 0x10000;
	size_t n = 0;
	char line[512];
	while (f && n < 256 && fgets(line, sizeof(line), f)) {
		unsigned long long a, b;
		if (sscanf(line, "%llx-%llx", &a, &b) != 2)
			continue;
		if (a > prev && prev < hi)
			gaps[n][0] = prev, gaps[n][1] = a < hi ? a : hi, n++;
		if (b > prev)
			prev = b;
	}
	if (prev < hi && n < 256)
		gaps[n][0] = prev, gaps[n][1] = hi, n++;
	if (f)
		fclose(f);
	for (size_t i = 0; i < n; i++)
		if (mmap((void *)gaps[i][0], gaps[i][1] - gaps[i][0], PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0) == MAP_FAILED)
			perror("jump_target: mmap");
}

struct worker { long n, sum; pthread_t id; };

static void *work(void *arg)
{
	struct worker *w = arg;
	for (long i = 0; i < w->n; i++)
		w->sum += jt_plain(i);
	char line[64];
	snprintf(line, sizeof(line), "jt_plain=%ld", w->n);
	fprintf(stderr, "jump_target: thread %d: %s\n", (int)gettid(), line);
	return NULL;
}

static volatile int spin_bad, spin_stop;
static volatile long handled, bad_info;
static volatile int loop_done;

static void on_usr1(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	if (si->si_code != SI_QUEUE || si->si_value.sival_int != 4242 || si->si_pid != getpid())
		bad_info++;
	jt_plain(handled++);
}

static void *call_loop(void *arg)
{
	long n = *(long *)arg;
	for (long i = 0; i < n; i++)
		if (jt_plain(i) != i * 3 + 1)
			bad_info++;
	loop_done = 1;
	return NULL;
}

/* SIGUSR1s queued to a thread that spends its time in jt_plain's trampoline. */
static int signals(long n)
{
	struct sigaction sa = { .sa_sigaction = on_usr1, .sa_flags = SA_SIGINFO | SA_RESTART };
	sigaction(SIGUSR1, &sa, NULL);
	pthread_t id;
	pthread_create(&id, NULL, call_loop, &n);
	long sent = 0;
	union sigval v = { .sival_int = 4242 };
	while (!loop_done) {
		if (!pthread_sigqueue(id, SIGUSR1, v))
			sent++;
		usleep(200);
	}
	pthread_join(id, NULL);
	char line[96];
	snprintf(line, sizeof(line), "jt_plain=%ld", n + handled);
	expect(line);
	printf("sent %ld handled %ld bad %ld\n", sent, handled, bad_info);
	return bad_info ? 1 : 0;
}

static void *spin(void *arg)
{
	(void)arg;
	for (long i = 0; !spin_stop; i++)
		if (jt_spin(i) != i + 1)
			spin_bad = 1;
	return NULL;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	long n = argc > 2 ? atol(argv[2]) : 0;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(mode, "calls"))
		return calls(n);
	if (!strcmp(mode, "signals"))
		return signals(n);
	if (!strcmp(mode, "far")) {
		fill_below((uint64_t)(uintptr_t)&jt_plain + (9ull << 28)); /* 2.25 GiB above */
		printf("ready\n");
		char line[16];
		if (!fgets(line, sizeof(line), stdin))
			return 1;
		return calls(n);
	}
	if (!strcmp(mode, "threads") && argc > 3) {
		long per = atol(argv[3]);
		struct worker *w = calloc((size_t)n, sizeof(*w));
		for (long i = 0; i < n; i++) {
			w[i].n = per;
			pthread_create(&w[i].id, NULL, work, &w[i]);
		}
		for (long i = 0; i < n; i++)
			pthread_join(w[i].id, NULL);
		char line[64];
		snprintf(line, sizeof(line), "jt_plain=%ld", n * per);
		expect(line);
		return 0;
	}
	if (!strcmp(mode, "loop")) {
		struct timespec t0, t;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		long done = 0;
		do {
			for (int i = 0; i < 100000; i++, done++)
				jt_plain(done);
			clock_gettime(CLOCK_MONOTONIC, &t);
		} while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < (double)n);
		char line[64];
		snprintf(line, sizeof(line), "jt_plain=%ld", done);
		expect(line);
		return 0;
	}
	if (!strcmp(mode, "spin")) {
		pthread_t id;
		pthread_create(&id, NULL, spin, NULL);
		printf("ready\n");
		char line[64];
		while (fgets(line, sizeof(line), stdin)) {
			if (!strncmp(line, "check", 5))
				printf("%s\n", spin_bad ? "bad" : "ok");
			else if (!strncmp(line, "quit", 4))
				break;
		}
		spin_stop = 1;
		pthread_join(id, NULL);
		return spin_bad;
	}
	fprintf(stderr, "usage: jump_target calls|far N | threads T N | loop SECONDS | spin\n");
	return 2;
}
