/*
 * A deterministic target for `ptss trace`: threads that come and go call known functions a
 * known number of times, and the program prints what a tracer should have counted.
 *
 *   usage: workload [--threads N] [--waves W] [--rounds R] [--signals] [--fork] [--exec]
 *                   [--wait-stdin] [--quiet]
 *
 * Wave w (0 <= w < W) starts N threads and joins them; thread i calls work_alpha (i+1)*R
 * times and work_beta R times. Options add:
 *   --signals     thread i receives 1 + i%3 SIGUSR1 (sent one at a time, each waited for, so
 *                 none coalesce); the handler calls on_signal_work() and work_gamma().
 *   --fork        while wave 0 runs, the main thread forks a child that calls work_gamma()
 *                 FORK_GAMMA times and exits 0; the parent reaps it before its summary.
 *   --exec        at the end the process execs /proc/self/exe --phase2, which calls
 *                 work_gamma() PHASE2_GAMMA times and exits 0.
 *   --wait-stdin  read one line (or EOF) from stdin before starting, so a tracer can attach
 *                 with -p and arm its probes first.
 *
 * stderr, one line per process image (unless --quiet), what a tracer must count in it:
 *   workload: expect pid=P image=main work_alpha=A work_beta=B work_gamma=G on_signal_work=S
 * with image main, fork or phase2 (phase2 has the pid of main: exec keeps it). Before the
 * main line, one line per worker thread, ordered by wave then index:
 *   workload: thread pid=P tid=T wave=W index=I work_alpha=A work_beta=B work_gamma=G on_signal_work=S
 * stdout holds no pid, tid or timing: it is byte-identical between runs with the same
 * arguments, traced or not.
 */
#define _GNU_SOURCE /* gettid via syscall, SA_RESTART */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum { FORK_GAMMA = 7, PHASE2_GAMMA = 5 };

/*
 * What the tracer probes. noipa (gcc) forbids clones (.constprop, .part) and inlining, so
 * every call enters the symbol itself; clang 14 has no noipa and does not clone at -O2.
 * Distinct constants keep identical-code folding from merging two of them.
 */
#if defined(__has_attribute)
#if __has_attribute(noipa)
#define WORKLOAD_PROBED __attribute__((noipa, used))
#endif
#endif
#ifndef WORKLOAD_PROBED
#define WORKLOAD_PROBED __attribute__((noinline, used))
#endif

unsigned work_alpha(int x);
unsigned work_beta(int x);
unsigned work_gamma(void);
void on_signal_work(void);

/* Read through volatile so no call's result is known at compile time. */
static volatile unsigned seed_alpha = 0x9e3779b9u, seed_beta = 0x85ebca6bu,
			 seed_gamma = 0xc2b2ae35u;

/* Sums of results: addition commutes, so the totals do not depend on scheduling. */
static atomic_uint_fast64_t gamma_sum, signal_sum;

WORKLOAD_PROBED unsigned work_alpha(int x)
{
	unsigned h = seed_alpha ^ (unsigned)x;
	for (int i = 0; i < 8; i++)
		h = (h ^ (h >> 15)) * 0x2c1b3c6du + (unsigned)i;
	return h;
}

WORKLOAD_PROBED unsigned work_beta(int x)
{
	unsigned h = seed_beta + (unsigned)x * 31u;
	for (int i = 0; i < 5; i++)
		h = (h ^ (h >> 13)) * 0x297a2d39u ^ (unsigned)(i * 7);
	return h;
}

/* Async-signal-safe: called from the SIGUSR1 handler too. */
WORKLOAD_PROBED unsigned work_gamma(void)
{
	unsigned h = seed_gamma;
	for (int i = 0; i < 3; i++)
		h = (h ^ (h >> 16)) * 0x85ebca77u + 0x165667b1u;
	atomic_fetch_add_explicit(&gamma_sum, h, memory_order_relaxed);
	return h;
}

/* Async-signal-safe. */
WORKLOAD_PROBED void on_signal_work(void)
{
	unsigned h = seed_alpha ^ seed_gamma;
	h = (h ^ (h >> 11)) * 0x27d4eb2fu;
	atomic_fetch_add_explicit(&signal_sum, h, memory_order_relaxed);
}

