/*
 * The probe engine (libptss-probe): processes and threads under ptrace, probe sites, hits
 * executed out of line in per-thread scratch entries, and the counts. Its public face is
 * <ptss/probe.h> (api.c); this header is for the engine's own files, grouped by the file
 * that defines each declaration, from the top of the call graph down:
 *
 *   api.c        the public API: options, probes, start/attach, run/step, snapshot
 *   loop.c       the event loop: every stop of every traced task is dispatched here
 *   detach.c     stopping everything, restoring every byte, letting go
 *   attach.c     getting hold of a target (seize every thread, or start a command); setup
 *   lifecycle.c  new threads and processes, execs, exits: the scratch core's lifecycle
 *   hit.c        one probe hit: the relocated instruction run in the thread's entry
 *   jumps.c      optimized sites: a jmp into a trampoline that counts in the target
 *   fallback.c   a hit without an entry: the process stopped, one single-step; holding
 *                the other threads of a process
 *   unwind.c     a thread taken out of its entry or trampoline (a signal, a detach);
 *                signal delivery
 *   keys.c       which row of counters a thread's trampoline hits count in
 *   queue.c      the stop queue: stops deferred for the loop, first stops seen early
 *   trap.c       "is this SIGTRAP one of ours?"
 *   place.c      resolving probe arguments in an image into sites
 *   process.c    the traced processes
 *   threads.c    the traced threads (a table by tid) and their states
 *   scratch.c    a process's scratch (a ptss_proc over a ptrace space), thread entries
 *   sites.c      the probe sites of a process: int3 written and restored
 *   counts.c     every count: hits per probe and thread, scratch figures; the snapshot
 *   calls.c      calls entry to return (latency, events): per-thread stacks by rsp
 *   timed.c      calls timed in the target: the tracer's side of the call blocks
 *   mem.c        the target's memory (/proc/PID/mem)
 *   say.c        messages, through the caller's print callback
 *   probe_spec.c, elf/ (symbols, maps), x86/ (the relocator), err.c: no tracer state
 *
 * A file calls only the files below it: a hit's data flows down (loop -> hit -> unwind ->
 * counts -> mem -> relocator -> libptss). The tracer is single-threaded: only the thread
 * that attached may issue ptrace requests. No file keeps mutable state of its own: all of
 * it lives in struct tracer.
 */
#ifndef PTSS_PROBE_ENGINE_H
#define PTSS_PROBE_ENGINE_H

#include <ptss/probe.h>
#include <ptss/ptrace.h>
#include <ptss/ptss.h>

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/user.h>

#include "probe_spec.h"
#include "x86/jump.h"
#include "x86/relocate.h"

/* Outcomes of the engine's steps, mapped to PTSS_TRACER_E* by api.c. */
enum outcome {
	OUT_OK = 0,
	OUT_PROBE = 3,   /* a probe cannot be placed */
	OUT_ATTACH = 4,  /* cannot attach or start */
	OUT_FAILURE = 5, /* tracing machinery failed */
};

/* A thread's hits of one row. */
struct thread_count { pid_t tid; uint64_t hits; };

/* One reported probe ("MODULE:FUNC"), shared by every traced process. */
struct row {
	size_t index;          /* in tracer.rows */
	char *probe;           /* "MODULE:FUNC" as reported */
	char *module;          /* the module's path */
	uint64_t addr;         /* runtime address in the first process it was armed in */
	uint64_t hits;         /* == sum of every thread's count of it, live or folded */
	struct thread_count *threads; /* folded counts of threads that are gone */
	size_t nthreads, cap;
	uint64_t jump_hits;    /* of hits, those counted in the target (jumps), folded */
	bool jumped;           /* optimized in some process */
	char *trap_why;        /* why a site of it keeps its int3, or NULL */
	const struct probe_spec *sig; /* its argument types (the probe that made it) */
	uint64_t returns;      /* opts.latency: returns seen, folded (calls.c) */
	uint64_t jump_returns; /* of them, those of exit trampolines, folded (calls.c) */
	struct latency *lat;   /* opts.latency: times of its calls, or NULL (calls.c) */
};

/* The probed function around a site: its bounds, and a FUNC.cold part (0 if none). */
struct site_fn { uint64_t addr, size, cold_addr, cold_size; };

