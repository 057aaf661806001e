/*
 * The per-process allocator: claim, release, growth under the lock, callers' caches, and
 * the lifecycle of one process life (enable, fork, exec/exit, detach).
 *
 * Nothing on the claim and release paths is counted in shared memory: the shared list
 * knows its length (freelist.h), caches know theirs, and statistics are derived from them.
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

/* The index of e in next[], or PTSS_NIL when e is not one of the `entries` mapped ones. */
static inline uint32_t index_in(const _Atomic uint64_t *next, uint32_t entries, const ptss_entry *e)
{
	uintptr_t off = (uintptr_t)e - (uintptr_t)next;
	if (off % sizeof(*next))
		return PTSS_NIL;
	off /= sizeof(*next);
	return off < entries ? (uint32_t)off : PTSS_NIL;
}

static inline uint32_t index_of(const ptss_proc *p, const ptss_entry *e)
{
	return index_in(p->list.next, entries_of(p), e);
}

static inline bool is_claimed(const _Atomic uint64_t *next, uint32_t i)
{
	return ptss_link_below(ptss_atomic_load_relaxed(&next[i])) == PTSS_CLAIMED;
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
	/* The parked entries went with the pages; a cache's next is dead with next[]. */
	for (ptss_cache *c = p->caches; c; c = c->link)
		ptss_atomic_store_relaxed(&c->n, 0);
	ptss_atomic_store_relaxed(&p->torn_down, true);
}

