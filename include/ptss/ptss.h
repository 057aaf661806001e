/*
 * ptss — per-thread scratch space for tracers.
 *
 * Every thread of a traced process gets its own small entry of executable memory inside
 * that process. A tracer writes a displaced instruction (relocated) and a jump back into
 * the thread's entry, through a writable view of its own, and resumes the thread there.
 *
 * One ptss_proc is one *life* of a traced process: from ptss_proc_new (attach, start,
 * or after an exec) to ptss_exec_exit (the image is gone) or ptss_proc_free (detach).
 *
 *   ptss_proc_new      set up tracer-side state; nothing is mapped in the target yet
 *   ptss_enable        one entry for each of N existing threads, all or nothing
 *   ptss_claim         an entry for a new thread (lock-free; grows under the lock)
 *   ptss_claim_locked  the same, for callers that hold ptss_lock
 *   ptss_release       the thread exited: its entry goes back on the free list
 *   ptss_fork          remove this process's pages from a fork child's copy
 *   ptss_exec_exit     the target exec'd or exited: free all tracer-side memory,
 *                      leave the target's pages alone; later releases are ignored
 *   ptss_proc_free     detach: unmap the pages from the target (unless exec_exit came
 *                      first) and free the handle
 *
 * Errors follow one convention: functions returning int give 0 or a negative errno;
 * functions returning a pointer give NULL and set errno. The library never prints; see
 * ptss_set_print.
 */
#ifndef PTSS_PTSS_H
#define PTSS_PTSS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PTSS_API __attribute__((visibility("default")))
#else
#define PTSS_API
#endif

typedef struct ptss_proc ptss_proc;   /* one life of a traced process */
typedef struct ptss_entry ptss_entry; /* one thread's entry; valid until released */
typedef struct ptss_space ptss_space; /* where pages live: see <ptss/space.h> */

/*
 * Options. Zero-initialise, set sz = sizeof(struct ptss_opts) (PTSS_OPTS does both) and
 * fill what you need; a zero field takes its default. New fields are only ever appended,
 * so a caller built against an older header keeps working.
 */
struct ptss_opts {
	size_t sz;           /* sizeof(struct ptss_opts) as the caller knows it */
	size_t entry_size;   /* bytes per entry; default 64; power of two, >= 16, <= page_size */
	size_t page_size;    /* bytes per page; default the system's; power of two, >= the system's */
	size_t reserve_size; /* bytes reserved in the target for all pages; default 16 MiB;
	                        a multiple of page_size, at most 2^32 - 2 entries */
};
#define PTSS_OPTS(...) ((struct ptss_opts){ .sz = sizeof(struct ptss_opts), __VA_ARGS__ })

#define PTSS_ENTRY_SIZE_DEFAULT 64u
#define PTSS_RESERVE_SIZE_DEFAULT (16u << 20)

/* Fills *opts with every default (sz included). */
PTSS_API void ptss_opts_default(struct ptss_opts *opts);

/*
 * A new process life whose pages will live in `space` (which must outlive it). opts may
 * be NULL for the defaults. Bad options: NULL with errno EINVAL, nothing allocated.
 * Nothing is mapped in the target until the first entry is needed.
 */
PTSS_API ptss_proc *ptss_proc_new(ptss_space *space, const struct ptss_opts *opts);

/*
 * Detach: unmaps every page from the target (one unmap of the reservation) unless
 * ptss_exec_exit already ran, then frees everything. No other call on p may run
 * concurrently or follow. NULL is ignored.
 */
PTSS_API void ptss_proc_free(ptss_proc *p);

/*
 * Gives each of n existing threads an entry: out[0..n) on success. All or nothing: on
 * failure no entry is claimed and, the process having had no pages before, none remain
 * (its reservation is unmapped). Only for a life that has no pages yet (else -EBUSY).
 * Maps all the pages needed at once: ceil(n / entries_per_page) pages, one space call.
 */
PTSS_API int ptss_enable(ptss_proc *p, size_t n, ptss_entry **out);

/*
 * Claims an entry for a thread. Lock-free while the free list is non-empty; otherwise
 * takes the process lock and maps exactly one page, keeping one of its entries. NULL and
 * errno on failure: ENOMEM (the target could not map a page), ENOSPC (the reservation is
 * full), ESRCH (after ptss_exec_exit). A failure leaves every claimed entry valid, and a
 * later claim succeeds once the target can map again.
 */
