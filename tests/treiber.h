/*
 * The seed's free list, for comparison only: a Treiber stack whose head is a plain
 * pointer, popped with a single-word CAS of that pointer. It is NOT ABA-safe: a popper
 * that read head A and its next B succeeds after others popped A and B and pushed A
 * back, and installs B — an entry someone owns — as the head.
 */
#ifndef PTSS_TESTS_TREIBER_H
#define PTSS_TESTS_TREIBER_H

#include <stdatomic.h>
#include <stddef.h>

struct treiber_node {
	struct treiber_node *_Atomic next;
};

struct treiber {
	struct treiber_node *_Atomic head;
	void (*pop_hook)(void); /* called between reading the head and the CAS */
};

static inline struct treiber_node *treiber_pop(struct treiber *s)
{
	struct treiber_node *head = atomic_load_explicit(&s->head, memory_order_acquire);
	while (head) {
		struct treiber_node *next = atomic_load_explicit(&head->next, memory_order_relaxed);
		if (s->pop_hook)
			s->pop_hook();
		if (atomic_compare_exchange_weak_explicit(&s->head, &head, next, memory_order_acq_rel,
							  memory_order_acquire))
			return head;
	}
	return NULL;
}

static inline void treiber_push(struct treiber *s, struct treiber_node *n)
{
	struct treiber_node *head = atomic_load_explicit(&s->head, memory_order_relaxed);
	do
		atomic_store_explicit(&n->next, head, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(&s->head, &head, n, memory_order_release,
						      memory_order_relaxed));
}

#endif
