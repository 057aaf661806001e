/*
 * A target whose signal handler parks and resumes threads, as a user-level scheduler does
 * (Go's asynchronous preemption, for one): when SIGUSR1 finds a worker at the first
 * instruction of parked_fn, the handler makes it return into park_trampoline instead,
 * which blocks the thread for a while and then resumes it at parked_fn — with every
 * register as it was except r11, dead at a function's entry, which a scheduler need not
 * keep. The call then runs, once. A tracer that unwinds a hit to that instruction before
 * delivering the signal must count that call exactly once.
 *
 *   usage: park [THREADS [CALLS]]
 * stderr:  park: expect pid=P parked_fn=N parks=K      (N: calls made; K: threads parked)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#define MAX_THREADS 64

static atomic_ulong calls, parks;
static atomic_int finished;
static _Atomic pid_t tids[MAX_THREADS];
static unsigned long per_thread = 20000;

static volatile unsigned long sink;
__attribute__((noinline, used)) unsigned long parked_fn(unsigned long x);
__attribute__((noinline, used)) unsigned long parked_fn(unsigned long x)
{
	sink += x;
	return sink;
}

/* Called by park_trampoline on the parked thread's own stack: a short block, then back. */
__attribute__((used)) void park(void);
__attribute__((used)) void park(void)
{
	atomic_fetch_add(&parks, 1);
	nanosleep(&(struct timespec){ 0, 20 * 1000 }, NULL);
}

/*
 * Entered with the stack as the handler left it: the resume address on top, above it the
 * interrupted frame's 128-byte red zone, kept. Saves the flags and every register but
 * r11, calls park() on an aligned stack, restores them, and returns over the red zone.
 */
void park_trampoline(void);
__asm__(".text\n"
	".globl park_trampoline\n"
	"park_trampoline:\n"
	"\tpushfq\n"
	"\tpush %rax\n\tpush %rcx\n\tpush %rdx\n\tpush %rbx\n\tpush %rbp\n\tpush %rsi\n"
	"\tpush %rdi\n\tpush %r8\n\tpush %r9\n\tpush %r10\n\tpush %r12\n\tpush %r13\n"
	"\tpush %r14\n\tpush %r15\n"
	"\tmov %rsp, %rbx\n"
	"\tand $-16, %rsp\n"
	"\tsub $512, %rsp\n\tfxsave (%rsp)\n"
	"\tcall park\n"
	"\tfxrstor (%rsp)\n"
	"\tmov %rbx, %rsp\n"
	"\tpop %r15\n\tpop %r14\n\tpop %r13\n\tpop %r12\n\tpop %r10\n\tpop %r9\n"
	"\tpop %r8\n\tpop %rdi\n\tpop %rsi\n\tpop %rbp\n\tpop %rbx\n\tpop %rdx\n"
	"\tpop %rcx\n\tpop %rax\n"
	"\tpopfq\n"
	"\tmov $0x5eed, %r11\n" /* a scheduler need not keep a dead register */
	"\tret $128\n");

static void on_usr1(int sig, siginfo_t *si, void *ctx)
{
	(void)sig, (void)si;
	ucontext_t *uc = ctx;
	greg_t *g = uc->uc_mcontext.gregs;
	if ((uintptr_t)g[REG_RIP] != (uintptr_t)parked_fn)
		return; /* only at the entry, where the registers are the call's */
	uint64_t *sp = (uint64_t *)(uintptr_t)g[REG_RSP] - 16 - 1; /* below the red zone */
	*sp = (uint64_t)g[REG_RIP];
	g[REG_RSP] = (greg_t)(uintptr_t)sp;
	g[REG_RIP] = (greg_t)(uintptr_t)park_trampoline;
}

static void *worker(void *arg)
{
	long i = (long)arg;
	atomic_store(&tids[i], (pid_t)syscall(SYS_gettid));
	for (unsigned long k = 0; k < per_thread; k++) {
		atomic_fetch_add(&calls, 1);
		parked_fn(k);
	}
	atomic_store(&tids[i], 0);
	atomic_fetch_add(&finished, 1);
	return NULL;
}

int main(int argc, char **argv)
{
	int nthreads = argc > 1 ? atoi(argv[1]) : 4;
	if (argc > 2)
		per_thread = strtoul(argv[2], NULL, 10);
	if (nthreads < 1 || nthreads > MAX_THREADS)
		return 2;
	struct sigaction sa = { .sa_sigaction = on_usr1, .sa_flags = SA_SIGINFO | SA_RESTART };
	sigaction(SIGUSR1, &sa, NULL);
	pthread_t t[MAX_THREADS];
	for (long i = 0; i < nthreads; i++)
		if (pthread_create(&t[i], NULL, worker, (void *)i))
			return 1;
	/* Signals to the workers all along, one every 20 µs. */
	for (unsigned n = 0; atomic_load(&finished) < nthreads; n++) {
		pid_t tid = atomic_load(&tids[n % (unsigned)nthreads]);
		if (tid)
			syscall(SYS_tgkill, getpid(), tid, SIGUSR1);
		nanosleep(&(struct timespec){ 0, 20 * 1000 }, NULL);
	}
	for (int i = 0; i < nthreads; i++)
		pthread_join(t[i], NULL);
	printf("calls %lu\n", atomic_load(&calls));
	fprintf(stderr, "park: expect pid=%d parked_fn=%lu parks=%lu\n", (int)getpid(), atomic_load(&calls),
		atomic_load(&parks));
	return 0;
}
