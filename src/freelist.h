/*
 * The free list: a lock-free LIFO of entry indices, ABA-safe with one 64-bit CAS, that
 * knows its own length at no extra shared access.
 *
 * Indices are threaded through next[]; the head packs the top index and a generation tag
 * into one word, so no double-width CAS is needed. Each next[] word packs the index below
 * and the depth of the list from that entry down:
 *
 *   head    == tag << 32 | top             top == PTSS_NIL when the list is empty
 *   next[i] == depth << 32 | below         while i is on the list: below is the index under
 *                                          i (PTSS_NIL at the bottom), depth the number of
 *                                          entries from i down (1 at the bottom)
 *   next[i] == PTSS_CLAIMED                while i is off the list (owned, or in a cache)
 *   |list|  == depth of next[top]          (0 when empty)
 *
 * The depth is what lets ptss keep no shared counter on claim and release: the length of
 * the list, hence how many entries are off it, is read from the word a pop reads anyway;
 * a push reads the old top's word (a line it is about to publish over) to compute it.
 *
 * Every successful CAS on head adds one to the tag, so the head word takes a value it held
 * before only after 2^32 modifications. A popper that read (top, tag) and next[top] can
 * therefore succeed only if no other pop or push happened in between, which is exactly when
 * next[top] is still top's successor: the ABA case of a plain-pointer stack (pop A, pop B,
 * push A between the read and the CAS) now fails the CAS and retries. Wrap-around would need
 * one thread stalled between two instructions for 2^32 list operations. The same argument
 * covers a pusher's read of the old top's depth: if its CAS succeeds, nothing happened to
 * the list since it loaded head, so that depth was the old top's, unchanged.
 *
 * Memory reuse: next[] is never freed while the list is in use, so a popper may read
 * next[top] of an entry that was popped meanwhile; the value is discarded when its CAS fails.
 * Reads of next[] are atomic (relaxed) so that such a stale read is not a data race.
 */
#ifndef PTSS_FREELIST_H
#define PTSS_FREELIST_H

#include "atomic.h"

#include <stddef.h>

#define PTSS_NIL     UINT32_MAX
#define PTSS_CLAIMED (UINT32_MAX - 1)
#define PTSS_MAX_ENTRIES (UINT32_MAX - 1) /* indices stay below PTSS_CLAIMED */

struct ptss_freelist {
	_Atomic uint64_t head;
	_Atomic uint64_t *next;
};

static inline uint32_t ptss_head_top(uint64_t head) { return (uint32_t)head; }
static inline uint64_t ptss_head_next(uint64_t head, uint32_t top)
{
	return ((head >> 32) + 1) << 32 | top;
}
static inline uint64_t ptss_link(uint32_t below, uint32_t depth)
{
	return (uint64_t)depth << 32 | below;
}
static inline uint32_t ptss_link_below(uint64_t link) { return (uint32_t)link; }
static inline uint32_t ptss_link_depth(uint64_t link) { return (uint32_t)(link >> 32); }

#ifdef PTSS_TEST_HOOKS
/* Called by a popper (pusher) between reading the head and its CAS: lets a test interleave. */
extern void (*_ptss_freelist_pop_hook)(void);
extern void (*_ptss_freelist_push_hook)(void);
#define PTSS_POP_HOOK() do { if (_ptss_freelist_pop_hook) _ptss_freelist_pop_hook(); } while (0)
#define PTSS_PUSH_HOOK() do { if (_ptss_freelist_push_hook) _ptss_freelist_push_hook(); } while (0)
#else
#define PTSS_POP_HOOK() ((void)0)
#define PTSS_PUSH_HOOK() ((void)0)
#endif

/*
 * Pops the top index and marks it PTSS_CLAIMED, or returns PTSS_NIL when empty. *depth
 * receives the length of the list just before the pop (0 when empty).
 * Lock-free: a CAS fails only because another pop or push succeeded.
 * acq_rel: acquire pairs with the release of the push that published top (its next[] and
 * the bytes its last owner wrote); release orders this pop before a later push of it.
 */
static inline uint32_t ptss_freelist_pop(struct ptss_freelist *fl, uint32_t *depth)
{
	uint64_t head = ptss_atomic_load_acquire(&fl->head);
	for (;;) {
		uint32_t top = ptss_head_top(head);
		if (top == PTSS_NIL) {
			*depth = 0;
			return PTSS_NIL;
		}
		uint64_t link = ptss_atomic_load_relaxed(&fl->next[top]);
		PTSS_POP_HOOK();
		if (ptss_atomic_cas_weak_acq_rel(&fl->head, &head,
						 ptss_head_next(head, ptss_link_below(link)))) {
			ptss_atomic_store_relaxed(&fl->next[top], (uint64_t)PTSS_CLAIMED);
			*depth = ptss_link_depth(link);
			return top;
		}
	}
}

/* The k-th index of a chain, from its top: idx[k], or first + k when idx is NULL. */
static inline uint32_t ptss_chain_at(const uint32_t *idx, uint32_t first, uint32_t k)
{
	return idx ? idx[k] : first + k;
}

/*
 * Pushes a chain of n >= 1 entries that the caller owns, top first: idx[0..n), or the run
 * first, first + 1, ..., first + n - 1 when idx is NULL. Links and depths are written for
 * the head the CAS expects, so each attempt rewrites the chain's n words (n is 1 for a
 * release, a page or half a cache for the others); one successful CAS publishes it all.
 * Lock-free, as pop. Acquire on the head loads makes the old top's depth the one its
 * pusher wrote; the release CAS publishes next[] and everything the owner wrote before.
 */
static inline void ptss_freelist_push_chain(struct ptss_freelist *fl, const uint32_t *idx,
					    uint32_t first, uint32_t n)
{
	uint64_t head = ptss_atomic_load_acquire(&fl->head);
	for (;;) {
		uint32_t top = ptss_head_top(head);
		uint32_t depth = top == PTSS_NIL ? 0
				 : ptss_link_depth(ptss_atomic_load_relaxed(&fl->next[top]));
		uint32_t below = top;
		for (uint32_t k = n; k-- > 0;) { /* bottom up */
			uint32_t i = ptss_chain_at(idx, first, k);
			ptss_atomic_store_relaxed(&fl->next[i], ptss_link(below, ++depth));
			below = i;
		}
		PTSS_PUSH_HOOK();
		if (ptss_atomic_cas_weak_acq_rel(&fl->head, &head, ptss_head_next(head, below)))
			return;
	}
}

static inline void ptss_freelist_push(struct ptss_freelist *fl, uint32_t i)
{
	ptss_freelist_push_chain(fl, NULL, i, 1);
}

/*
 * The length of the list: exact when no pop or push runs concurrently, otherwise a value
 * the list had at some instant during the call, or, when it keeps changing, the last
 * one read. Re-reads head after the top's word (acquire orders the two loads) and retries
 * when it moved.
 */
static inline uint32_t ptss_freelist_length(const struct ptss_freelist *fl)
{
	uint64_t head = ptss_atomic_load_acquire((_Atomic uint64_t *)&fl->head);
	uint32_t len = 0;
	for (int tries = 0; tries < 8; tries++) {
		uint32_t top = ptss_head_top(head);
		if (top == PTSS_NIL)
			return 0;
		len = ptss_link_depth(ptss_atomic_load_acquire(&fl->next[top]));
		uint64_t again = ptss_atomic_load_acquire((_Atomic uint64_t *)&fl->head);
		if (again == head)
			break;
		head = again;
	}
	return len;
}

#endif /* PTSS_FREELIST_H */