/* One probed address in one process: an int3 (hits stop), or, once jumps.c optimized it,
 * a jmp to its trampoline (hits counted in the target). */
struct site {
	uint64_t addr;
	uint8_t orig;          /* the byte under int3 */
	bool internal;         /* a site of ptss's own (program entry, dlopen notice) */
	bool jump_tried;       /* jumps.c decided: jumped, or kept as int3 for good */
	bool jumped;           /* [addr, addr + jump.len) holds the jmp */
	struct reloc_plan plan;
	struct row *row;       /* NULL when internal */
	struct site_fn fn;
	struct row *exit_row;  /* opts.latency: a ret or branch by which exit_fn may leave */
	struct site_fn exit_fn;
	bool covered;          /* an exit under its entry's jmp: that trampoline times it */
	/* when jumped */
	struct jump_plan jump;
	struct jump_tramp tramp;
	uint64_t tramp_addr;
	uint32_t col;          /* its counter in the process's data area */
	uint8_t saved[JUMP_COVER_MAX]; /* the bytes under the jmp (saved[0] == orig) */
};

struct spec {              /* a probe argument */
	char *arg;
	struct probe_spec parsed;
	bool armed, said, warned; /* placed somewhere; an error said; "waits for dlopen" said */
};

/* A process's trampolines near one part of its address space: ptss entries of 1 KiB
 * in a reservation placed within reach (rel32) of the sites that use them. */
struct jump_area {
	ptss_space *space;
	ptss_proc *code;
};

/* The data area of a process's jump probes (x86/jump.h describes it to trampolines). */
enum {
	JUMPS_MAX_COLS = 256,    /* jump sites per process: a counter each */
	JUMPS_MAX_SLOTS = 4096,  /* threads with a row of counters (entry index below) */
	JUMPS_TABLE_BITS = 14,   /* 16384 key words, at most 3/4 of them in use */
	JUMPS_ALIVE_OFF = 0,
	JUMPS_TABLE_OFF = 4096,
	JUMPS_COUNTS_OFF = JUMPS_TABLE_OFF + (8 << JUMPS_TABLE_BITS),
	JUMPS_ROW_BYTES = JUMPS_MAX_COLS * 8,
	JUMPS_CALLS_OFF = JUMPS_COUNTS_OFF + JUMPS_MAX_SLOTS * JUMPS_ROW_BYTES, /* timed.c */
	JUMPS_LAT_COLS = 32,     /* functions timed in the target per process */
	JUMPS_CALL_BYTES = JUMP_CALL_STACK_BYTES + JUMPS_LAT_COLS * JUMP_LAT_BYTES,
};
_Static_assert((int)JUMPS_LAT_COLS <= (int)JUMP_LAT_COLS_MAX, "a timed column is a byte of a frame");
#define JUMPS_DATA_SIZE ((size_t)JUMPS_CALLS_OFF)
#define JUMPS_TIMED_DATA_SIZE (JUMPS_DATA_SIZE + (size_t)JUMPS_MAX_SLOTS * JUMPS_CALL_BYTES)

/*
 * A process's optimized sites (jumps.c): the data area the trampolines count in (the
 * tracer's view maps the same memory; keys.c keys threads in it) and the trampolines'
 * areas.
 * Created by jumps.c; its tracer-side memory dropped by process.c with the process.
 */
struct jumps {
	uint64_t data;         /* the data area in the target */
	uint8_t *view;         /* the tracer's view of it */
	size_t size;
	void *alive;           /* a robust pthread mutex in the view, held by the tracer */
	struct jump_area *areas;
	size_t nareas;
	uint32_t words;        /* table words in use: keys and tombstones */
	struct row **rows;     /* per counter column: the row it counts */
	uint32_t ncols;
	bool timed;            /* calls timed in the target: call blocks after the counters */
	struct row *lat_rows[JUMPS_LAT_COLS]; /* per timed column: the function (timed.c) */
	uint32_t nlat;
};

/* One traced address space. */
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
	bool started;          /* ptss started it: its exit status is the caller's */
	bool before_entry;     /* a fresh image, its program entry not reached yet */
	bool exec_seen;        /* an image after the first one */
	bool refusal_said;     /* threads got no entry, and the user was told why */
	struct jumps *jumps;   /* optimized sites' data and trampolines, or NULL */
	int nthreads;
	struct process *next;
};