struct worker {
	pthread_t thread;
	int wave, index, rounds;
	int signals;			/* SIGUSR1 this thread is sent */
	pid_t tid;			/* written before ready is set */
	atomic_bool ready;		/* self is set: signals may be sent */
	atomic_int handled;		/* handler runs completed in this thread */
	uint64_t sum;			/* of work_alpha and work_beta results */
};

/* The handler's way to its worker; NULL in the main thread, which is never signalled. */
static _Thread_local struct worker *self;

static void on_sigusr1(int sig)
{
	(void)sig;
	int saved = errno;
	on_signal_work();
	work_gamma();
	if (self)
		atomic_fetch_add_explicit(&self->handled, 1, memory_order_release);
	errno = saved;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	self = w;
	w->tid = (pid_t)syscall(SYS_gettid);
	atomic_store_explicit(&w->ready, true, memory_order_release);
	uint64_t sum = 0;
	for (int r = 0; r < w->rounds; r++) {
		for (int k = 0; k <= w->index; k++)
			sum += work_alpha(r * 64 + k);
		sum += work_beta(r);
	}
	w->sum = sum;
	/* Stay alive, calling nothing probed, until every signal sent to us has been handled:
	 * signals land anywhere in the loop above or here, the count stays exact. */
	while (atomic_load_explicit(&w->handled, memory_order_acquire) < w->signals)
		sched_yield();
	return NULL;
}

/* Sends w its signals one at a time: a second SIGUSR1 pending with the first is lost. */
static void signal_worker(struct worker *w)
{
	while (!atomic_load_explicit(&w->ready, memory_order_acquire))
		sched_yield();
	for (int k = 1; k <= w->signals; k++) {
		int err = pthread_kill(w->thread, SIGUSR1);
		if (err) {
			fprintf(stderr, "workload: pthread_kill: %s\n", strerror(err));
			exit(1);
		}
		while (atomic_load_explicit(&w->handled, memory_order_acquire) < k)
			sched_yield();
	}
}

/* The fork child's whole life; _exit so the parent's stdio buffers are not flushed twice. */
static void fork_child(bool quiet)
{
	uint64_t sum = 0;
	for (int i = 0; i < FORK_GAMMA; i++)
		sum += work_gamma();
	printf("workload fork: work_gamma=%d checksum=%016" PRIx64 "\n", FORK_GAMMA, sum);
	fflush(stdout);
	if (!quiet)
		fprintf(stderr, "workload: expect pid=%d image=fork work_alpha=0 work_beta=0 "
			"work_gamma=%d on_signal_work=0\n", (int)getpid(), FORK_GAMMA);
	_exit(0);
}

static int phase2(bool quiet)
{
	uint64_t sum = 0;
	for (int i = 0; i < PHASE2_GAMMA; i++)
		sum += work_gamma();
	printf("workload phase2: work_gamma=%d checksum=%016" PRIx64 "\n", PHASE2_GAMMA, sum);
	if (!quiet)
		fprintf(stderr, "workload: expect pid=%d image=phase2 work_alpha=0 work_beta=0 "
			"work_gamma=%d on_signal_work=0\n", (int)getpid(), PHASE2_GAMMA);
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: workload [--threads N (1-1024)] [--waves W (1-1000)] "
		"[--rounds R (1-1000000)] [--signals] [--fork] [--exec] [--wait-stdin] "
		"[--quiet]\n");
	return 2;
}

/* The value after argv[*i], in [lo, hi]; -1 if missing or out of range. */
static long int_arg(int argc, char **argv, int *i, long lo, long hi)
{
	if (*i + 1 >= argc)
		return -1;
	char *end;
	errno = 0;
	long v = strtol(argv[++*i], &end, 10);
	return errno || *end || end == argv[*i] || v < lo || v > hi ? -1 : v;
}