void ptss_proc_free(ptss_proc *p)
{
	if (!p)
		return;
	if (!p->torn_down)
		tear_down(p, true);
	for (ptss_cache *c = p->caches, *link; c; c = link) {
		link = c->link;
		free(c);
	}
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

/* Pushes the run first .. first + n - 1, which the caller owns, with one CAS. */
static void push_range(ptss_proc *p, uint32_t first, uint32_t n)
{
	if (n)
		ptss_freelist_push_chain(&p->list, NULL, first, n);
}

/*
 * Raises the high water to `off_list`, a count of entries off the shared list at some
 * instant. Relaxed: the statistic is exact at quiescence. The load first keeps the line
 * read-only once the maximum is reached.
 */
static inline void note_high_water(ptss_proc *p, uint64_t off_list)
{
	if (off_list > ptss_atomic_load_relaxed(&p->claimed_high_water))
		ptss_atomic_max_relaxed(&p->claimed_high_water, off_list);
}

/*
 * Pops from the shared list and notes the high water: the list held `depth` entries before
 * the pop, so entries - depth + 1 were off it just after. entries is loaded after the CAS
 * (acq_rel: the load cannot move before it), so it counts every page whose entries the
 * list held then, and the figure is never below the truth (it may count a page that a
 * concurrent growth has mapped but not pushed yet: an over-report, never an under-report).
 */
static inline uint32_t pop_shared(ptss_proc *p)
{
	uint32_t depth;
	uint32_t i = ptss_freelist_pop(&p->list, &depth);
	if (ptss_likely(i != PTSS_NIL))
		note_high_water(p, (uint64_t)entries_of(p) - depth + 1);
	return i;
}

ptss_entry *ptss_claim_locked(ptss_proc *p)
{
	if (ptss_unlikely(ptss_atomic_load_relaxed(&p->torn_down))) {
		errno = ESRCH;
		return NULL;
	}
	/* The double check: whoever held the lock before us may have grown the list. */
	uint32_t i = pop_shared(p);
	if (i == PTSS_NIL) {
		int err = grow_locked(p, 1, &i);
		if (err) {
			errno = -err;
			return NULL;
		}
		/* Keep the first entry of the page; publish the others with one CAS. When the
		 * double check found the list empty, all i older entries were off it; with the
		 * kept one, i + 1 are, until the push (the rest of the page is the grower's). */
		ptss_atomic_store_relaxed(&p->list.next[i], (uint64_t)PTSS_CLAIMED);
		note_high_water(p, (uint64_t)i + 1);
		push_range(p, i + 1, ((uint32_t)1 << p->epp_shift) - 1);
	}
	return entry_of(p, i);
}

ptss_entry *ptss_claim(ptss_proc *p)
{
	if (ptss_unlikely(ptss_atomic_load_relaxed(&p->torn_down))) {
		errno = ESRCH;
		return NULL;
	}
	uint32_t i = pop_shared(p);
	if (ptss_likely(i != PTSS_NIL))
		return entry_of(p, i);
	ptss_lock(p);
	ptss_entry *e = ptss_claim_locked(p);
	ptss_unlock(p);
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
	if (ptss_unlikely(i == PTSS_NIL || !is_claimed(p->list.next, i)))
		return -EINVAL;
	ptss_freelist_push(&p->list, i);
	return 0;
}

/* ---- callers' caches ---- */

ptss_cache *ptss_cache_new(ptss_proc *p)
{
	ptss_check_arg(p, NULL);
	ptss_cache *c = NULL;
	ptss_lock(p);
	if (p->torn_down) {
		errno = ESRCH;
		goto out;
	}
	/* Take an unused one: the registry never shrinks, so lock-free readers walk it safely. */
	for (c = p->caches; c && c->in_use; c = c->link)
		;
	if (!c) {
		c = aligned_alloc(PTSS_CACHE_LINE, sizeof(*c)); /* a multiple of its alignment */
		if (!c) {
			errno = ENOMEM;
			goto out;
		}
		memset(c, 0, sizeof(*c));
		c->p = p;
		c->next = p->list.next;
		ptss_atomic_store_relaxed(&c->link, p->caches);
		ptss_atomic_store_release(&p->caches, c);
	}
	c->in_use = true;
out:
	ptss_unlock(p);
	return c;
}

/* Pushes c's n oldest entries to the shared list with one CAS and keeps the rest. */
static void cache_spill(ptss_cache *c, uint32_t n)
{
	uint32_t held = ptss_atomic_load_relaxed(&c->n);
	ptss_freelist_push_chain(&c->p->list, c->idx, 0, n);
	memmove(c->idx, c->idx + n, (held - n) * sizeof(c->idx[0]));
	ptss_atomic_store_relaxed(&c->n, held - n);
}

void ptss_cache_flush(ptss_cache *c)
{
	uint32_t n = ptss_atomic_load_relaxed(&c->n);
	if (n) /* never after tear_down: it emptied every cache */
		cache_spill(c, n);
}

void ptss_cache_free(ptss_cache *c)
{
	if (!c)
		return;
	ptss_cache_flush(c);
	ptss_lock(c->p);
	c->in_use = false;
	ptss_unlock(c->p);
}

/*
 * The newest parked entry, else the shared path. Touches only c (its caller's) when it
 * has one: no atomic read-modify-write, no store another caller reads but the relaxed
 * store of n, which statistics read. Needs no torn_down check: tear_down empties every
 * cache, and it never runs concurrently with a call.
 * Progress: wait-free on the cache (no loop, no CAS); with an empty cache, ptss_claim's
 * (a lock-free pop, the lock only to grow). ABA: none on the cache, which has one owner
 * and no CAS. Memory reuse: a parked entry stays mapped until tear_down, which empties
 * the cache first; the cache itself is freed only with p.
 */
ptss_entry *ptss_cache_claim(ptss_cache *c)
{
	uint32_t n = ptss_atomic_load_relaxed(&c->n);
	if (ptss_likely(n)) {
		ptss_atomic_store_relaxed(&c->n, n - 1);
		return (ptss_entry *)&c->next[c->idx[n - 1]];
	}
	return ptss_claim(c->p);
}

/*
 * Parks e in c. Reads p's read-mostly line (torn_down, pages) and e's next[] word (written
 * only when e enters or leaves the shared list), writes only c. The word stays
 * PTSS_CLAIMED, so the check against c's own entries is what catches a double release
 * into the same cache.
 * Progress: wait-free (at most PTSS_CACHE_CAP compares) unless c is full; then one
 * lock-free chain push of its older half (freelist.h: ABA argument there). The parked
 * entry's bytes were written by this caller or handed to it by the caller's own
 * synchronisation; a spill's release CAS publishes them to the next popper.
 */
int ptss_cache_release(ptss_cache *c, ptss_entry *e)
{
	ptss_proc *p = c->p;
	if (ptss_unlikely(ptss_atomic_load_relaxed(&p->torn_down))) {
		ptss_atomic_add_relaxed(&p->ignored_releases, 1);
		return 0;
	}
	uint32_t i = index_in(c->next, entries_of(p), e);
	if (ptss_unlikely(i == PTSS_NIL || !is_claimed(c->next, i)))
		return -EINVAL;
	uint32_t n = ptss_atomic_load_relaxed(&c->n);
	for (uint32_t k = 0; k < n; k++)
		if (ptss_unlikely(c->idx[k] == i))
			return -EINVAL;
	if (ptss_unlikely(n == PTSS_CACHE_CAP)) {
		cache_spill(c, PTSS_CACHE_CAP / 2);
		n -= PTSS_CACHE_CAP / 2;
	}
	c->idx[n] = i;
	ptss_atomic_store_relaxed(&c->n, n + 1);
	return 0;
}

/* Entries parked in p's caches; lock-free (the registry only grows until p is freed). */
static uint64_t cached_count(const ptss_proc *p)
{
	uint64_t n = 0;
	for (ptss_cache *c = ptss_atomic_load_acquire((ptss_cache *_Atomic *)&p->caches); c;
	     c = ptss_atomic_load_acquire(&c->link))
		n += ptss_atomic_load_relaxed(&c->n);
	return n;
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
		ptss_atomic_store_relaxed(&p->list.next[first + k], (uint64_t)PTSS_CLAIMED);
		out[k] = entry_of(p, first + (uint32_t)k);
	}
	note_high_water(p, n);
	push_range(p, first + (uint32_t)n, (uint32_t)(npages * per_page - n));
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
	bool torn = ptss_atomic_load_relaxed(&p->torn_down);
	uint64_t entries = torn ? 0 : entries_of(p);
	uint64_t free_entries = torn ? 0 : ptss_freelist_length(&p->list) + cached_count(p);
	if (free_entries > entries) /* a snapshot taken while entries moved */
		free_entries = entries;
	uint64_t claimed = entries - free_entries;
	uint64_t high = ptss_atomic_load_relaxed(&p->claimed_high_water);
	*out = (struct ptss_stats){
		.pages = torn ? 0 : ptss_atomic_load_relaxed(&p->pages),
		.entries = entries,
		.claimed = claimed,
		.free = free_entries,
		/* At quiescence high >= claimed already; while claims run, the snapshot may have
		 * seen a pop whose note is still to come. */
		.claimed_high_water = high > claimed ? high : claimed,
		.grows = ptss_atomic_load_relaxed(&p->grows),
		.failed_grows = ptss_atomic_load_relaxed(&p->failed_grows),
		.ignored_releases = ptss_atomic_load_relaxed(&p->ignored_releases),
		.tracer_bytes = entries * sizeof(*p->list.next),
	};
}