/*
 * Where a thread stands with the stops ptss itself causes (PTRACE_INTERRUPT), apart from
 * the hit it may be in. `stop` is one of:
 *
 *   RUNNING      nothing of ours pending: may be interrupted
 *   STOPPING     interrupted by ptss (stop_all, stop_others, attach), its stop not yet seen
 *   HELD         stopped in that interrupt stop, held for another thread's fallback
 *   HELD_QUEUED  held, but it stopped at an event first: that stop waits in the queue
 *   QUEUED       stopped, its stop waiting in the queue for the loop: leave it alone
 *
 * and interrupt_due says that an interrupt stop of ours is still to come and must be
 * swallowed (the loop or a fallback's single-step takes it and clears the flag).
 *
 * Legal transitions (who makes them):
 *   RUNNING     -> STOPPING     stop_others, stop_all (also from QUEUED: its queued stop
 *                               then comes first), attach's seize
 *   STOPPING    -> RUNNING      stop_all / attach saw its stop
 *   STOPPING    -> HELD         hold: the interrupt stop came
 *   STOPPING    -> HELD_QUEUED  hold: an event came first, queued
 *   STOPPING    -> RUNNING      hold: the thread is gone; interrupt_due set
 *   HELD        -> RUNNING      resume_others: continued
 *   HELD_QUEUED -> QUEUED       resume_others: interrupt_due set
 *   QUEUED      -> RUNNING      queue_take: the loop handles its stop
 */
enum thread_stop { TS_RUNNING, TS_STOPPING, TS_HELD, TS_HELD_QUEUED, TS_QUEUED };

struct thread_state {
	enum thread_stop stop;
	bool interrupt_due;
};

/* One traced task. */
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
	struct thread_state state;
	int detach_sig;        /* a signal to hand over when detaching */
	uint64_t fs_base;      /* last seen: its key in the jumps table (jumps.c) */
	bool keyed;            /* fs_base is in the table */
	uint64_t *jump_counts; /* its counters in the data area (the tracer's view), one per
	                          column of proc->jumps, or NULL */
	uint8_t *call_block;   /* its call block there when calls are timed, or NULL */
	struct call_frame *calls; /* its open calls of probed functions (calls.c) */
	size_t ncalls, capcalls;
};

/* A stop taken from waitpid but handled later. */
struct pending { pid_t tid; int status; };

struct tracer {
	struct ptss_tracer_opts opts; /* defaults filled in */
	struct spec *specs;
	int nspecs;
	bool begun;            /* start or attach was called: no more probes */
	struct row **rows;
	size_t nrows;
	struct process *procs;
	struct thread **threads; /* open addressing by tid */
	size_t tcap, tcount;
	struct pending *deferred; /* stops deferred by the fallback, oldest first */
	size_t ndeferred;
	struct pending *early;  /* first stops of tasks whose parent's event is not seen yet */
	size_t nearly;
	pid_t pid;             /* attached: the process; 0 when ptss started a command */
	pid_t child;           /* the command ptss started, or 0 */
	int child_status;      /* its wait status, once it exited */
	bool child_exited;
	int attached_status;   /* attached: the process's wait status, if it ended while traced */
	bool attached_ended;
	uint64_t fallbacks;
	uint64_t claim_failures;
	uint64_t pages_hw, entries_hw, claimed_hw; /* scratch figures, over every process life */
	char *command_name;
	uint64_t tsc0, ns0;    /* a tsc and CLOCK_MONOTONIC read together: ticks to ns (timed.c) */
};

/* loop.c */
int loop_run(struct tracer *t, const struct ptss_run_opts *o); /* enum outcome or -errno */
int loop_step(struct tracer *t, int timeout_ms); /* 1 handled, 0 none, -ECHILD, OUT_PROBE, -errno */

/* detach.c */
void detach_all(struct tracer *t, bool stopped); /* stopped: every thread is in a stop */

/* attach.c */
int target_attach(struct tracer *t, pid_t pid); /* every thread seized and stopped */
int target_start(struct tracer *t, char *const argv[]);
int target_setup(struct tracer *t);     /* first image: enable, place probes */
void target_resume_all(struct tracer *t);
pid_t target_tracer(pid_t tid, char *state); /* /proc/TID/status: TracerPid, State */

