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
 *   ptss_cache_*       the same through a caller's own cache of free entries: a claim and
 *                      a release by one caller touch nothing another caller writes
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
typedef struct ptss_cache ptss_cache; /* one caller's cache of free entries of a ptss_proc */

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
 * double release caught; concurrent double releases of one entry, and releases of an
 * entry parked in a cache, are undefined).
 */
PTSS_API int ptss_release(ptss_proc *p, ptss_entry *e);

/*
 * A caller's cache of free entries. ptss_claim and ptss_release work on the process's
 * shared free list: each is one CAS on a word every caller writes. A caller that claims
 * and releases often (an agent thread, a tracer thread) can keep up to PTSS_CACHE_CAP
 * free entries of its own: ptss_cache_release parks the entry in the cache and
 * ptss_cache_claim takes it back, with no atomic read-modify-write and no write to memory
 * another caller uses. The cache falls back on the shared list when it is empty (a claim,
 * which may grow) or full (half of it goes back in one CAS).
 *
 * A cache belongs to one caller at a time: its calls must not run concurrently with each
 * other; they may run concurrently with any call on p but ptss_exec_exit and
 * ptss_proc_free, as ptss_claim and ptss_release may. Entries are interchangeable between
 * the two paths: an entry claimed through a cache may be released with ptss_release or
 * through another cache, and the other way round.
 *
 * Entries parked in caches are free (ptss_stats.free counts them) but only their cache's
 * caller claims them: a claim that finds its cache and the shared list empty grows, even
 * if other caches hold entries. So at most PTSS_CACHE_CAP entries per open cache are
 * mapped beyond what the threads own; ptss_cache_flush hands them back early.
 */
#define PTSS_CACHE_CAP 16u

/* A new cache of p, empty. NULL and errno: ENOMEM, ESRCH (after ptss_exec_exit). */
PTSS_API ptss_cache *ptss_cache_new(ptss_proc *p);

/* Returns the cached entries to p's shared list and frees c. NULL is ignored. Caches still
 * open when their ptss_proc is freed are freed with it (their handles then die too). */
PTSS_API void ptss_cache_free(ptss_cache *c);

/* ptss_claim through c: c's most recently parked entry, else ptss_claim(p). Same errors. */
PTSS_API ptss_entry *ptss_cache_claim(ptss_cache *c);

/*
 * ptss_release through c: parks e in c (when c is full, the older half of it goes back to
 * the shared list first). Ignored after ptss_exec_exit, as ptss_release. -EINVAL when e is
 * not claimed: not one of p's entries, on the shared list, or already in c. (An entry
 * parked in another cache reads as claimed: releasing it again is undefined, as are
 * concurrent double releases.)
 */
PTSS_API int ptss_cache_release(ptss_cache *c, ptss_entry *e);

/* Returns every entry parked in c to p's shared list. */
PTSS_API void ptss_cache_flush(ptss_cache *c);

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

/*
 * Statistics are derived, not counted on the claim and release paths: free is the length
 * of the shared list (kept in the list itself) plus the entries parked in caches, claimed
 * is entries - free. After ptss_exec_exit, pages, entries, free and claimed are 0.
 */
struct ptss_stats {
	uint64_t pages;              /* pages mapped in the target */
	uint64_t entries;            /* pages * entries per page */
	uint64_t free;               /* entries free: on the shared list or parked in caches */
	uint64_t claimed;            /* entries owned by threads: entries - free */
	uint64_t claimed_high_water; /* most entries claimed at once. Never under-reports: it
	                                counts every entry off the shared list, so entries parked
	                                in caches (at most PTSS_CACHE_CAP per cache) and
	                                releases in progress count as claimed */
	uint64_t grows;              /* successful growths (one per space call) */
	uint64_t failed_grows;       /* growths that failed: claims that returned NULL */
	uint64_t ignored_releases;   /* releases after ptss_exec_exit */
	uint64_t tracer_bytes;       /* tracer-side bytes held for entries (<= 8 per entry) */
};

/* A snapshot; exact when no claim or release runs concurrently. Lock-free: O(open caches). */
PTSS_API void ptss_stats_get(const ptss_proc *p, struct ptss_stats *out);

/*
 * Checks every invariant of p at quiescence (no claim or release in flight): each entry is
 * in exactly one place -- on the shared list (once), parked in one cache (once), or owned
 * by a thread --, claimed + free == entries, the list holds only mapped entries and its
 * recorded length is its length, the high water is at least what is claimed. For tests
 * and debug assertions; O(entries).
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
