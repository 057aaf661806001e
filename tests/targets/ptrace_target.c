/*
 * A multithreaded target for the ptrace space's tests. Worker threads block in read() on
 * a pipe; the main thread reads commands from stdin, one per line, and answers on stdout:
 *   spawn K    start K more workers                       -> "spawned K"
 *   wake K     write K bytes to the workers' pipe          -> each woken worker exits
 *   wake-call K  wake K workers that each call probe_me() before exiting, and wait for
 *              them                                        -> "called K"
 *   fork       fork a child that calls probe_me(), prints and exits 7 -> "child 7"
 *   exec       re-execute this program with 2 workers      -> "ready 2" from the new image
 *   call       ret = probe_me(); print it                   -> "call 42"
 *   seccomp WHAT ACTION   install a seccomp filter on every thread (TSYNC) whose ACTION
 *              (kill, trap, errno) hits what ptss injects and the program never calls:
 *              WHAT = exec: memfd_create, and mprotect asking for PROT_EXEC (ld.so maps
 *              code with mmap: an exec'd image still loads);
 *              WHAT = unmap: munmap of the scratch pages mapped now ("memfd:ptss")
 *                                                          -> "filtered"
 *   scratch    can this process write its scratch pages? tries to make them writable and
 *              looks for a descriptor of them  -> "scratch sealed no-fd" when it cannot
 *   quit       exit 0
 * usage: ptrace_target WORKERS [seccomp-kill|seccomp-errno|seccomp-errno-exec]
 * (the second argument forbids memfd_create before anything runs)
 */
#define _GNU_SOURCE
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int work_pipe[2], done_pipe[2];
static const char *self;

/* A side effect keeps compilers from folding the calls away (clang would: it returns 42). */
static volatile int probe_calls;
__attribute__((noinline)) int probe_me(void);
__attribute__((noinline)) int probe_me(void)
{
	probe_calls++;
	return 42;
}

/* A function whose first instruction cannot run out of line: probing it is refused. */
int refused_syscall_fn(void);
__asm__(".text\n.globl refused_syscall_fn\n.type refused_syscall_fn, @function\n"
	"refused_syscall_fn:\n\tsyscall\n\tret\n.size refused_syscall_fn, .-refused_syscall_fn\n");

static void *worker(void *arg)
{
	(void)arg;
	char c;
	if (read(work_pipe[0], &c, 1) != 1)
		_exit(3); /* a read that did not complete normally */
	if (c == 'c' && (probe_me() != 42 || write(done_pipe[1], "d", 1) != 1))
		_exit(3);
	return NULL;
}

static void spawn(int k)
{
	for (int i = 0; i < k; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, worker, NULL))
			_exit(4);
		pthread_detach(t);
	}
}

static void install(struct sock_filter *code, unsigned short len, unsigned flags)
{
	struct sock_fprog prog = { .len = len, .filter = code };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
	    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog))
		_exit(5);
}

/* The scratch pages ptss mapped here, from /proc/self/maps; 0 if none. */
static unsigned long scratch_base(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	unsigned long lo = 0;
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, "memfd:ptss") && sscanf(line, "%lx-", &lo) == 1)
			break;
	if (f)
		fclose(f);
	return lo;
}

/* `scratch`: see the top. */
static void scratch_command(void)
{
	unsigned long lo = scratch_base(), hi = 0;
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && strstr(line, "memfd:ptss"))
			break;
	if (f)
		fclose(f);
	bool writable = hi > lo && mprotect((void *)lo, hi - lo, PROT_READ | PROT_WRITE) == 0;
	bool fd = false;
	char path[64], target[256];
	for (int i = 0; i < 1024; i++) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", i);
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		if (n > 0 && (target[n] = 0, strstr(target, "memfd:ptss")))
			fd = true;
	}
	printf("scratch %s %s\n", writable ? "writable" : "sealed", fd ? "fd" : "no-fd");
}

/* `seccomp WHAT ACTION`: see the top. */
static void filter_command(const char *what, const char *action_name)
{
	unsigned action = !strcmp(action_name, "kill") ? SECCOMP_RET_KILL_PROCESS
			  : !strcmp(action_name, "trap") ? SECCOMP_RET_TRAP
							 : SECCOMP_RET_ERRNO | 1;
	if (!strcmp(what, "exec")) {
		struct sock_filter code[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_memfd_create, 4, 0),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mprotect, 0, 4),
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
			BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, PROT_EXEC, 1, 0),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
			BPF_STMT(BPF_RET | BPF_K, action),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		install(code, sizeof(code) / sizeof(code[0]), SECCOMP_FILTER_FLAG_TSYNC);
	} else {
		unsigned long base = scratch_base();
		struct sock_filter code[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_munmap, 0, 5),
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)base, 0, 3),
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]) + 4),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)(base >> 32), 0, 1),
			BPF_STMT(BPF_RET | BPF_K, action),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		install(code, sizeof(code) / sizeof(code[0]), SECCOMP_FILTER_FLAG_TSYNC);
	}
}

/* Forbids memfd_create, with the action given. */
static void install_filter(unsigned action)
{
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_memfd_create, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, action),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	install(code, sizeof(code) / sizeof(code[0]), 0);
}

int main(int argc, char **argv)
{
	self = argv[0];
	int workers = argc > 1 ? atoi(argv[1]) : 2;
	if (argc > 2)
		install_filter(strcmp(argv[2], "seccomp-kill") ? SECCOMP_RET_ERRNO | 1 : SECCOMP_RET_KILL_PROCESS);
	if (argc > 2 && !strcmp(argv[2], "seccomp-errno-exec")) /* the filter outlives the exec */
		execl(self, self, argv[1], (char *)NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (pipe(work_pipe) || pipe(done_pipe))
		return 1;
	spawn(workers);
	printf("ready %d\n", workers);
	char line[64], what[16], action[16];
	while (fgets(line, sizeof(line), stdin)) {
		int k = 0;
		if (sscanf(line, "spawn %d", &k) == 1) {
			spawn(k);
			printf("spawned %d\n", k);
		} else if (sscanf(line, "wake-call %d", &k) == 1) {
			for (int i = 0; i < k; i++)
				if (write(work_pipe[1], "c", 1) != 1)
					return 1;
			for (int i = 0; i < k; i++)
				if (read(done_pipe[0], line, 1) != 1)
					return 1;
			printf("called %d\n", k);
		} else if (sscanf(line, "seccomp %15s %15s", what, action) == 2) {
			filter_command(what, action);
			printf("filtered\n");
		} else if (sscanf(line, "wake %d", &k) == 1) {
			while (k-- > 0)
				if (write(work_pipe[1], "x", 1) != 1)
					return 1;
		} else if (!strcmp(line, "fork\n")) {
			pid_t pid = fork();
			if (pid == 0) {
				printf("in child %d\n", probe_me());
				_exit(7);
			}
			int status;
			waitpid(pid, &status, 0);
			printf("child %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		} else if (!strcmp(line, "exec\n")) {
			execl(self, self, "2", (char *)NULL);
			return 6;
		} else if (!strcmp(line, "call\n")) {
			printf("call %d\n", probe_me());
		} else if (!strcmp(line, "scratch\n")) {
			scratch_command();
		} else if (!strcmp(line, "quit\n")) {
			return 0;
		}
	}
	return 0;
}
