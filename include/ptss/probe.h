/*
 * ptss probe — counting function entries in another process, exactly. Where a site allows
 * it, a 5-byte jmp sends each call through a trampoline in the target that counts it in
 * shared memory, per thread, with no stop ("jump" probes); elsewhere an int3 stops the
 * thread and its displaced instruction runs out of line in its own scratch entry
 * (libptss: "trap" probes). The engine of `ptss trace`, as a library (libptss-probe,
 * pkg-config ptss-probe).
 *
 *   ptss_tracer_new        a tracer with its options; nothing traced yet
 *   ptss_tracer_add_probe  a probe: "FUNC" or "MODULE:FUNC" (see ptss(1), PROBE)
 *   ptss_tracer_start      start a command under the tracer, probes placed, running
 *   ptss_tracer_attach     seize every thread of a running process, probes placed, running
 *   ptss_tracer_run        the event loop, until the target is gone or told to stop
 *   ptss_tracer_step       one stop of the target handled, for callers with a loop of
 *                          their own
 *   ptss_tracer_snapshot   the counts so far: per probe, per thread; scratch figures
 *   ptss_tracer_detach     every byte restored, every page unmapped, every thread let go
 *   ptss_tracer_wait       the target's end: a started command's wait status
 *   ptss_tracer_free       detaches what is still traced, frees everything
 *
 * Errors follow libptss's convention: functions returning int give 0 (or a count) or a
 * negative errno; functions returning a pointer give NULL and set errno. Classes of
 * failure a caller may tell apart are the PTSS_TRACER_E* values. The library never
 * prints: every message goes to the print callback of the options, one line each.
 *
 * One tracer traces one target (and, with follow, its forked children). Only the thread
 * that started or attached may call the tracer afterwards (ptrace's rule); the tracer
 * waits for any child of the calling process (waitpid(-1)), so the caller should have no
 * other children while tracing.
 */
#ifndef PTSS_PROBE_H
#define PTSS_PROBE_H

#include <ptss/ptss.h>

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ptss_tracer ptss_tracer;

/* One call of a probed function, entry to return (see opts.on_call). */
struct ptss_trace_call {
	pid_t tid;
	const char *probe;           /* "MODULE:FUNC" */
	const char *args;            /* the arguments, formatted as the probe's signature
	                                says (strings read at entry, escaped), else the six
	                                argument registers in hex */
	uint64_t argv[6];            /* the argument registers at entry (rdi rsi rdx rcx r8 r9),
	                                as the signature reads them: int and char sign-extended
	                                (read them as int64_t), uint zero-extended, bool 0/1 */
	unsigned nargs;              /* how many the signature names; 6 without one */
	uint64_t ret;                /* rax at the return */
	bool tail;                   /* it left by a jump into another function (a tail call):
	                                ret is no value of its own */
	uint64_t ts_ns;              /* the entry, CLOCK_REALTIME */
	uint64_t duration_ns;        /* entry to return, as ptss saw them */
};
typedef void ptss_tracer_call_fn(const struct ptss_trace_call *c, void *ctx);

/* Classes of failure. Other negative errno values are plain errors (-ENOMEM, ...). */
#define PTSS_TRACER_ESPEC   (-EINVAL)  /* a malformed probe argument */
#define PTSS_TRACER_EPROBE  (-ENOEXEC) /* a probe cannot be placed, or was never armed */
#define PTSS_TRACER_EATTACH (-EPERM)   /* cannot attach to, start, or trace the target */
#define PTSS_TRACER_EEXITED (-ECHILD)  /* the command ended before its exec */
#define PTSS_TRACER_EFAILED (-EIO)     /* tracing failed midway; the target was let go */

/* ERROR lines are always worth showing; INFO lines are progress a caller may drop (-q). */
enum ptss_tracer_level { PTSS_TRACER_ERROR, PTSS_TRACER_INFO };

/* One message, without a trailing newline or prefix. */
typedef void ptss_tracer_print_fn(enum ptss_tracer_level level, const char *line, void *ctx);