int main(int argc, char **argv)
{
	long threads = 4, waves = 3, rounds = 100;
	bool signals = false, do_fork = false, do_exec = false, wait_stdin = false;
	bool quiet = false, is_phase2 = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--threads")) {
			if ((threads = int_arg(argc, argv, &i, 1, 1024)) < 0)
				return usage();
		} else if (!strcmp(a, "--waves")) {
			if ((waves = int_arg(argc, argv, &i, 1, 1000)) < 0)
				return usage();
		} else if (!strcmp(a, "--rounds")) {
			if ((rounds = int_arg(argc, argv, &i, 1, 1000000)) < 0)
				return usage();
		} else if (!strcmp(a, "--signals")) {
			signals = true;
		} else if (!strcmp(a, "--fork")) {
			do_fork = true;
		} else if (!strcmp(a, "--exec")) {
			do_exec = true;
		} else if (!strcmp(a, "--wait-stdin")) {
			wait_stdin = true;
		} else if (!strcmp(a, "--quiet")) {
			quiet = true;
		} else if (!strcmp(a, "--phase2")) {
			is_phase2 = true;
		} else {
			return usage();
		}
	}
	if (is_phase2)
		return phase2(quiet);

	if (signals) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_sigusr1;
		sa.sa_flags = SA_RESTART;
		sigemptyset(&sa.sa_mask);
		if (sigaction(SIGUSR1, &sa, NULL)) {
			perror("workload: sigaction");
			return 1;
		}
	}
	if (wait_stdin) {
		char line[64];
		if (!fgets(line, sizeof(line), stdin) && ferror(stdin)) {
			perror("workload: stdin");
			return 1;
		}
	}

	struct worker *ws = calloc((size_t)(threads * waves), sizeof(*ws));
	if (!ws) {
		perror("workload: calloc");
		return 1;
	}
	pid_t child = -1;
	for (int w = 0; w < waves; w++) {
		struct worker *wave = ws + w * threads;
		for (int i = 0; i < threads; i++) {
			struct worker *t = &wave[i];
			t->wave = w;
			t->index = i;
			t->rounds = (int)rounds;
			t->signals = signals ? 1 + i % 3 : 0;
			int err = pthread_create(&t->thread, NULL, worker_main, t);
			if (err) {
				fprintf(stderr, "workload: pthread_create: %s\n", strerror(err));
				return 1;
			}
		}
		/* Forking with workers alive: the child has only the forking thread. */
		if (do_fork && w == 0) {
			fflush(NULL);
			child = fork();
			if (child < 0) {
				perror("workload: fork");
				return 1;
			}
			if (child == 0)
				fork_child(quiet);
		}
		for (int i = 0; i < threads && signals; i++)
			signal_worker(&wave[i]);
		for (int i = 0; i < threads; i++)
			pthread_join(wave[i].thread, NULL);
	}

	int status = 0;
	if (child > 0) {
		while (waitpid(child, &status, 0) < 0) {
			if (errno != EINTR) {
				perror("workload: waitpid");
				return 1;
			}
		}
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "workload: fork child failed (status 0x%x)\n", status);
			return 1;
		}
	}

	/* Totals and per-thread expectations, all from the arguments, never from counters the
	 * probed code keeps: those could only confirm what ran. */
	uint64_t sum = 0;
	long alpha = 0, beta = 0, sigs = 0;
	for (long k = 0; k < threads * waves; k++) {
		struct worker *t = &ws[k];
		long a = (long)(t->index + 1) * rounds;
		sum += t->sum;
		alpha += a;
		beta += rounds;
		sigs += t->signals;
		if (!quiet)
			fprintf(stderr, "workload: thread pid=%d tid=%d wave=%d index=%d "
				"work_alpha=%ld work_beta=%ld work_gamma=%d on_signal_work=%d\n",
				(int)getpid(), (int)t->tid, t->wave, t->index, a, rounds,
				t->signals, t->signals);
	}
	sum += atomic_load(&gamma_sum) + atomic_load(&signal_sum);
	printf("workload: threads=%ld waves=%ld rounds=%ld signals=%ld work_alpha=%ld "
	       "work_beta=%ld work_gamma=%ld on_signal_work=%ld checksum=%016" PRIx64 "\n",
	       threads, waves, rounds, sigs, alpha, beta, sigs, sigs, sum);
	if (!quiet)
		fprintf(stderr, "workload: expect pid=%d image=main work_alpha=%ld work_beta=%ld "
			"work_gamma=%ld on_signal_work=%ld\n", (int)getpid(), alpha, beta, sigs,
			sigs);
	free(ws);

	if (do_exec) {
		fflush(NULL);
		char *args[] = { argv[0], "--phase2", quiet ? "--quiet" : NULL, NULL };
		execv("/proc/self/exe", args);
		perror("workload: exec /proc/self/exe");
		return 1;
	}
	return 0;
}
