/*
 * What ptss pays inside a traced process, under ptrace (x86-64):
 *
 *   bench_inject syscall [-k K] [-r R]
 *       The cost of one injected system call (ptss_ptrace_syscall, getpid) into a stopped
 *       thread of a target, in two stops: the SIGTRAP of a breakpoint (what `ptss trace`
 *       injects into) and a PTRACE_INTERRUPT stop inside a blocking read (the kernel must
 *       restart the read afterwards, which costs one more stop). Baselines in the same
 *       run: one getpid system call made directly by this process, and one
 *       PTRACE_GETREGS + PTRACE_SETREGS round trip on the stopped target. R rounds of K
 *       operations each; every round prints ns per operation.
 *
 *   bench_inject fork [-p PAGES,...] [-r R]
 *       For each page count P: ptss_enable of P * 64 entries on a ptrace space (how many
 *       injections it makes, how long it takes, the pages the target's maps show), then R
 *       forks of the target, each child cleaned by ptss_fork (timed, its injections
 *       counted, its /proc/PID/maps checked for "memfd:ptss" afterwards). For comparison,
 *       R more forks are cleaned one page at a time (one injected munmap per page, plus
 *       one for the rest of the reservation), as a tracer whose pages are separate
 *       mappings would have to.
 *
 * The target is a fork of this program that reads one-byte commands on a pipe: 't' runs
 * an int3, 'f' forks a child that exits at once and waits for it, 'q' exits; it answers
 * each command on a second pipe. Being a fork, it has this program's code at the same
 * addresses, so the `syscall` instruction of bench_syscall_insn below is the one the
 * injections borrow (no search through the target's maps on each call; the first one of
 * ptss_fork does search, as a new space always does).
 *
 * Prints one JSON object per line; bench/tracer.py summarises them.
 */
#define _GNU_SOURCE
#include <ptss/ptrace.h>
#include <ptss/ptss.h>
#include <ptss/space.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A syscall instruction of our own; a forked target has it at the same address. */
__asm__(".text\n.globl bench_syscall_insn\n.type bench_syscall_insn, @function\n"
	"bench_syscall_insn:\n\tsyscall\n\tret\n.size bench_syscall_insn, .-bench_syscall_insn\n");
extern const char bench_syscall_insn[];

#define MAX_PAGES_LIST 16

struct target {
	pid_t pid;
	int cmd, reply; /* our ends of its two pipes */
};

static _Noreturn void die(const char *what)
{
	fprintf(stderr, "bench_inject: %s%s%s\n", what, errno ? ": " : "", errno ? strerror(errno) : "");
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static _Noreturn void target_main(int cmd, int reply)
{
	for (;;) {
		char c;
		ssize_t r = read(cmd, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r != 1 || c == 'q')
			_exit(0);
		if (c == 't') {
			__asm__ volatile("int3");
		} else if (c == 'f') {
			pid_t child = fork();
			if (child == 0)
				_exit(0);
			int status;
			while (child > 0 && waitpid(child, &status, 0) < 0 && errno == EINTR)
				;
		}
		if (write(reply, &c, 1) != 1)
			_exit(3);
	}
}

/* Is the target blocked in read(2)? (/proc/PID/syscall starts with "0 ".) */
static bool in_read(pid_t pid)
{
	char path[64], buf[32] = "";
	snprintf(path, sizeof(path), "/proc/%d/syscall", (int)pid);
	FILE *f = fopen(path, "r");
	bool yes = f && fgets(buf, sizeof(buf), f) && !strncmp(buf, "0 ", 2);
	if (f)
		fclose(f);
	return yes;
}

static void wait_in_read(pid_t pid)
{
	for (int tries = 0; !in_read(pid); tries++) {
		if (tries > 4000)
			die("the target never blocked in read");
		usleep(500);
	}
}

/* Resumes a stop of the target, handing over a signal that is its own. */
static void resume(pid_t tid, int status)
{
	int sig = 0;
	if ((status >> 16) == 0 && WSTOPSIG(status) != SIGTRAP && WSTOPSIG(status) != (SIGTRAP | 0x80))
		sig = WSTOPSIG(status);
	if (ptrace(PTRACE_CONT, tid, 0, sig))
		die("PTRACE_CONT");
}

/* Interrupts the target (blocked in read) and waits for its interrupt stop. */
static void stop_target(const struct target *t)
{
	wait_in_read(t->pid);
	if (ptrace(PTRACE_INTERRUPT, t->pid, 0, 0))
		die("PTRACE_INTERRUPT");
	for (;;) {
		int status;
		if (waitpid(t->pid, &status, __WALL) != t->pid || !WIFSTOPPED(status))
			die("the target went away");
		if ((status >> 16) == PTRACE_EVENT_STOP)
			return;
		resume(t->pid, status); /* a signal first (SIGCHLD): pass it, the interrupt stays due */
	}
}

static struct target target_start(unsigned long options)
{
	int cmd[2], reply[2];
	if (pipe(cmd) || pipe(reply))
		die("pipe");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(cmd[1]);
		close(reply[0]);
		target_main(cmd[0], reply[1]);
	}
	close(cmd[0]);
	close(reply[1]);
	struct target t = { .pid = pid, .cmd = cmd[1], .reply = reply[0] };
	if (ptrace(PTRACE_SEIZE, pid, 0, options))
		die("PTRACE_SEIZE");
	stop_target(&t);
	return t;
}