/* lifecycle.c */
void lifecycle_new_task(struct tracer *t, struct thread *parent); /* clone, fork, vfork */
void lifecycle_exec(struct tracer *t, pid_t pid);
void lifecycle_thread_gone(struct tracer *t, struct thread *th);
void lifecycle_let_child_go(struct tracer *t, struct process *p, pid_t tid);
void lifecycle_ended(struct tracer *t, pid_t tid, int status); /* exit statuses kept */

/* hit.c */
int hit_handle(struct tracer *t, struct thread *th, struct user_regs_struct *regs, const struct site *s);

/* jumps.c */
/* Optimizes p's sites not tried yet. by: a stopped thread of p (injections run in it);
 * all_stopped: every thread of p is stopped, else the others are held meanwhile. */
void jumps_optimize(struct tracer *t, struct process *p, struct thread *by, bool all_stopped);
/* Detach: every thread of p stopped and out of the trampolines; bytes restored, counts
 * folded, data and trampolines unmapped. */
void jumps_disarm(struct tracer *t, struct process *p, struct thread *by);
/* A fork child stopped at birth (not sharing p's memory): p's jmps in it restored to
 * int3 (child != NULL: it is followed, its sites are child's) or to the original bytes,
 * p's data and trampolines unmapped from it. */
void jumps_fork(struct tracer *t, struct process *p, pid_t tid, struct process *child);

/* fallback.c */
int fallback_run(struct tracer *t, struct thread *th, struct user_regs_struct *regs, const struct site *s);
/* Stops every other thread of th's process (their stops queued), and resumes them. */
void hold_others(struct tracer *t, struct thread *th);
void release_others(struct tracer *t, struct thread *th);

/* unwind.c */
/* Out of its entry, back into the original code: regs changed? keep: at detach */
bool hit_unwind(struct tracer *t, struct thread *th, struct user_regs_struct *regs, bool keep);
void signal_deliver(struct tracer *t, struct thread *th, int sig); /* unwinding it first */
/* Out of a trampoline (th stopped, regs its registers, changed when it moved): keep: at
 * detach (the site is restored, the hit stays counted); *sig (may be NULL): the signal to
 * deliver, replaced by a fault that cannot be put back at the site. false if th was in
 * no trampoline. */
bool jumps_leave(struct tracer *t, struct thread *th, struct user_regs_struct *regs, bool keep, int *sig);

/* keys.c */
void jumps_thread_seen(struct tracer *t, struct thread *th, uint64_t fs_base); /* stopped */
void jumps_thread_gone(struct tracer *t, struct thread *th); /* before thread_remove */
/* A miss trap (th stopped just past its trampoline's int3): th keyed, the hit counted. */
void jumps_miss(struct tracer *t, struct thread *th, struct user_regs_struct *regs, struct site *s);

/* queue.c */
void queue_defer(struct tracer *t, pid_t tid, int status);
bool queue_take(struct tracer *t, pid_t *tid, int *status); /* the oldest deferred stop */
void queue_early(struct tracer *t, pid_t tid, int status);
/* New tasks whose parent's event never came (stopped at birth, nothing of ours in them): detached. */
void queue_detach_early(struct tracer *t);
bool queue_wait_first_stop(struct tracer *t, pid_t tid); /* false if it died first */
void queue_free(struct tracer *t);

/* trap.c: the site whose int3 stopped tid (regs filled), or NULL when the stop is no trap
 * of ours; *int3 (may be NULL): an int3's trap at all, ours or not */
struct site *trap_site(struct process *p, pid_t tid, struct user_regs_struct *regs, bool *int3);
/* Is this trap of site s the int3 of its trampoline's miss (else the site's own)? */
bool trap_is_miss(const struct site *s, const struct user_regs_struct *regs);

/* place.c */
int place_probes(struct tracer *t, struct process *p, bool fatal); /* fatal: errors end the trace */
int auxv_value(pid_t pid, uint64_t type, uint64_t *value); /* /proc/PID/auxv; -1: none */

/* process.c */
struct process *process_new(struct tracer *t, pid_t pid);
void process_free(struct tracer *t, struct process *p);
int process_new_image(struct tracer *t, struct process *p); /* after an exec */
void process_drop_jumps(struct tracer *t, struct process *p); /* the tracer's side only */

