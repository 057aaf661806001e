/*
 * The per-process allocator: claim, release, growth under the lock, and the lifecycle of
 * one process life (enable, fork, exec/exit, detach).
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifdef PTSS_TEST_HOOKS
void (*_ptss_freelist_push_hook)(void); /* see freelist.h; the pop hook is in test_hooks.c */
#endif

#define PTSS_OFFSET_OF(p, i) ((size_t)(i) << (p)->entry_shift)

static inline ptss_entry *entry_of(const ptss_proc *p, uint32_t i)
{
	return (ptss_entry *)&p->list.next[i];
}

static inline uint32_t entries_of(const ptss_proc *p)
{
	return ptss_atomic_load_relaxed(&p->pages) << p->epp_shift;
}

/* The index of e, or PTSS_NIL when e is not one of p's mapped entries. */
static inline uint32_t index_of(const ptss_proc *p, const ptss_entry *e)
{
	uintptr_t off = (uintptr_t)e - (uintptr_t)p->list.next;
	if (off % sizeof(*p->list.next))
		return PTSS_NIL;
	off /= sizeof(*p->list.next);
	return off < entries_of(p) ? (uint32_t)off : PTSS_NIL;
}

uint64_t ptss_entry_addr(const ptss_proc *p, const ptss_entry *e)
{
	uint32_t i = index_of(p, e);
	return i == PTSS_NIL ? 0 : ptss_atomic_load_relaxed(&p->base) + PTSS_OFFSET_OF(p, i);
}

void *ptss_entry_view(const ptss_proc *p, const ptss_entry *e)
{
	uint32_t i = index_of(p, e);
	return i == PTSS_NIL ? NULL : p->view + PTSS_OFFSET_OF(p, i);
}

uint32_t ptss_entry_index(const ptss_proc *p, const ptss_entry *e)
{
	return index_of(p, e);
}

size_t ptss_entry_size(const ptss_proc *p)
{
	return (size_t)1 << p->entry_shift;
}

