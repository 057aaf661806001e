/*
 * The free list: a lock-free LIFO of entry indices, ABA-safe with one 64-bit CAS.
 *
 * Indices are threaded through next[]; the head packs the top index and a generation tag
 * into one word, so no double-width CAS is needed:
 *
 *   head    == tag << 32 | top             top == PTSS_NIL when the list is empty
 *   next[i] == the index below i           while i is on the list (PTSS_NIL at the bottom)
 *   next[i] == PTSS_CLAIMED                while i is owned by a thread
 *
 * Every successful CAS on head adds one to the tag, so the head word takes a value it held
 * before only after 2^32 modifications. A popper that read (top, tag) and next[top] can
 * therefore succeed only if no other pop or push happened in between, which is exactly when
 * next[top] is still top's successor: the ABA case of a plain-pointer stack (pop A, pop B,
 * push A between the read and the CAS) now fails the CAS and retries. Wrap-around would need
 * one thread stalled between two instructions for 2^32 list operations.
 *
 * Memory reuse: next[] is never freed while the list is in use, so a popper may read
 * next[top] of an entry that was popped meanwhile; the value is discarded when its CAS fails.
 * Reads of next[] are atomic (relaxed) so that such a stale read is not a data race.
 */
#ifndef PTSS_FREELIST_H
#define PTSS_FREELIST_H

#include "atomic.h"

#define PTSS_NIL     UINT32_MAX
#define PTSS_CLAIMED (UINT32_MAX - 1)
#define PTSS_MAX_ENTRIES (UINT32_MAX - 1) /* indices stay below PTSS_CLAIMED */

struct ptss_freelist {
	_Atomic uint64_t head;
	_Atomic uint32_t *next;
};

static inline uint32_t ptss_head_top(uint64_t head) { return (uint32_t)head; }
static inline uint64_t ptss_head_next(uint64_t head, uint32_t top)
{
	return ((head >> 32) + 1) << 32 | top;
}

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
 * Pops the top index and marks it PTSS_CLAIMED, or returns PTSS_NIL when empty.
 * Lock-free: a CAS fails only because another pop or push succeeded.
 * acq_rel: acquire pairs with the release of the push that published top (its next[] and
 * the bytes its last owner wrote); release orders this pop before a later push of it.
 */
static inline uint32_t ptss_freelist_pop(struct ptss_freelist *fl)
{
	uint64_t head = ptss_atomic_load_acquire(&fl->head);
	for (;;) {
		uint32_t top = ptss_head_top(head);
		if (top == PTSS_NIL)
			return PTSS_NIL;
		uint32_t below = ptss_atomic_load_relaxed(&fl->next[top]);
		PTSS_POP_HOOK();
		if (ptss_atomic_cas_weak_acq_rel(&fl->head, &head, ptss_head_next(head, below))) {
			ptss_atomic_store_relaxed(&fl->next[top], PTSS_CLAIMED);
			return top;
		}
	}
}

/*
 * Pushes the chain first -> ... -> last, already linked through next[] by the caller, which
 * owns all of it. One successful CAS publishes the whole chain. Lock-free, as pop. The
 * release CAS publishes next[] and everything the owner wrote before.
 */
static inline void ptss_freelist_push_chain(struct ptss_freelist *fl, uint32_t first, uint32_t last)
{
	uint64_t head = ptss_atomic_load_relaxed(&fl->head);
	do {
		ptss_atomic_store_relaxed(&fl->next[last], ptss_head_top(head));
		PTSS_PUSH_HOOK();
	} while (!ptss_atomic_cas_weak_release(&fl->head, &head, ptss_head_next(head, first)));
}

static inline void ptss_freelist_push(struct ptss_freelist *fl, uint32_t i)
{
	ptss_freelist_push_chain(fl, i, i);
}

#endif /* PTSS_FREELIST_H */