static void send_cmd(const struct target *t, char c)
{
	if (write(t->cmd, &c, 1) != 1)
		die("write to the target");
}

/*
 * Runs the target (resumed by the caller) until it answers the command: every stop of
 * the target on the way is resumed; a fork child's first stop goes to on_child, which
 * must leave it detached or dead.
 */
static void pump_until_reply(const struct target *t, void (*on_child)(pid_t child, void *arg), void *arg)
{
	for (;;) {
		int status;
		pid_t got;
		while ((got = waitpid(-1, &status, __WALL | WNOHANG)) > 0) {
			if (got != t->pid) {
				if (WIFSTOPPED(status) && (status >> 16) == PTRACE_EVENT_STOP && on_child)
					on_child(got, arg);
				else if (WIFSTOPPED(status))
					ptrace(PTRACE_DETACH, got, 0, 0);
				continue;
			}
			if (!WIFSTOPPED(status))
				die("the target exited");
			resume(got, status);
		}
		struct pollfd p = { .fd = t->reply, .events = POLLIN };
		if (poll(&p, 1, 1) == 1) {
			char c;
			if (read(t->reply, &c, 1) != 1)
				die("the target closed its pipe");
			return;
		}
	}
}

static void target_finish(struct target *t)
{
	if (ptrace(PTRACE_CONT, t->pid, 0, 0))
		die("PTRACE_CONT");
	send_cmd(t, 'q');
	for (;;) {
		int status;
		if (waitpid(t->pid, &status, __WALL) != t->pid)
			die("waitpid");
		if (WIFEXITED(status) || WIFSIGNALED(status))
			break;
		resume(t->pid, status); /* the exit stop */
	}
	close(t->cmd);
	close(t->reply);
}

static void print_round(const char *what, int round, unsigned k, uint64_t ns)
{
	printf("{\"type\":\"inject\",\"what\":\"%s\",\"round\":%d,\"ops\":%u,\"ns_per_op\":%.1f}\n",
	       what, round, k, (double)ns / k);
}

static void inject_rounds(const struct target *t, const char *what, int round, unsigned k)
{
	const long args[6] = { 0 };
	uint64_t t0 = now_ns();
	for (unsigned i = 0; i < k; i++) {
		long r = ptss_ptrace_syscall(t->pid, t->pid, (uint64_t)(uintptr_t)bench_syscall_insn, SYS_getpid, args);
		if (r != t->pid) {
			errno = r < 0 ? (int)-r : 0;
			die("an injected getpid returned something else");
		}
	}
	print_round(what, round, k, now_ns() - t0);
}

