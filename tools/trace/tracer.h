/*
 * The probe engine of `ptss trace`: processes and threads under ptrace, probe sites,
 * hits executed out of line in per-thread scratch entries, and the counts.
 *
 *   settings  what the user asked for (cli.c)
 *   rows      one per reported probe ("MODULE:FUNC"), shared by every traced process
 *   process   one traced address space: its scratch (a ptss_proc over a ptrace space)
 *             and its armed sites (one per probed address, sorted)
 *   thread    one traced task: its process, its scratch entry, its last hit
 *
 * The tracer is single-threaded: only the thread that attached may issue ptrace requests.
 */
#ifndef PTSS_TRACE_TRACER_H
#define PTSS_TRACE_TRACER_H

#include <ptss/ptrace.h>
#include <ptss/ptss.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/user.h>

#include "probe_spec.h"
#include "relocate.h"

/* Exit statuses of ptss itself (documented in ptss(1)). */
enum {
	PTSS_EXIT_OK = 0,
	PTSS_EXIT_USAGE = 2,   /* bad command line */
	PTSS_EXIT_PROBE = 3,   /* a probe cannot be placed: unknown function/module, refused instruction, not an ELF */
	PTSS_EXIT_ATTACH = 4,  /* cannot attach or start: no such process, permission, already traced */
	PTSS_EXIT_FAILURE = 5, /* tracing failed midway; the target was detached; or the report was lost */
	PTSS_EXIT_KILLED = 6,  /* -p: the attached process was killed by a signal while traced */
};

enum trace_format { FORMAT_TABLE, FORMAT_JSON };

struct settings {
	char **probes;         /* PROBE arguments */
	int nprobes;
	pid_t pid;             /* -p: attach; 0: start command */
	char **command;        /* after "--" */
	bool follow;           /* -f */
	const char *output;    /* -o FILE; NULL: stderr */
	enum trace_format format;
	double interval;       /* --interval SECONDS; 0: none */
	double duration;       /* --duration SECONDS; 0: none */
	bool quiet;            /* -q: no informational messages */
	size_t entry_size;     /* --entry-size (default 64) */
	bool no_scratch;       /* --no-scratch: every hit takes the fallback (for comparison) */
};

/* cli.c */
int settings_parse(struct settings *s, int argc, char **argv); /* PTSS_EXIT_* or -1 to go on */

/* A thread's hits of one row. */
struct thread_count { pid_t tid; uint64_t hits; };

struct row {
	size_t index;          /* in tracer.rows */
	char *probe;           /* "MODULE:FUNC" as reported */
	char *module;          /* the module's path */
	uint64_t addr;         /* runtime address in the first process it was armed in */
	uint64_t hits;
	struct thread_count *threads; /* folded counts of threads that are gone */
	size_t nthreads, cap;
};

struct site {
	uint64_t addr;
	uint8_t orig;          /* the byte under int3 */
	bool internal;         /* a site of ptss's own (program entry, dlopen notice) */
	struct reloc_plan plan;
	struct row *row;       /* NULL when internal */
};

struct spec {              /* a PROBE argument */
	char *arg;
	struct probe_spec parsed;
	bool armed, said, warned; /* placed somewhere; an error said; "waits for dlopen" said */
};

struct process {
	pid_t pid;
	int mem;               /* /proc/PID/mem */
	ptss_space *space;
	ptss_proc *scratch;
	struct site *sites;    /* sorted by addr */
	size_t nsites, cap;
	bool *resolved;        /* per spec: placed in this image */
	uint64_t entry_site;   /* the internal site at the program's entry, or 0 */
	uint64_t notice_site;  /* the internal site at ld.so's _dl_debug_state, or 0 */
	bool started;          /* ptss started it: its exit status is ptss's */
	bool before_entry;     /* a fresh image, its program entry not reached yet */
	bool exec_seen;        /* an image after the first one */
	bool refusal_said;     /* threads got no entry, and the user was told why */
	int nthreads;
	struct process *next;
};

