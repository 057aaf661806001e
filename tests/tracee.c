#define _GNU_SOURCE
#include "tracee.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void add_tid(struct tracee *t, pid_t tid)
{
	for (int i = 0; i < t->ntids; i++)
		if (t->tids[i] == tid)
			return;
	if (t->ntids < TRACEE_MAX_THREADS)
		t->tids[t->ntids++] = tid;
}

static void remove_tid(struct tracee *t, pid_t tid)
{
	for (int i = 0; i < t->ntids; i++)
		if (t->tids[i] == tid) {
			t->tids[i] = t->tids[--t->ntids];
			return;
		}
}

static bool read_some(struct tracee *t, int timeout_ms)
{
	struct pollfd p = { .fd = t->from, .events = POLLIN };
	if (poll(&p, 1, timeout_ms) <= 0)
		return false;
	ssize_t n = read(t->from, t->out + t->outlen, sizeof(t->out) - 1 - t->outlen);
	if (n <= 0)
		return false;
	t->outlen += (size_t)n;
	t->out[t->outlen] = 0;
	return true;
}

/* Pops the first complete line starting with prefix; earlier lines are dropped. */
static bool take_line(struct tracee *t, const char *prefix, char *line, size_t len)
{
	char *start = t->out, *nl;
	while ((nl = memchr(start, '\n', t->outlen - (size_t)(start - t->out)))) {
		bool match = !strncmp(start, prefix, strlen(prefix));
		if (match)
			snprintf(line, len, "%.*s", (int)(nl - start), start);
		start = nl + 1;
		if (match) {
			t->outlen -= (size_t)(start - t->out);
			memmove(t->out, start, t->outlen);
			t->out[t->outlen] = 0;
			return true;
		}
	}
	return false;
}

static int wait_stopped(pid_t tid)
{
	int status;
	for (;;) {
		if (waitpid(tid, &status, __WALL) < 0)
			return -errno;
		if (WIFSTOPPED(status) && (status >> 16) == PTRACE_EVENT_STOP)
			return 0;
		if (!WIFSTOPPED(status))
			return -ESRCH;
		/* Another stop came first (a signal): pass it on and wait again. */
		int sig = (status >> 16) ? 0 : WSTOPSIG(status);
		ptrace(PTRACE_CONT, tid, 0, sig);
		ptrace(PTRACE_INTERRUPT, tid, 0, 0);
	}
}

/* Is every thread of pid blocked in read(2)? (/proc/PID/task/TID/syscall starts "0 ".) */
static bool all_in_read(pid_t pid)
{
	char path[320], buf[64];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return false;
	bool all = true;
	struct dirent *de;
	while (all && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/syscall", (int)pid, de->d_name);
		FILE *f = fopen(path, "r");
		all = f && fgets(buf, sizeof(buf), f) && !strncmp(buf, "0 ", 2);
		if (f)
			fclose(f);
	}
	closedir(d);
	return all;
}

int tracee_start(struct tracee *t, char *const argv[])
{
	int in[2], out[2];
	if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC))
		return -errno;
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		execv(argv[0], argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	t->pid = pid;
	t->to = in[1];
	t->from = out[0];
	t->ntids = 0;
	t->outlen = 0;
	char line[64];
	while (!take_line(t, "ready", line, sizeof(line)))
		if (!read_some(t, 10000))
			return -ETIMEDOUT;

	/* Let every thread reach its blocking read, so tests start from a known state. */
	for (int tries = 0; tries < 400 && !all_in_read(pid); tries++)
		usleep(5000);

	/* Seize every thread; repeat until the task list holds no thread we do not know. */
	bool grew = true;
	while (grew) {
		grew = false;
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
		DIR *d = opendir(path);
		if (!d)
			return -errno;
		struct dirent *de;
		while ((de = readdir(d))) {
			pid_t tid = atoi(de->d_name);
			bool known = false;
			for (int i = 0; i < t->ntids; i++)
				known |= t->tids[i] == tid;
			if (tid <= 0 || known)
				continue;
			if (ptrace(PTRACE_SEIZE, tid, 0, TRACE_OPTIONS) == 0) {
				add_tid(t, tid);
				grew = true;
			}
		}
		closedir(d);
	}
	return tracee_stop_all(t);
}

static bool handle(struct tracee *t, pid_t tid, int status);

/* Interrupts every thread and handles events until each live thread is in its
 * interrupt stop; threads born meanwhile are stopped too, threads that exit are gone. */