static inline bool bit_test_and_set(uint64_t *bits, uint32_t i)
{
	bool was = bits[i / 64] & (1ull << (i % 64));
	bits[i / 64] |= 1ull << (i % 64);
	return was;
}

bool ptss_proc_is_valid(const ptss_proc *p)
{
	if (p->torn_down) {
		for (ptss_cache *c = p->caches; c; c = c->link)
			if (c->n)
				return false;
		return p->list.next == NULL && !ptss_atomic_load_relaxed(&p->base) && p->pages == 0;
	}
	uint32_t entries = entries_of(p);
	if (p->pages > p->max_pages || (p->pages && !ptss_atomic_load_relaxed(&p->base)))
		return false;

	/* Each entry is in one place: mark it when found, and fail when found twice. */
	size_t words = (entries + 63) / 64;
	uint64_t *seen = calloc(words ? words : 1, sizeof(*seen));
	if (!seen)
		return false;
	bool ok = true;

	/* The shared list: mapped entries, each once, their depths counting down to 1. */
	uint64_t listed = 0;
	uint32_t top = ptss_head_top(p->list.head), depth = 0;
	if (top != PTSS_NIL && top < entries)
		depth = ptss_link_depth(p->list.next[top]);
	for (uint32_t i = top; i != PTSS_NIL && ok; i = ptss_link_below(p->list.next[i])) {
		ok = i < entries && !bit_test_and_set(seen, i) &&
		     ptss_link_depth(p->list.next[i]) == depth - listed;
		listed++;
	}
	ok = ok && listed == depth && ptss_freelist_length(&p->list) == listed;

	/* The caches: mapped, claimed-marked entries, each in one cache once and not listed. */
	uint64_t cached = 0;
	for (ptss_cache *c = p->caches; c && ok; c = c->link) {
		ok = c->n <= PTSS_CACHE_CAP && (c->in_use || c->n == 0) && c->next == p->list.next;
		for (uint32_t k = 0; ok && k < c->n; k++)
			ok = c->idx[k] < entries && !bit_test_and_set(seen, c->idx[k]) &&
			     is_claimed(p->list.next, c->idx[k]);
		cached += c->n;
	}

	/* Everything else is owned by a thread, and marked claimed. */
	uint64_t owned = 0;
	for (uint32_t i = 0; ok && i < entries; i++)
		if (!(seen[i / 64] & (1ull << (i % 64)))) {
			ok = is_claimed(p->list.next, i);
			owned++;
		}
	free(seen);
	if (!ok || owned + cached + listed != entries)
		return false;
	/* The high water counts every entry off the list. */
	return ptss_atomic_load_relaxed(&p->claimed_high_water) >= entries - listed;
}