ptss_proc *ptss_proc_new(ptss_space *space, const struct ptss_opts *opts)
{
	struct ptss_opts o;
	ptss_check_arg(space, NULL);
	ptss_check_arg(_ptss_opts_resolve(opts, &o) == 0, NULL);

	ptss_proc *p = aligned_alloc(PTSS_CACHE_LINE, sizeof(*p));
	if (!p)
		return NULL;
	memset(p, 0, sizeof(*p));
	p->space = space;
	p->entry_shift = _ptss_log2(o.entry_size);
	p->page_shift = _ptss_log2(o.page_size);
	p->epp_shift = p->page_shift - p->entry_shift;
	p->reserve_size = o.reserve_size;
	p->max_pages = (uint32_t)(o.reserve_size >> p->page_shift);

	/*
	 * next[] is sized for a full reservation but only reserved: the kernel commits it as
	 * entries are touched, and it never moves, so lock-free readers need no protection
	 * against growth.
	 */
	p->next_bytes = ((size_t)p->max_pages << p->epp_shift) * sizeof(*p->list.next);
	void *next = mmap(NULL, p->next_bytes, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (next == MAP_FAILED) {
		free(p);
		errno = ENOMEM;
		return NULL;
	}
	p->list.next = next;
	p->list.head = PTSS_NIL;
	pthread_mutex_init(&p->lock, NULL);
	return p;
}

static void drop_reservation(ptss_proc *p, bool unmap_target)
{
	if (!ptss_atomic_load_relaxed(&p->base))
		return;
	_ptss_space_release(p->space, unmap_target);
	ptss_atomic_store_release(&p->base, 0);
	p->view = NULL;
	ptss_atomic_store_relaxed(&p->pages, 0);
}

/* Frees the tracer-side state of this life; the shell stays for statistics. */
static void tear_down(ptss_proc *p, bool unmap_target)
{
	drop_reservation(p, unmap_target);
	if (p->list.next)
		munmap((void *)p->list.next, p->next_bytes);
	p->list.next = NULL;
	p->list.head = PTSS_NIL;
	ptss_atomic_store_relaxed(&p->torn_down, true);
}

void ptss_proc_free(ptss_proc *p)
{
	if (!p)
		return;
	if (!p->torn_down)
		tear_down(p, true);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

void ptss_exec_exit(ptss_proc *p)
{
	ptss_lock(p);
	if (!p->torn_down)
		tear_down(p, false);
	ptss_unlock(p);
}

void ptss_lock(ptss_proc *p) { pthread_mutex_lock(&p->lock); }
void ptss_unlock(ptss_proc *p) { pthread_mutex_unlock(&p->lock); }

/*
 * Maps `npages` more pages (one space call) and returns the index of the first new entry
 * in *first. Nothing is published: the caller owns every new entry. If this call made the
 * reservation and cannot commit into it, the reservation is dropped again, so a failure
 * leaves the target as it found it.
 */
static int grow_locked(ptss_proc *p, uint32_t npages, uint32_t *first)
{
	uint32_t pages = ptss_atomic_load_relaxed(&p->pages);
	int err = 0;
	bool reserved_here = false;

	if (npages > p->max_pages - pages) {
		err = -ENOSPC;
		goto fail;
	}
	if (!ptss_atomic_load_relaxed(&p->base)) {
		void *view;
		uint64_t base;
		err = _ptss_space_reserve(p->space, p->reserve_size, &base, &view);
		if (err)
			goto fail;
		p->view = view;
		/* Before any commit: a fork that copies a committed page also copies base. */
		ptss_atomic_store_release(&p->base, base);
		reserved_here = true;
	}
	err = _ptss_space_commit(p->space, (size_t)pages << p->page_shift,
				 (size_t)npages << p->page_shift);
	if (err) {
		if (reserved_here)
			drop_reservation(p, true);
		goto fail;
	}
	*first = pages << p->epp_shift;
	ptss_atomic_store_release(&p->pages, pages + npages);
	ptss_atomic_add_relaxed(&p->grows, 1);
	return 0;
fail:
	ptss_atomic_add_relaxed(&p->failed_grows, 1);
	ptss_pr_warn("ptss: cannot add %u page(s) to a reservation holding %u: %s\n", npages,
		     pages, strerror(-err));
	return err;
}

/* Links [from, to] into a chain through next[] and pushes it; the caller owns it all. */
static void push_range(ptss_proc *p, uint32_t from, uint32_t to)
{
	if (from > to)
		return;
	for (uint32_t i = from; i < to; i++)
		ptss_atomic_store_relaxed(&p->list.next[i], i + 1);
	ptss_freelist_push_chain(&p->list, from, to);
}

/*
 * `claimed` counts an entry from before its pop until after its push, so it is never
 * below the number of entries off the list, and its high water never under-reports two
 * entries held at once (one being claimed while another is being released).
 */
static inline void count_claims(ptss_proc *p, uint64_t n)
{
	uint64_t claimed = ptss_atomic_add_relaxed(&p->claimed, n) + n;
	if (claimed > ptss_atomic_load_relaxed(&p->claimed_high_water))
		ptss_atomic_max_relaxed(&p->claimed_high_water, claimed);
}

/* Pop again, else grow; the caller holds the lock and has counted the claim. */
static ptss_entry *claim_locked(ptss_proc *p)
{
	if (ptss_unlikely(ptss_atomic_load_relaxed(&p->torn_down))) {
		errno = ESRCH;
		return NULL;
	}
	/* The double check: whoever held the lock before us may have grown the list. */
	uint32_t i = ptss_freelist_pop(&p->list);
	if (i == PTSS_NIL) {
		int err = grow_locked(p, 1, &i);
		if (err) {
			errno = -err;
			return NULL;
		}
		/* Keep the first entry of the page; publish the others with one CAS. */
		ptss_atomic_store_relaxed(&p->list.next[i], PTSS_CLAIMED);
		push_range(p, i + 1, i + ((uint32_t)1 << p->epp_shift) - 1);
	}
	return entry_of(p, i);
}

ptss_entry *ptss_claim_locked(ptss_proc *p)
{
	count_claims(p, 1);
	ptss_entry *e = claim_locked(p);
	if (!e)
		ptss_atomic_sub_relaxed(&p->claimed, 1);
	return e;
}

ptss_entry *ptss_claim(ptss_proc *p)
{
	if (ptss_unlikely(ptss_atomic_load_relaxed(&p->torn_down))) {
		errno = ESRCH;
		return NULL;
	}
	count_claims(p, 1);
	uint32_t i = ptss_freelist_pop(&p->list);
	if (ptss_likely(i != PTSS_NIL))
		return entry_of(p, i);
	ptss_lock(p);
	ptss_entry *e = claim_locked(p);
	ptss_unlock(p);
	if (!e)
		ptss_atomic_sub_relaxed(&p->claimed, 1);
	return e;
}

int ptss_release(ptss_proc *p, ptss_entry *e)
{
	if (ptss_unlikely(ptss_atomic_load_relaxed(&p->torn_down))) {
		/* The pages went with the old image: nothing to return, and e is not touched. */
		ptss_atomic_add_relaxed(&p->ignored_releases, 1);
		return 0;
	}
	uint32_t i = index_of(p, e);
	if (ptss_unlikely(i == PTSS_NIL || ptss_atomic_load_relaxed(&p->list.next[i]) != PTSS_CLAIMED))
		return -EINVAL;
	ptss_freelist_push(&p->list, i);
	ptss_atomic_sub_relaxed(&p->claimed, 1);
	return 0;
}

int ptss_enable(ptss_proc *p, size_t n, ptss_entry **out)
{
	if (!p || (n && !out))
		return -EINVAL;
	int err = 0;
	ptss_lock(p);
	if (p->torn_down) {
		err = -ESRCH;
		goto out;
	}
	if (ptss_atomic_load_relaxed(&p->base)) {
		err = -EBUSY;
		goto out;
	}
	if (n == 0)
		goto out;
	size_t per_page = (size_t)1 << p->epp_shift;
	size_t npages = (n + per_page - 1) / per_page;
	if (npages > p->max_pages) {
		err = -ENOSPC;
		ptss_atomic_add_relaxed(&p->failed_grows, 1);
		goto out;
	}
	uint32_t first;
	err = grow_locked(p, (uint32_t)npages, &first); /* a failure leaves no reservation */
	if (err)
		goto out;
	for (size_t k = 0; k < n; k++) {
		ptss_atomic_store_relaxed(&p->list.next[first + k], PTSS_CLAIMED);
		out[k] = entry_of(p, first + (uint32_t)k);
	}
	count_claims(p, n);
	push_range(p, first + (uint32_t)n, first + (uint32_t)(npages * per_page) - 1);
out:
	ptss_unlock(p);
	return err;
}

/*
 * Takes no lock. In a fork child of the process that holds p (the self space, an
 * in-process agent) the fork copied p's lock as it was: held, if another thread held it,
 * and then no thread of the child will ever release it. So ptss_fork reads only what it
 * can read without the lock:
 *   - reserve_size, fixed when p was created;
 *   - base, an atomic written only under the lock by the growth that makes the
 *     reservation (0 -> its address, once per life, before the first page is committed)
 *     and by drop_reservation (-> 0: a first growth that failed, exec/exit, detach).
 * A fork copies base as it was at the fork. If it was 0, nothing was committed yet: the
 * child has at most an inaccessible copy of a reservation under way, with no code in it
 * and no way to write it (the self space seals its memfd). Against a tracer's own
 * ptss_proc (the ptrace space), the value is whatever the last growth left, as before.
 */
int ptss_fork(ptss_proc *parent, ptss_space *child)
{
	if (!parent || !child)
		return -EINVAL;
	uint64_t base = ptss_atomic_load_acquire(&parent->base);
	if (!base)
		return 0; /* nothing was mapped before the fork: nothing was copied */
	return _ptss_space_unmap(child, base, parent->reserve_size);
}

void ptss_stats_get(const ptss_proc *p, struct ptss_stats *out)
{
	uint64_t entries = entries_of(p);
	uint64_t claimed = ptss_atomic_load_relaxed(&p->claimed);
	*out = (struct ptss_stats){
		.pages = ptss_atomic_load_relaxed(&p->pages),
		.entries = entries,
		.claimed = claimed,
		.free = p->torn_down || claimed > entries ? 0 : entries - claimed,
		.claimed_high_water = ptss_atomic_load_relaxed(&p->claimed_high_water),
		.grows = ptss_atomic_load_relaxed(&p->grows),
		.failed_grows = ptss_atomic_load_relaxed(&p->failed_grows),
		.ignored_releases = ptss_atomic_load_relaxed(&p->ignored_releases),
		.tracer_bytes = p->torn_down ? 0 : entries * sizeof(*p->list.next),
	};
}

bool ptss_proc_is_valid(const ptss_proc *p)
{
	if (p->torn_down)
		return p->list.next == NULL && !ptss_atomic_load_relaxed(&p->base) && p->pages == 0;
	uint32_t entries = entries_of(p);
	uint64_t claimed = ptss_atomic_load_relaxed(&p->claimed);
	if (p->pages > p->max_pages || (p->pages && !ptss_atomic_load_relaxed(&p->base)) ||
	    claimed > entries)
		return false;

	/* Walk the list, marking each index seen; it must end within `entries` steps. */
	size_t words = (entries + 63) / 64;
	uint64_t *seen = calloc(words ? words : 1, sizeof(*seen));
	if (!seen)
		return false;
	bool ok = true;
	uint64_t free_count = 0;
	for (uint32_t i = ptss_head_top(p->list.head); i != PTSS_NIL && ok;
	     i = ptss_atomic_load_relaxed(&p->list.next[i])) {
		ok = i < entries && !(seen[i / 64] & (1ull << (i % 64)));
		if (ok) {
			seen[i / 64] |= 1ull << (i % 64);
			free_count++;
		}
	}
	/* Everything off the list must be marked claimed, and be counted. */
	for (uint32_t i = 0; ok && i < entries; i++)
		if (!(seen[i / 64] & (1ull << (i % 64))))
			ok = ptss_atomic_load_relaxed(&p->list.next[i]) == PTSS_CLAIMED;
	free(seen);
	return ok && claimed + free_count == entries;
}
