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
 * One life of a traced process.
 *
 *   entries        == pages << epp_shift                    (entries per page is 2^epp_shift)
 *   claimed + free == entries                               at quiescence, free = |list|
 *   pages          <= max_pages == reserve_size >> page_shift
 *   pages > 0       => base and view hold the space's reservation
 *   entry i runs at base + (i << entry_shift), is written at view + (i << entry_shift)
 *   torn_down       => list.next == NULL, no reservation, claims fail, releases ignored
 *
 *   claimed        >= entries off the list (owned, or being claimed or released)
 *
 * Ownership: list.head, claimed and claimed_high_water change lock-free (any thread);
 * pages, base, view and the grow counters change only under `lock` (or in tear_down,
 * which runs alone); the geometry is fixed at creation. The tracer keeps 4 bytes per entry (its next[] slot) and nothing else.
 */
struct ptss_proc {
	/* The hot line, written by every claim and release: keeping the counters beside the
	 * head means one cache line moves between threads, not two. */
	_Alignas(PTSS_CACHE_LINE) struct ptss_freelist list;
	_Atomic uint64_t claimed;
	_Atomic uint64_t claimed_high_water;

	/* Read-mostly. */
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

	/* Under `lock` (the counters are atomic only for lock-free readers of statistics). */
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