/*
 * Options. Zero-initialise, set sz (PTSS_TRACER_OPTS does both) and fill what you need;
 * a zero field takes its default. New fields are only ever appended.
 */
struct ptss_tracer_opts {
	size_t sz;                   /* sizeof(struct ptss_tracer_opts) as the caller knows it */
	size_t entry_size;           /* scratch entry size; default 64; power of two, 16..4096 */
	bool follow;                 /* trace forked children and their execs; default false:
	                                they are cleaned of probes and scratch and let go */
	bool no_scratch;             /* map no scratch: every hit stops the process and
	                                single-steps; default false */
	ptss_tracer_print_fn *print; /* messages; default NULL: dropped */
	void *print_ctx;             /* passed to print */
	bool no_optimize;            /* never patch a site with a jmp: every probe is an int3;
	                                default false: jump probes wherever a site allows */
	bool latency;                /* time every call of every function probed at its entry:
	                                its returns are probed too (its rets and tail jumps),
	                                timed in the target by jump probes where sites allow */
	ptss_tracer_call_fn *on_call;/* each such call as it returns (implies latency): from
	                                ptss_tracer_run/step, the target stopped meanwhile
	                                (every entry and return takes the int3 path) */
	void *call_ctx;              /* passed to on_call */
};
#define PTSS_TRACER_OPTS(...) \
	((struct ptss_tracer_opts){ .sz = sizeof(struct ptss_tracer_opts), __VA_ARGS__ })

/* A tracer; opts may be NULL. Bad options: NULL, errno EINVAL. */
PTSS_API ptss_tracer *ptss_tracer_new(const struct ptss_tracer_opts *opts);

/*
 * Adds a probe, before start or attach (-EBUSY after). Checked now as far as it can be
 * without the target: PTSS_TRACER_ESPEC when malformed, PTSS_TRACER_EPROBE when it can
 * never be probed (the vDSO; a module named by path that is no ELF file); said.
 */
PTSS_API int ptss_tracer_add_probe(ptss_tracer *t, const char *spec);

/*
 * Starts argv (searched in PATH) with the tracer seizing it before its exec, places the
 * probes in the new image and lets it run. 0; PTSS_TRACER_EPROBE: a probe cannot be
 * placed, and the command was killed before running any code of its own;
 * PTSS_TRACER_EEXITED: it ended before its exec (ptss_tracer_wait has its status);
 * PTSS_TRACER_EATTACH: it could not be started or traced; PTSS_TRACER_EFAILED. Said.
 */
PTSS_API int ptss_tracer_start(ptss_tracer *t, char *const argv[]);

/*
 * Seizes every thread of process pid, threads born meanwhile included, places the probes
 * and lets it run. 0; PTSS_TRACER_EPROBE (everything let go untouched);
 * PTSS_TRACER_EATTACH (no such process, permission, already traced, it exited). Said.
 */
PTSS_API int ptss_tracer_attach(ptss_tracer *t, pid_t pid);

struct ptss_run_opts {
	size_t sz;                   /* sizeof(struct ptss_run_opts) */
	double duration;             /* seconds, then detach; default 0: no limit */
	double interval;             /* seconds between calls of tick; default 0: none */
	void (*tick)(ptss_tracer *t, void *ctx); /* e.g. a live report; may take a snapshot */
	void *tick_ctx;
	const sigset_t *stop;        /* signals that end the run with a clean detach; default
	                                NULL: SIGINT, SIGTERM, SIGHUP. Blocked during the run,
	                                and consumed */
};
#define PTSS_RUN_OPTS(...) ((struct ptss_run_opts){ .sz = sizeof(struct ptss_run_opts), __VA_ARGS__ })

/*
 * Runs the event loop until no traced task is left, a stop signal comes or the duration
 * is over (then everything is detached). opts may be NULL. 0; PTSS_TRACER_EPROBE: a probe
 * of the started command could not be placed in an image (it was killed, all detached);
 * PTSS_TRACER_EFAILED (said).
 */
PTSS_API int ptss_tracer_run(ptss_tracer *t, const struct ptss_run_opts *opts);