/* threads.c */
struct thread *thread_find(struct tracer *t, pid_t tid);
struct thread *thread_add(struct tracer *t, struct process *p, pid_t tid);
void thread_remove(struct tracer *t, struct thread *th);

/* scratch.c */
ptss_proc *scratch_new(struct tracer *t, ptss_space *space);
void scratch_claim(struct tracer *t, struct thread *th);
/* nthreads of p got no entry (claim or enable said err): counted, and said once per image */
void scratch_refused(struct tracer *t, struct process *p, size_t nthreads, int err);
void scratch_pages_left(struct tracer *t, pid_t pid, const char *refusal);

/* sites.c */
int site_arm(struct tracer *t, struct process *p, uint64_t addr, struct row *row,
	     const struct site_fn *fn, char *why, size_t len);
struct site *site_find(struct process *p, uint64_t addr);
struct site *site_of_tramp(struct process *p, uint64_t rip); /* its trampoline holds rip */
int site_arm_exit(struct tracer *t, struct process *p, uint64_t addr, struct row *row,
		  const struct site_fn *fn, char *why, size_t len);
int sites_read_code(struct process *p, uint64_t addr, uint8_t *buf, size_t len); /* ours out */
size_t sites_read_function(struct process *p, const struct site_fn *fn, struct jump_code parts[2],
			   uint8_t **bytes);
void sites_disarm_all(struct process *p); /* int3s and jmps: the original bytes back */
int sites_copy(struct process *child, const struct process *parent);
void sites_clear(struct process *p);
void sites_remove(struct process *p, uint64_t addr); /* restores the byte */

/* counts.c */
struct row *count_row(struct tracer *t, const char *module, const char *name, uint64_t addr);
void count_hit(struct tracer *t, struct thread *th, struct row *r, int64_t delta);
void count_fold_thread(struct tracer *t, struct thread *th); /* a thread is gone */
void count_fold_jumps(struct tracer *t, struct thread *th); /* its trampolines' counts in */
void count_scratch(struct tracer *t, const ptss_proc *scratch); /* fold its figures in */
struct ptss_trace_snapshot *count_snapshot(const struct tracer *t);
void counts_free(struct tracer *t);

/* calls.c */
void calls_enter(struct tracer *t, struct thread *th, struct row *r, const struct user_regs_struct *regs);
/* th leaves r's function by a ret (tail: a jump) with rsp where the return address is. */
void calls_return(struct tracer *t, struct thread *th, struct row *r, uint64_t rsp, uint64_t rax, bool tail);
void calls_thread_gone(struct thread *th);
/* r's returns and times, the live threads' call blocks included: false when none timed. */
bool calls_summary(const struct tracer *t, const struct row *r, struct ptss_trace_latency *out,
		   uint64_t *returns, uint64_t *jump_returns);
void calls_fold_timed(struct tracer *t, struct thread *th); /* its call block in, emptied */
void calls_free(struct row *r);

/* timed.c: calls timed in the target, the tracer's side (jump.h: the call blocks) */
/* Whether a process's calls may be timed in its data area: 0, or -ENOTSUP with why. */
int timed_possible(struct tracer *t, char *why, size_t len);
int timed_col(struct jumps *j, struct row *r, bool assign); /* r's column, or -1 */
/* th's column block of r and its column, or NULL: r's calls of th are not timed there. */
uint8_t *timed_block(const struct thread *th, struct row *r, int *col);
/* What the trampolines do, done by the tracer for a stopped thread: an entry at rsp, and
 * an exit (true, *ticks: the call it ends was timed). */
void timed_push(uint8_t *call_block, uint64_t rsp, int col);
bool timed_pop(uint8_t *call_block, uint64_t rsp, int col, uint64_t *ticks);
double timed_ns_per_tick(const struct tracer *t);

/* mem.c */
int mem_open(pid_t pid); /* /proc/PID/mem, read-write: a descriptor or -1 */
int mem_read(struct process *p, uint64_t addr, void *buf, size_t len);
int mem_write(struct process *p, uint64_t addr, const void *buf, size_t len);

/* say.c: one line each, through opts.print */
__attribute__((format(printf, 2, 3))) void say_error(const struct tracer *t, const char *fmt, ...);
__attribute__((format(printf, 2, 3))) void say_info(const struct tracer *t, const char *fmt, ...);

#endif