int tracee_stop_all(struct tracee *t)
{
	bool stopped[TRACEE_MAX_THREADS] = { false };
	t->stopping = true;
	for (int i = 0; i < t->ntids; i++)
		ptrace(PTRACE_INTERRUPT, t->tids[i], 0, 0);
	for (;;) {
		int pending = 0;
		for (int i = 0; i < t->ntids; i++)
			pending += !stopped[i];
		if (!pending)
			break;
		int status;
		pid_t tid = waitpid(-1, &status, __WALL);
		if (tid < 0) {
			t->stopping = false;
			return -errno;
		}
		int at = -1;
		for (int i = 0; i < t->ntids; i++)
			if (t->tids[i] == tid)
				at = i;
		if (at >= 0 && WIFSTOPPED(status) && (status >> 16) == PTRACE_EVENT_STOP) {
			stopped[at] = true;
			continue;
		}
		int before = t->ntids;
		if (!handle(t, tid, status) && t->ntids == 0)
			break;
		/* handle() may have removed a thread (moving the last into its slot) or added
		 * one, which is left stopped while stopping; recompute the flags by position. */
		if (t->ntids < before && at >= 0)
			stopped[at] = stopped[t->ntids];
		for (int i = before; i < t->ntids; i++)
			stopped[i] = true;
	}
	t->stopping = false;
	return 0;
}

int tracee_cont_all(struct tracee *t)
{
	for (int i = 0; i < t->ntids; i++)
		if (ptrace(PTRACE_CONT, t->tids[i], 0, 0))
			return -errno;
	return 0;
}

int tracee_send(struct tracee *t, const char *line)
{
	size_t len = strlen(line);
	return write(t->to, line, len) == (ssize_t)len ? 0 : -EIO;
}

/* Handles one ptrace event; returns false when the whole process is gone. */
static bool handle(struct tracee *t, pid_t tid, int status)
{
	if (WIFEXITED(status) || WIFSIGNALED(status)) {
		remove_tid(t, tid);
		if (t->on_exit)
			t->on_exit(t, tid, t->arg);
		return tid != t->pid;
	}
	int event = status >> 16;
	unsigned long msg = 0;
	switch (event) {
	case PTRACE_EVENT_CLONE:
		ptrace(PTRACE_GETEVENTMSG, tid, 0, &msg);
		wait_stopped((pid_t)msg);
		add_tid(t, (pid_t)msg);
		if (t->on_thread)
			t->on_thread(t, (pid_t)msg, t->arg);
		if (!t->stopping)
			ptrace(PTRACE_CONT, (pid_t)msg, 0, 0);
		break;
	case PTRACE_EVENT_FORK:
	case PTRACE_EVENT_VFORK:
		ptrace(PTRACE_GETEVENTMSG, tid, 0, &msg);
		wait_stopped((pid_t)msg);
		if (t->on_fork_child)
			t->on_fork_child(t, (pid_t)msg, t->arg);
		else
			ptrace(PTRACE_DETACH, (pid_t)msg, 0, 0);
		break;
	case PTRACE_EVENT_EXEC:
	{
		/* Every other thread is gone; the exec'ing one now has the process's id. Their
		 * exits are reported after the exec, as a tracer may well learn of them. */
		pid_t gone[TRACEE_MAX_THREADS];
		int ngone = 0;
		for (int i = 0; i < t->ntids; i++)
			if (t->tids[i] != t->pid)
				gone[ngone++] = t->tids[i];
		t->ntids = 0;
		add_tid(t, t->pid);
		if (t->on_exec)
			t->on_exec(t, t->arg);
		for (int i = 0; i < ngone && t->on_exit; i++)
			t->on_exit(t, gone[i], t->arg);
		tid = t->pid;
		break;
	}
	case PTRACE_EVENT_EXIT:
	case PTRACE_EVENT_STOP:
	case 0:
		break;
	}
	int sig = 0;
	if (event == 0 && WIFSTOPPED(status) && WSTOPSIG(status) != SIGTRAP && WSTOPSIG(status) != (SIGTRAP | 0x80))
		sig = WSTOPSIG(status);
	ptrace(PTRACE_CONT, tid, 0, sig);
	return true;
}

void tracee_pump(struct tracee *t, int ms)
{
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		int status;
		pid_t tid = waitpid(-1, &status, __WALL | WNOHANG);
		if (tid > 0)
			handle(t, tid, status);
		else
			read_some(t, 1);
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < ms);
}

bool tracee_expect(struct tracee *t, const char *prefix, char *line, size_t len, int seconds)
{
	time_t end = time(NULL) + seconds;
	while (time(NULL) < end) {
		if (take_line(t, prefix, line, len))
			return true;
		int status;
		pid_t tid = waitpid(-1, &status, __WALL | WNOHANG);
		if (tid > 0) {
			if (!handle(t, tid, status) && !take_line(t, prefix, line, len))
				return read_some(t, 100) && take_line(t, prefix, line, len);
			continue;
		}
		read_some(t, 5);
	}
	return false;
}

int tracee_finish(struct tracee *t)
{
	for (int i = 0; i < t->ntids; i++)
		ptrace(PTRACE_DETACH, t->tids[i], 0, 0);
	t->ntids = 0;
	tracee_send(t, "quit\n");
	int status;
	if (waitpid(t->pid, &status, 0) != t->pid)
		return -errno;
	close(t->to);
	close(t->from);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void tracee_kill(struct tracee *t)
{
	kill(t->pid, SIGKILL);
	int status;
	pid_t tid;
	while ((tid = waitpid(-1, &status, __WALL)) > 0)
		if (WIFSTOPPED(status)) /* an exit stop: let it finish dying */
			ptrace(PTRACE_CONT, tid, 0, 0);
	close(t->to);
	close(t->from);
}