/*
 * Handles at most one stop of the target, waiting up to timeout_ms for one (-1: no limit).
 * 1: one handled; 0: none came; PTSS_TRACER_EEXITED: no traced task is left;
 * PTSS_TRACER_EPROBE as ptss_tracer_run; another -errno.
 */
PTSS_API int ptss_tracer_step(ptss_tracer *t, int timeout_ms);

/* Stops every thread, restores every byte, unmaps the scratch, lets every thread go. */
PTSS_API int ptss_tracer_detach(ptss_tracer *t);

/*
 * The target's end. A started command: waits until it ends (also after a detach) and
 * gives its wait status: 1. An attached process: 1 with its wait status when it ended
 * while traced (collected now, never waiting for a process that was let go), else 0.
 */
PTSS_API int ptss_tracer_wait(ptss_tracer *t, int *status);

/* After the run: PTSS_TRACER_EPROBE when a probe was armed in no process (each said once,
 * unless its error was said already), else 0. */
PTSS_API int ptss_tracer_check_armed(ptss_tracer *t);

/* One probe's counts. */
struct ptss_trace_thread { pid_t tid; uint64_t hits; };

/* How a probe's hits are taken. */
enum ptss_probe_mode {
	PTSS_PROBE_TRAP,     /* int3; the thread runs the instruction in its scratch entry */
	PTSS_PROBE_JUMP,     /* jmp to a trampoline that counts in the target (some process) */
	PTSS_PROBE_FALLBACK, /* int3, no scratch: the process stopped, one single-step */
};

/* Entry-to-return times of a probe's calls (opts.latency), in ns. */
#define PTSS_LATENCY_BUCKETS 64
struct ptss_trace_latency {
	uint64_t count;              /* returns timed */
	uint64_t min_ns, max_ns;
	uint64_t p50_ns, p99_ns;     /* within 1/16 of a power of two */
	uint64_t hist[PTSS_LATENCY_BUCKETS]; /* [2^k, 2^(k+1)) ns; hist[0] holds [0, 2) */
};

struct ptss_trace_probe {
	const char *probe;           /* "MODULE:FUNC", MODULE the file's basename */
	const char *module;          /* the module's path */
	uint64_t addr;               /* runtime address in the first process it was armed in */
	uint64_t hits;               /* == the sum of threads[].hits */
	size_t nthreads;             /* threads that hit it, live or gone, by tid */
	const struct ptss_trace_thread *threads;
	enum ptss_probe_mode mode;
	uint64_t jump_hits;          /* of hits, those counted by the trampoline (no stop) */
	const char *trap_why;        /* why a site of it is no jump probe, or NULL */
	uint64_t returns;            /* opts.latency: returns seen (tail jumps included) */
	const struct ptss_trace_latency *latency; /* opts.latency: its calls' times, else NULL */
	uint64_t jump_returns;       /* of returns, those timed by an exit's trampoline */
};

/* The counts at one moment. Strings belong to the tracer (valid until ptss_tracer_free). */
struct ptss_trace_snapshot {
	pid_t pid;                   /* the started command or the attached process */
	const char *command;         /* its name (argv[0], or /proc/PID/comm) */
	size_t nprobes;              /* in the order they were first armed */
	const struct ptss_trace_probe *probes;
	uint64_t pages;              /* scratch: high waters over every process life */
	uint64_t entries;
	uint64_t claimed_high_water;
	uint64_t claim_failures;     /* threads that got no entry */
	uint64_t fallbacks;          /* hits that took the fallback */
};

/* A snapshot; reading it changes nothing in the tracer. NULL and errno ENOMEM. */
PTSS_API struct ptss_trace_snapshot *ptss_tracer_snapshot(const ptss_tracer *t);
PTSS_API void ptss_trace_snapshot_free(struct ptss_trace_snapshot *s);

/* Detaches what is still traced, then frees t. NULL is accepted. */
PTSS_API void ptss_tracer_free(ptss_tracer *t);

#ifdef __cplusplus
}
#endif

#endif