static int cmd_syscall(unsigned k, int rounds)
{
	struct target t = target_start(PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEEXIT);
	for (int r = 0; r < rounds; r++) {
		/* Direct: one getpid by this process (batched: a few hundred ns each at most). */
		unsigned direct = k * 100;
		uint64_t t0 = now_ns();
		for (unsigned i = 0; i < direct; i++)
			if (syscall(SYS_getpid) <= 0)
				die("getpid");
		print_round("direct_getpid", r, direct, now_ns() - t0);

		/* The target is in its interrupt stop inside read. */
		struct user_regs_struct regs;
		t0 = now_ns();
		for (unsigned i = 0; i < k; i++)
			if (ptrace(PTRACE_GETREGS, t.pid, 0, &regs) || ptrace(PTRACE_SETREGS, t.pid, 0, &regs))
				die("PTRACE_GETREGS/SETREGS");
		print_round("getregs_setregs", r, k, now_ns() - t0);

		inject_rounds(&t, "inject_in_read", r, k);

		/* A breakpoint stop: let it read 't', run its int3, and stop with SIGTRAP. */
		if (ptrace(PTRACE_CONT, t.pid, 0, 0))
			die("PTRACE_CONT");
		send_cmd(&t, 't');
		int status;
		for (;;) {
			if (waitpid(t.pid, &status, __WALL) != t.pid || !WIFSTOPPED(status))
				die("the target went away");
			if ((status >> 16) == 0 && WSTOPSIG(status) == SIGTRAP)
				break;
			resume(t.pid, status);
		}
		inject_rounds(&t, "inject_at_breakpoint", r, k);
		if (ptrace(PTRACE_CONT, t.pid, 0, 0)) /* the SIGTRAP suppressed, as a tracer does */
			die("PTRACE_CONT");
		pump_until_reply(&t, NULL, NULL);
		stop_target(&t);
		fflush(stdout);
	}
	target_finish(&t);
	return 0;
}

/* ---- fork clean-up ---- */

/* The pages of "memfd:ptss" mappings in pid's maps, all and read+execute ones. */
static void ptss_maps(pid_t pid, uint64_t *all, uint64_t *rx)
{
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		die("cannot read a target's maps");
	*all = *rx = 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		char perms[8];
		if (!strstr(line, "memfd:ptss") || sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3)
			continue;
		uint64_t pages = (hi - lo) / (uint64_t)sysconf(_SC_PAGESIZE);
		*all += pages;
		if (perms[0] == 'r' && perms[2] == 'x')
			*rx += pages;
	}
	fclose(f);
}

struct fork_run {
	ptss_proc *proc;
	uint64_t base;        /* the reservation in the target */
	size_t reserve_size;
	uint64_t pages;
	bool per_page;        /* clean the child page by page instead of with ptss_fork */
	uint64_t ns;
	unsigned long injections;
	bool had_pages, clean;
	bool done;
};

static void clean_child(pid_t child, void *arg)
{
	struct fork_run *run = arg;
	uint64_t all, rx;
	ptss_maps(child, &all, &rx);
	run->had_pages = rx == run->pages;
	int err = 0;
	if (!run->per_page) {
		ptss_space *cs = ptss_space_ptrace_new(child, child);
		if (!cs)
			die("ptss_space_ptrace_new on the fork child");
		uint64_t t0 = now_ns();
		err = ptss_fork(run->proc, cs);
		run->ns = now_ns() - t0;
		run->injections = ptss_space_ptrace_injections(cs);
		ptss_space_free(cs); /* the child has no reservation of its own */
	} else {
		/* One injection per page, then one for the rest of the reservation. The first one
		 * finds a syscall instruction in the child, as ptss_fork's first injection does. */
		long page = sysconf(_SC_PAGESIZE);
		uint64_t t0 = now_ns();
		run->injections = 0;
		for (uint64_t i = 0; i <= run->pages && !err; i++) {
			uint64_t len = i < run->pages ? (uint64_t)page : run->reserve_size - run->pages * (uint64_t)page;
			if (len == 0)
				break; /* the pages fill the whole reservation */
			long args[6] = { (long)(run->base + i * (uint64_t)page), (long)len };
			long r = ptss_ptrace_syscall(child, child, i ? (uint64_t)(uintptr_t)bench_syscall_insn : 0,
						     SYS_munmap, args);
			run->injections++;
			err = (int)r;
		}
		run->ns = now_ns() - t0;
	}
	if (err) {
		errno = -err;
		die("cleaning the fork child");
	}
	ptss_maps(child, &all, &rx);
	run->clean = all == 0;
	if (ptrace(PTRACE_DETACH, child, 0, 0)) /* it runs on, untraced, and exits */
		die("PTRACE_DETACH");
	run->done = true;
}