struct thread {
	pid_t tid;
	struct process *proc;
	ptss_entry *entry;     /* NULL: no entry could be claimed; hits use the fallback */
	uint64_t *counts;      /* hits per row index */
	size_t ncounts;
	bool in_entry;         /* its last hit ran in the entry: it may still be there */
	struct reloc_plan plan;/* that hit's plan, and what the hit did */
	struct reloc_hit hit;
	struct row *hit_row;   /* that hit's row while in_entry: counted, to be taken back if
	                          the hit is unwound before its instruction ran */
	bool stopping;         /* interrupted by ptss, its stop not yet seen */
	bool held;             /* stopped by ptss for another thread's fallback */
	bool held_by_interrupt;/* ... in the interrupt stop itself */
	bool stale_interrupt;  /* an interrupt stop is still due: swallow it */
	bool queued;           /* stopped, its stop deferred in the loop's queue */
	int detach_sig;        /* a signal to hand over when detaching */
};

struct tracer {
	struct settings *set;
	FILE *out;
	struct spec *specs;
	int nspecs;
	struct row **rows;
	size_t nrows;
	struct process *procs;
	struct thread **threads; /* open addressing by tid */
	size_t tcap, tcount;
	pid_t child;           /* the command ptss started, or 0 */
	int child_status;      /* its wait status, once it exited */
	bool child_exited;
	int attached_status;   /* -p: the attached process's wait status, if it ended while traced */
	bool attached_ended;
	uint64_t fallbacks;
	uint64_t claim_failures;
	uint64_t pages_hw, entries_hw, claimed_hw; /* scratch figures, summed over processes */
	const char *command_name;
};

/* target.c: tables, memory, attach and start */
struct thread *thread_find(struct tracer *t, pid_t tid);
struct thread *thread_add(struct tracer *t, struct process *p, pid_t tid);
void thread_remove(struct tracer *t, struct thread *th);
struct process *process_new(struct tracer *t, pid_t pid);
void process_free(struct tracer *t, struct process *p);
int mem_read(struct process *p, uint64_t addr, void *buf, size_t len);
int mem_write(struct process *p, uint64_t addr, const void *buf, size_t len);
int target_attach(struct tracer *t, pid_t pid); /* every thread seized and stopped */
int target_start(struct tracer *t, char **argv);
void scratch_note(struct tracer *t, struct process *p); /* fold its figures into the totals */
void thread_claim(struct tracer *t, struct thread *th);
/* nthreads of p got no entry (claim or enable said err): counted, and said once per image */
void scratch_refused(struct tracer *t, struct process *p, size_t nthreads, int err);

/* sites.c: placing probes in an image */
int sites_place(struct tracer *t, struct process *p, bool fatal); /* fatal: errors end the trace */
int sites_arm_internal(struct tracer *t, struct process *p, uint64_t addr);
struct site *site_find(struct process *p, uint64_t addr);
void sites_disarm_all(struct process *p);
int sites_copy(struct process *child, const struct process *parent);
void sites_clear(struct process *p);
void sites_remove(struct process *p, uint64_t addr); /* restores the byte */

/* hit.c: one probe hit, signals in entries, the no-entry fallback */
int hit_handle(struct tracer *t, struct thread *th, struct user_regs_struct *regs, const struct site *s);
void hit_count(struct tracer *t, struct thread *th, struct row *r, int64_t delta);
/* Out of its entry, back into the original code: regs changed? keep: at detach */
bool hit_unwind(struct tracer *t, struct thread *th, struct user_regs_struct *regs, bool keep);
void thread_fold_counts(struct tracer *t, struct thread *th);

/* loop.c: the event loop and the lifecycle */
int loop_run(struct tracer *t);
void loop_defer(struct tracer *t, pid_t tid, int status); /* handle this stop later */
void loop_pass_signal(struct tracer *t, struct thread *th, int sig);       /* deliver, unwinding it first */
int loop_setup(struct tracer *t);       /* first image: enable, place probes */
void loop_resume_all(struct tracer *t);
void loop_detach_stopped(struct tracer *t); /* everything stopped: restore, unmap, detach */

/* report.c */
void report_print(struct tracer *t, FILE *f, bool final);

/* messages: "ptss: ..." on stderr, one line */
__attribute__((format(printf, 1, 2))) void msg(const char *fmt, ...);
__attribute__((format(printf, 2, 3))) void info(const struct tracer *t, const char *fmt, ...);

#endif
