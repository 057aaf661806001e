/*
 * A multithreaded target for the ptrace space's tests. Worker threads block in read() on
 * a pipe; the main thread reads commands from stdin, one per line, and answers on stdout:
 *   spawn K    start K more workers                       -> "spawned K"
 *   wake K     write K bytes to the workers' pipe          -> each woken worker exits
 *   fork       fork a child that prints and exits 7        -> "child 7"
 *   exec       re-execute this program with 2 workers      -> "ready 2" from the new image
 *   call       ret = probe_me(); print it                   -> "call 42"
 *   quit       exit 0
 * usage: ptrace_target WORKERS [seccomp-kill|seccomp-errno|seccomp-errno-exec]
 */
#define _GNU_SOURCE
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int work_pipe[2];
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

/* Forbids memfd_create, with the action given. */
static void install_filter(unsigned action)
{
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_memfd_create, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, action),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(code) / sizeof(code[0]), .filter = code };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		_exit(5);
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
	if (pipe(work_pipe))
		return 1;
	spawn(workers);
	printf("ready %d\n", workers);
	char line[64];
	while (fgets(line, sizeof(line), stdin)) {
		int k = 0;
		if (sscanf(line, "spawn %d", &k) == 1) {
			spawn(k);
			printf("spawned %d\n", k);
		} else if (sscanf(line, "wake %d", &k) == 1) {
			while (k-- > 0)
				if (write(work_pipe[1], "x", 1) != 1)
					return 1;
		} else if (!strcmp(line, "fork\n")) {
			pid_t pid = fork();
			if (pid == 0) {
				printf("in child\n");
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
		} else if (!strcmp(line, "quit\n")) {
			return 0;
		}
	}
	return 0;
}