PTSS_API ptss_entry *ptss_claim(ptss_proc *p);

/* The same as ptss_claim, for a caller that holds ptss_lock(p). */
PTSS_API ptss_entry *ptss_claim_locked(ptss_proc *p);

/* The per-process lock that serialises growth. Not needed around claim or release. */
PTSS_API void ptss_lock(ptss_proc *p);
PTSS_API void ptss_unlock(ptss_proc *p);

/*
 * Returns e to the free list (its thread exited). Lock-free. After ptss_exec_exit the
 * call is ignored and returns 0 without touching e. -EINVAL when e is not claimed (a
 * double release caught; concurrent double releases of one entry are undefined).
 */
PTSS_API int ptss_release(ptss_proc *p, ptss_entry *e);

/*
 * The target forked and `child` is the child's address space (a copy of the parent's,
 * CLONE_VM not set): removes the parent's pages from it with one unmap, however many
 * there are. Allocates nothing; the child has no ptss state until it gets its own
 * ptss_proc. Never touches the parent's pages or the tracer's views. Takes no lock, so it
 * may run in a fork child of the process holding `parent` even if another thread held
 * ptss_lock(parent) at the fork.
 */
PTSS_API int ptss_fork(ptss_proc *parent, ptss_space *child);

/*
 * The target exec'd or exited: frees all tracer-side memory of this life and leaves the
 * target's pages alone (the kernel drops them with the old image). Afterwards claims fail
 * with ESRCH, releases are ignored, statistics stay readable; ptss_proc_free ends it.
 * Must not run concurrently with claim or release on p.
 */
PTSS_API void ptss_exec_exit(ptss_proc *p);

/* Where the target executes e; 0 if e is not one of p's entries. */
PTSS_API uint64_t ptss_entry_addr(const ptss_proc *p, const ptss_entry *e);
/* The tracer's writable view of e (entry_size bytes), NULL if e is not one of p's entries.
 * Write only while e's thread is stopped. */
PTSS_API void *ptss_entry_view(const ptss_proc *p, const ptss_entry *e);
/* e's index in [0, entries): dense, stable for e's life; UINT32_MAX if not p's. */
PTSS_API uint32_t ptss_entry_index(const ptss_proc *p, const ptss_entry *e);
/* The entry size in bytes. */
PTSS_API size_t ptss_entry_size(const ptss_proc *p);

struct ptss_stats {
	uint64_t pages;              /* pages mapped in the target */
	uint64_t entries;            /* pages * entries per page */
	uint64_t free;               /* entries on the free list (entries - claimed) */
	uint64_t claimed;            /* entries owned by threads */
	uint64_t claimed_high_water; /* most entries claimed at once; never under-reports: an
	                                entry counts from its claim's start to its release's end */
	uint64_t grows;              /* successful growths (one per space call) */
	uint64_t failed_grows;       /* growths that failed: claims that returned NULL */
	uint64_t ignored_releases;   /* releases after ptss_exec_exit */
	uint64_t tracer_bytes;       /* tracer-side bytes held for entries (<= 8 per entry) */
};

/* A snapshot; exact when no claim or release runs concurrently. */
PTSS_API void ptss_stats_get(const ptss_proc *p, struct ptss_stats *out);

/*
 * Checks every invariant of p at quiescence (no claim or release in flight): each entry is
 * either on the free list exactly once or claimed, claimed + free == entries, the list
 * holds only mapped entries. For tests and debug assertions; O(entries).
 */
PTSS_API bool ptss_proc_is_valid(const ptss_proc *p);

/* The library's messages (warnings, debug) go to this callback; none by default. */
enum ptss_print_level { PTSS_WARN, PTSS_INFO, PTSS_DEBUG };
typedef int (*ptss_print_fn)(enum ptss_print_level level, const char *fmt, va_list ap);
/* Installs fn (NULL silences) and returns the previous one. */
PTSS_API ptss_print_fn ptss_set_print(ptss_print_fn fn);

#ifdef __cplusplus
}
#endif
#endif /* PTSS_PTSS_H */
