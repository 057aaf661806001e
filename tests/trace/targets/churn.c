/*
 * A busy target for attach and detach: waves of threads come and go all the time, each
 * calling busy_fn() in a loop, and a signaller thread sends SIGUSR1 to them (its handler
 * calls busy_fn() too), so that a tracer attaching or detaching always finds threads being
 * born, exiting, hitting probes and taking signals. Commands on stdin, one per line:
 *   go K R   K more threads at once, thread i calls counted_fn() (i+1)*R times and sends
 *            itself one SIGUSR2, whose handler calls counted_fn() once; when they are done:
 *            "done N", N the counted_fn() calls made since the last "go" (exact)
 *   quit     stops the churn, joins everything: "bye B" (B: busy_fn() calls) and exit 0
 * usage: churn [THREADS_PER_WAVE]           prints "ready" once the churn runs
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_LIVE 64

static atomic_bool stopping;
static atomic_ulong busy_calls, counted_calls;
static _Atomic pid_t live[MAX_LIVE]; /* tids of churning threads, 0: free slot */

/* The probed functions: noinline, with a side effect so that no call is folded away. */
static volatile unsigned long sink;
__attribute__((noinline, used)) unsigned long busy_fn(unsigned long x);
__attribute__((noinline, used)) unsigned long busy_fn(unsigned long x)
{
	sink += x;
	return sink;
}
__attribute__((noinline, used)) unsigned long counted_fn(unsigned long x);
__attribute__((noinline, used)) unsigned long counted_fn(unsigned long x)
{
	sink ^= x;
	return sink;
}

static void on_usr1(int sig)
{
	atomic_fetch_add(&busy_calls, 1);
	busy_fn((unsigned long)sig);
}

static void on_usr2(int sig)
{
	atomic_fetch_add(&counted_calls, 1);
	counted_fn((unsigned long)sig);
}

static void *churner(void *arg)
{
	int slot = (int)(long)arg;
	atomic_store(&live[slot], (pid_t)syscall(SYS_gettid));
	for (unsigned long i = 0; i < 3000; i++) {
		atomic_fetch_add(&busy_calls, 1);
		busy_fn(i);
	}
	atomic_store(&live[slot], 0);
	return NULL;
}

/* Waves of threads, forever: started together, joined together. */
static void *spawner(void *arg)
{
	int per_wave = (int)(long)arg;
	while (!atomic_load(&stopping)) {
		pthread_t t[MAX_LIVE];
		for (int i = 0; i < per_wave; i++)
			if (pthread_create(&t[i], NULL, churner, (void *)(long)i))
				abort();
		for (int i = 0; i < per_wave; i++)
			pthread_join(t[i], NULL);
	}
	return NULL;
}

/* SIGUSR1 to the churning threads, one every 50 µs. A tid that just exited is harmless:
 * tgkill checks the thread group. */
static void *signaller(void *arg)
{
	(void)arg;
	unsigned n = 0;
	while (!atomic_load(&stopping)) {
		pid_t tid = atomic_load(&live[n++ % MAX_LIVE]);
		if (tid)
			syscall(SYS_tgkill, getpid(), tid, SIGUSR1);
		nanosleep(&(struct timespec){ 0, 50 * 1000 }, NULL);
	}
	return NULL;
}

struct counted_arg { unsigned long calls; };

static void *counted_worker(void *arg)
{
	unsigned long calls = ((struct counted_arg *)arg)->calls;
	for (unsigned long i = 0; i < calls; i++) {
		atomic_fetch_add(&counted_calls, 1);
		counted_fn(i);
	}
	syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGUSR2); /* handled before it returns */
	return NULL;
}

int main(int argc, char **argv)
{
	int per_wave = argc > 1 ? atoi(argv[1]) : 16;
	if (per_wave < 1 || per_wave > MAX_LIVE)
		return 2;
	struct sigaction sa = { .sa_flags = SA_RESTART };
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	pthread_t sp, sg;
	if (pthread_create(&sp, NULL, spawner, (void *)(long)per_wave) ||
	    pthread_create(&sg, NULL, signaller, NULL))
		return 1;
	printf("ready\n");
	char line[64];
	while (fgets(line, sizeof(line), stdin)) {
		int k, r;
		if (sscanf(line, "go %d %d", &k, &r) == 2 && k > 0 && k <= MAX_LIVE && r >= 0) {
			atomic_store(&counted_calls, 0);
			pthread_t t[MAX_LIVE];
			struct counted_arg a[MAX_LIVE];
			for (int i = 0; i < k; i++) {
				a[i].calls = (unsigned long)(i + 1) * (unsigned long)r;
				if (pthread_create(&t[i], NULL, counted_worker, &a[i]))
					return 1;
			}
			for (int i = 0; i < k; i++)
				pthread_join(t[i], NULL);
			printf("done %lu\n", atomic_load(&counted_calls));
		} else if (!strcmp(line, "quit\n")) {
			break;
		}
	}
	atomic_store(&stopping, true);
	pthread_join(sp, NULL);
	pthread_join(sg, NULL);
	printf("bye %lu\n", atomic_load(&busy_calls));
	return 0;
}