static int cmd_fork(const unsigned long *pages_list, int npages, int reps)
{
	struct target t = target_start(PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEEXIT | PTRACE_O_TRACEFORK);
	ptss_space *space = ptss_space_ptrace_new(t.pid, t.pid);
	if (!space)
		die("ptss_space_ptrace_new");
	long page = sysconf(_SC_PAGESIZE);
	for (int pi = 0; pi < npages; pi++) {
		uint64_t pages = pages_list[pi];
		ptss_proc *proc = ptss_proc_new(space, NULL);
		if (!proc)
			die("ptss_proc_new");
		size_t per_page = (size_t)page / ptss_entry_size(proc);
		size_t n = (size_t)pages * per_page;
		ptss_entry **out = malloc(n * sizeof(*out));
		if (!out)
			die("malloc");
		unsigned long inj0 = ptss_space_ptrace_injections(space);
		uint64_t t0 = now_ns();
		int err = ptss_enable(proc, n, out);
		uint64_t enable_ns = now_ns() - t0;
		if (err) {
			errno = -err;
			die("ptss_enable");
		}
		unsigned long enable_inj = ptss_space_ptrace_injections(space) - inj0;
		struct ptss_stats st;
		ptss_stats_get(proc, &st);
		uint64_t all, rx, base = UINT64_MAX;
		ptss_maps(t.pid, &all, &rx);
		for (size_t i = 0; i < n; i++)
			if (ptss_entry_addr(proc, out[i]) < base)
				base = ptss_entry_addr(proc, out[i]);
		base &= ~((uint64_t)page - 1);
		printf("{\"type\":\"enable\",\"pages\":%llu,\"entries\":%zu,\"injections\":%lu,\"ns\":%llu,"
		       "\"stats_pages\":%llu,\"maps_rx_pages\":%llu,\"maps_pages\":%llu}\n",
		       (unsigned long long)pages, n, enable_inj, (unsigned long long)enable_ns,
		       (unsigned long long)st.pages, (unsigned long long)rx, (unsigned long long)all);

		for (int r = 0; r < 2 * reps; r++) {
			struct fork_run run = {
				.proc = proc, .base = base, .reserve_size = (size_t)all * (size_t)page,
				.pages = pages, .per_page = r % 2 == 1,
			};
			if (ptrace(PTRACE_CONT, t.pid, 0, 0))
				die("PTRACE_CONT");
			send_cmd(&t, 'f');
			pump_until_reply(&t, clean_child, &run);
			if (!run.done)
				die("no fork child was seen");
			printf("{\"type\":\"fork\",\"how\":\"%s\",\"pages\":%llu,\"rep\":%d,\"ns\":%llu,"
			       "\"injections\":%lu,\"child_had_pages\":%s,\"child_clean\":%s}\n",
			       run.per_page ? "per_page" : "ptss_fork", (unsigned long long)pages, r / 2,
			       (unsigned long long)run.ns, run.injections, run.had_pages ? "true" : "false",
			       run.clean ? "true" : "false");
			stop_target(&t);
		}
		ptss_space_ptrace_use_thread(space, t.pid);
		ptss_proc_free(proc); /* detach: one unmap */
		ptss_maps(t.pid, &all, &rx);
		if (all)
			die("pages left in the target after ptss_proc_free");
		free(out);
		fflush(stdout);
	}
	ptss_space_free(space);
	target_finish(&t);
	return 0;
}

static _Noreturn void usage(void)
{
	fprintf(stderr, "usage: bench_inject syscall [-k K] [-r ROUNDS]\n"
			"       bench_inject fork [-p PAGES,...] [-r REPS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	bool fork_mode = !strcmp(argv[1], "fork");
	if (!fork_mode && strcmp(argv[1], "syscall"))
		usage();
	unsigned k = 200;
	int rounds = 15;
	unsigned long pages[MAX_PAGES_LIST] = { 1, 10, 100, 1000 };
	int npages = 4;
	int opt;
	optind = 2;
	while ((opt = getopt(argc, argv, "k:r:p:")) != -1) {
		char *s, *end;
		switch (opt) {
		case 'k': k = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'r': rounds = atoi(optarg); break;
		case 'p':
			npages = 0;
			for (s = optarg; *s && npages < MAX_PAGES_LIST; s = *end ? end + 1 : end) {
				pages[npages++] = strtoul(s, &end, 10);
				if (end == s || pages[npages - 1] == 0)
					usage();
			}
			break;
		default: usage();
		}
	}
	if (k == 0 || rounds <= 0 || npages == 0)
		usage();
	setvbuf(stdout, NULL, _IOLBF, 0);
	return fork_mode ? cmd_fork(pages, npages, rounds) : cmd_syscall(k, rounds);
}
