/*
 * The public API of libptss-probe (<ptss/probe.h>): options and their defaults, probes
 * checked as they are added, start/attach with setup, the run, the end of the target.
 * Outcomes of the engine (enum outcome) become the PTSS_TRACER_E* classes here.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int error_of(int outcome)
{
	switch (outcome) {
	case OUT_OK: return 0;
	case OUT_PROBE: return PTSS_TRACER_EPROBE;
	case OUT_ATTACH: return PTSS_TRACER_EATTACH;
	default: return PTSS_TRACER_EFAILED;
	}
}

ptss_tracer *ptss_tracer_new(const struct ptss_tracer_opts *opts)
{
	struct ptss_tracer_opts o = PTSS_TRACER_OPTS();
	if (opts) {
		if (opts->sz < offsetof(struct ptss_tracer_opts, entry_size) + sizeof(size_t)) {
			errno = EINVAL;
			return NULL;
		}
		/* A newer caller's fields that this library does not know must be zero. */
		for (size_t i = sizeof(o); i < opts->sz; i++)
			if (((const unsigned char *)opts)[i]) {
				errno = EINVAL;
				return NULL;
			}
		memcpy(&o, opts, opts->sz < sizeof(o) ? opts->sz : sizeof(o));
		o.sz = sizeof(o);
	}
	if (!o.entry_size)
		o.entry_size = PTSS_ENTRY_SIZE_DEFAULT;
	if (o.on_call)
		o.latency = true;
	if (o.entry_size < 16 || o.entry_size > 4096 || (o.entry_size & (o.entry_size - 1))) {
		errno = EINVAL;
		return NULL;
	}
	struct tracer *t = calloc(1, sizeof(*t));
	if (!t) {
		errno = ENOMEM;
		return NULL;
	}
	t->opts = o;
	return (ptss_tracer *)t;
}

int ptss_tracer_add_probe(ptss_tracer *tr, const char *arg)
{
	struct tracer *t = (struct tracer *)tr;
	if (!t || !arg)
		return -EINVAL;
	if (t->begun)
		return -EBUSY;
	struct spec *specs = realloc(t->specs, ((size_t)t->nspecs + 1) * sizeof(*specs));
	if (!specs)
		return -ENOMEM;
	t->specs = specs;
	struct spec *sp = &specs[t->nspecs];
	*sp = (struct spec){ 0 };
	char err[256];
	if (probe_spec_parse(arg, &sp->parsed, err, sizeof(err))) {
		say_error(t, "bad probe '%s': %s", arg, err);
		return PTSS_TRACER_ESPEC;
	}
	/* The vDSO is the kernel's code, mapped from no file: refused before anything runs. */
	if (probe_spec_is_vdso(&sp->parsed)) {
		say_error(t, "probe %s: the vDSO cannot be probed (kernel-provided code, no file); "
			  "probe the libc function that calls it, e.g. libc:%s", arg, sp->parsed.func);
		probe_spec_free(&sp->parsed);
		return PTSS_TRACER_EPROBE;
	}
	/* A module named by path must be an ELF file now, whenever it gets mapped. */
	struct sym_file *f;
	if (sp->parsed.module_is_path) {
		if (sym_open(sp->parsed.module, SYM_HEADERS_ONLY, &f, err, sizeof(err)) < 0) {
			say_error(t, "probe %s: %s", arg, err);
			probe_spec_free(&sp->parsed);
			return PTSS_TRACER_EPROBE;
		}
		sym_close(f);
	}
	if (!(sp->arg = strdup(arg))) {
		probe_spec_free(&sp->parsed);
		return -ENOMEM;
	}
	t->nspecs++;
	return 0;
}

/* After start or attach got hold of the target: setup, or everything let go untouched. */
static int begin(struct tracer *t, int rc)
{
	if (rc == 0)
		rc = target_setup(t);
	if (rc) {
		/* The started command never runs: killed while still stopped at its exec, before
		 * any detach could let it go on. */
		if (t->child && !t->child_exited)
			kill(t->child, SIGKILL);
		detach_all(t, true); /* whatever was seized goes back untouched */
		if (t->child && !t->child_exited)
			waitpid(t->child, NULL, 0);
		return error_of(rc);
	}
	target_resume_all(t);
	return 0;
}

int ptss_tracer_start(ptss_tracer *tr, char *const argv[])
{
	struct tracer *t = (struct tracer *)tr;
	if (!t || !argv || !argv[0])
		return -EINVAL;
	if (t->begun)
		return -EBUSY;
	t->begun = true;
	if (!(t->command_name = strdup(argv[0])))
		return -ENOMEM;
	int rc = target_start(t, argv);
	if (rc == 0 && !t->procs)
		rc = OUT_ATTACH;
	else if (rc > 0 && t->child_exited && !t->child)
		return PTSS_TRACER_EEXITED; /* it never reached its exec */
	return begin(t, rc);
}

int ptss_tracer_attach(ptss_tracer *tr, pid_t pid)
{
	struct tracer *t = (struct tracer *)tr;
	if (!t || pid <= 0)
		return -EINVAL;
	if (t->begun)
		return -EBUSY;
	t->begun = true;
	t->pid = pid;
	char path[64], comm[64];
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	FILE *f = fopen(path, "r");
	if (f && fgets(comm, sizeof(comm), f)) {
		comm[strcspn(comm, "\n")] = 0;
		t->command_name = strdup(comm);
	}
	if (f)
		fclose(f);
	return begin(t, target_attach(t, pid));
}

