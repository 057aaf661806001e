/*
 * Internal declarations, grouped by the file that defines them. `_ptss_` names are shared
 * between files of the library and hidden from its users.
 */
#ifndef PTSS_INTERNAL_H
#define PTSS_INTERNAL_H

#include <ptss/ptss.h>
#include <ptss/space.h>

#include <errno.h>
#include <pthread.h>

#include "freelist.h"

#define ptss_likely(x)   __builtin_expect(!!(x), 1)
#define ptss_unlikely(x) __builtin_expect(!!(x), 0)
#define PTSS_CACHE_LINE 64

/* Checks an argument of an API function; returns `ret` with errno EINVAL when it fails. */
#define ptss_check_arg(cond, ret)                  \
	do {                                       \
		if (ptss_unlikely(!(cond))) {      \
			errno = EINVAL;            \
			return ret;                \
		}                                  \
	} while (0)

/*
 * One caller's cache of free entries (ptss_cache_*), in p's registry from ptss_cache_new
 * until p is freed (ptss_cache_free only marks it unused; the next ptss_cache_new takes it
 * again), so that lock-free readers of the registry never see one freed.
 *
 *   n <= PTSS_CACHE_CAP; idx[0..n) are distinct mapped entries, oldest first
 *   next[idx[k]] == PTSS_CLAIMED: a parked entry is on no list and in no other cache
 *   !in_use || torn_down  =>  n == 0
 *
 * Ownership: idx[] and n are written by the cache's caller only (n is atomic, relaxed,
 * for the lock-free readers of statistics: plain loads and stores, never a read-modify-
 * write); in_use and link under p->lock; next and p are fixed.
 */
struct ptss_cache {
	_Alignas(PTSS_CACHE_LINE) ptss_proc *p;
	_Atomic uint64_t *next; /* p->list.next, copied off the shared list's line */
	_Atomic uint32_t n;
	uint32_t idx[PTSS_CACHE_CAP];
	bool in_use;
	struct ptss_cache *_Atomic link; /* the registry: p->caches, newest first */
};

/*
 * One life of a traced process.
 *
 *   entries        == pages << epp_shift                    (entries per page is 2^epp_shift)
 *   free           == |list| + sum of the caches' n         |list| is the top's depth
 *   claimed        == entries - free                        derived, never counted
 *   pages          <= max_pages == reserve_size >> page_shift
 *   pages > 0       => base and view hold the space's reservation
 *   entry i runs at base + (i << entry_shift), is written at view + (i << entry_shift)
 *   claimed_high_water >= entries - |list| at the end of every pop, growth and enable:
 *                      every entry off the list counts, so it never under-reports
 *   torn_down       => list.next == NULL, no reservation, claims fail, releases ignored,
 *                      every cache empty
 *
 * Ownership: list.head changes lock-free (any thread), and nothing else on the claim and
 * release paths: there is no shared counter. claimed_high_water rises lock-free (a CAS,
 * only when a pop or a growth finds a new maximum). pages, base, view and the grow
 * counters change only under `lock` (or in tear_down, which runs alone); the registry of
 * caches grows under `lock`; the geometry is fixed at creation. The tracer keeps 8 bytes
 * per entry (its next[] word) and nothing else.
 */
struct ptss_proc {
	/* The hot line: every claim and release on the shared list CASes the head. */
	_Alignas(PTSS_CACHE_LINE) struct ptss_freelist list;

	/* Read-mostly: what the cache paths read, written only by growth and tear_down. */
	_Alignas(PTSS_CACHE_LINE) ptss_space *space;
	_Atomic uint32_t pages;
	_Atomic bool torn_down;
	/* The reservation in the target, 0 when none. Atomic so that ptss_fork can read it
	 * without the lock, which a fork child may hold a copy of, locked (see ptss_fork). */
	_Atomic uint64_t base;
	unsigned char *view; /* the tracer's view of it */
	unsigned entry_shift, page_shift, epp_shift;
	uint32_t max_pages;
	size_t reserve_size;
	size_t next_bytes; /* the mapping behind list.next */
	struct ptss_cache *_Atomic caches; /* the registry, newest first */

	/* Rarely written: the high water (read by every pop on the shared list, written when
	 * it rises), the lock, and counters kept under it (atomic for lock-free readers). */
	_Alignas(PTSS_CACHE_LINE) _Atomic uint64_t claimed_high_water;
	pthread_mutex_t lock;
	_Atomic uint64_t grows, failed_grows, ignored_releases;
};

/* options.c */
int _ptss_opts_resolve(const struct ptss_opts *in, struct ptss_opts *out);
unsigned _ptss_log2(size_t power_of_two);

/* print.c */
__attribute__((format(printf, 2, 3)))
void _ptss_pr(enum ptss_print_level level, const char *fmt, ...);
#define ptss_pr_warn(...)  _ptss_pr(PTSS_WARN, __VA_ARGS__)
#define ptss_pr_debug(...) _ptss_pr(PTSS_DEBUG, __VA_ARGS__)

/* space.c */
struct ptss_space {
	struct ptss_space_ops ops;
	void *ctx;
};
int _ptss_space_reserve(ptss_space *s, size_t size, uint64_t *base, void **view);
int _ptss_space_commit(ptss_space *s, size_t offset, size_t len);
void _ptss_space_release(ptss_space *s, bool unmap_target);
int _ptss_space_unmap(ptss_space *s, uint64_t addr, size_t len);

#endif /* PTSS_INTERNAL_H */