int ptss_tracer_run(ptss_tracer *tr, const struct ptss_run_opts *opts)
{
	struct tracer *t = (struct tracer *)tr;
	struct ptss_run_opts o = PTSS_RUN_OPTS();
	if (!t)
		return -EINVAL;
	if (opts) {
		memcpy(&o, opts, opts->sz && opts->sz < sizeof(o) ? opts->sz : sizeof(o));
		o.sz = sizeof(o);
	}
	int rc = loop_run(t, &o);
	if (rc == -ESRCH)
		return 0; /* a request on a task that was just killed: its end is the caller's */
	if (rc < 0) {
		say_error(t, "tracing failed: %s", strerror(-rc));
		return PTSS_TRACER_EFAILED;
	}
	return error_of(rc);
}

int ptss_tracer_step(ptss_tracer *tr, int timeout_ms)
{
	struct tracer *t = (struct tracer *)tr;
	if (!t)
		return -EINVAL;
	int rc = loop_step(t, timeout_ms);
	if (rc == -ECHILD)
		return PTSS_TRACER_EEXITED;
	if (rc == OUT_PROBE)
		return PTSS_TRACER_EPROBE;
	return rc;
}

int ptss_tracer_detach(ptss_tracer *tr)
{
	struct tracer *t = (struct tracer *)tr;
	if (!t)
		return -EINVAL;
	detach_all(t, false);
	queue_free(t);
	return 0;
}

/* Is PID traced by us? A zombie still is, until reaped. */
static bool traced_by_us(pid_t pid)
{
	char state;
	return target_tracer(pid, &state) == getpid();
}

/* Attached: did the process end while traced, rather than being detached? The loop may
 * have left its last status behind (it ends when no traced thread is left): collect it, and
 * the statuses of its threads that come first. Never waits for a process let go. */
static void reap_attached(struct tracer *t)
{
	for (int tries = 0; !t->attached_ended && tries < 1000;) {
		int status;
		pid_t pid = waitpid(-1, &status, __WALL | WNOHANG);
		if (pid < 0)
			break; /* nothing traced is left */
		if (pid > 0) {
			if (WIFSTOPPED(status)) {
				ptrace(PTRACE_CONT, pid, 0, 0);
			} else if (pid == t->pid) {
				t->attached_ended = true;
				t->attached_status = status;
			}
			continue;
		}
		if (!traced_by_us(t->pid))
			break; /* detached, or reaped */
		struct timespec ms = { 0, 10 * 1000 * 1000 };
		nanosleep(&ms, NULL);
		tries++;
	}
}

/* The started command: its status, once it is done (also after a detach). Reaped with
 * __WALL: a traced thread's exit must be collected before its leader's. */
static int reap_child(struct tracer *t)
{
	int status = t->child_status;
	while (!t->child_exited) {
		pid_t pid = waitpid(-1, &status, __WALL);
		if (pid < 0) {
			status = 0;
			break;
		}
		if (pid == t->child && (WIFEXITED(status) || WIFSIGNALED(status)))
			t->child_exited = true;
		else if (WIFSTOPPED(status))
			ptrace(PTRACE_CONT, pid, 0, 0);
	}
	return status;
}

int ptss_tracer_wait(ptss_tracer *tr, int *status)
{
	struct tracer *t = (struct tracer *)tr;
	if (!t || !status)
		return -EINVAL;
	if (t->child) {
		*status = reap_child(t);
		return 1;
	}
	if (!t->pid) { /* the command ended before its exec */
		*status = t->child_status;
		return t->child_exited;
	}
	reap_attached(t);
	if (!t->attached_ended)
		return 0;
	*status = t->attached_status;
	return 1;
}

int ptss_tracer_check_armed(ptss_tracer *tr)
{
	struct tracer *t = (struct tracer *)tr;
	int rc = 0;
	for (int i = 0; t && i < t->nspecs; i++) {
		struct spec *sp = &t->specs[i];
		if (sp->armed)
			continue;
		rc = PTSS_TRACER_EPROBE;
		if (sp->said)
			continue; /* its error was said when it happened */
		if (sp->parsed.module_is_path)
			say_error(t, "probe %s was never armed: %s was never loaded", sp->arg, sp->parsed.module);
		else if (sp->parsed.module)
			say_error(t, "probe %s was never armed: no library named '%s' was loaded", sp->arg,
				  sp->parsed.module);
		else
			say_error(t, "probe %s was never armed", sp->arg);
	}
	return rc;
}

struct ptss_trace_snapshot *ptss_tracer_snapshot(const ptss_tracer *tr)
{
	if (!tr) {
		errno = EINVAL;
		return NULL;
	}
	return count_snapshot((const struct tracer *)tr);
}

void ptss_tracer_free(ptss_tracer *tr)
{
	struct tracer *t = (struct tracer *)tr;
	if (!t)
		return;
	if (t->procs)
		detach_all(t, false);
	queue_free(t);
	for (int i = 0; i < t->nspecs; i++) {
		probe_spec_free(&t->specs[i].parsed);
		free(t->specs[i].arg);
	}
	free(t->specs);
	counts_free(t);
	free(t->threads);
	free(t->command_name);
	free(t);
}
