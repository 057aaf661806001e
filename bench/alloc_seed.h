/*
 * A model of the seed's allocator (seed/dtrace_ptss.h), for comparison only, written for
 * this bench: the records a Linux tracer would keep with the seed's layout, its free list
 * and its growth.
 *
 *   entry record == { next, addr, write_addr }     24 bytes per 64-byte entry
 *   page record  == { next page, entries[64] }     + 8 bytes per 64 entries
 *
 * The list is a Treiber stack whose head is a plain pointer: NOT ABA-safe (a popper that
 * read head A and next B succeeds after others popped A and B and pushed A back). Unlike
 * tests/treiber.h it has no test hook, so that it costs exactly what the seed's list does.
 *
 * Growth maps a page under the lock but, like the seed ("it's okay if multiple threads
 * race here"), does not look at the list again once it holds the lock: every thread that
 * found the list empty maps a page of its own.
 */
#ifndef PTSS_BENCH_ALLOC_SEED_H
#define PTSS_BENCH_ALLOC_SEED_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define SEED_PAGE_SIZE 4096u
#define SEED_ENTRY_SIZE 64u
#define SEED_ENTRIES_PER_PAGE (SEED_PAGE_SIZE / SEED_ENTRY_SIZE)

struct seed_entry {
	struct seed_entry *_Atomic next;
	uint64_t addr;    /* where the target runs it */
	void *write_addr; /* where the tracer writes it */
};

struct seed_page {
	struct seed_page *next;
	void *mapping; /* the page itself (the bench maps it in this process) */
	struct seed_entry entries[SEED_ENTRIES_PER_PAGE];
};

/* The seed keeps the page pointer implicitly (its target memory); count only its layout. */
#define SEED_TRACER_BYTES_PER_ENTRY                                                  \
	((double)(sizeof(struct seed_page) - sizeof(void *)) / SEED_ENTRIES_PER_PAGE)

struct seed_list {
	_Alignas(64) struct seed_entry *_Atomic head;
};

/* Pops with one CAS of a plain pointer. Lock-free, ABA-prone: see above. */
static inline struct seed_entry *seed_pop(struct seed_list *l)
{
	struct seed_entry *head = atomic_load_explicit(&l->head, memory_order_acquire);
	while (head) {
		struct seed_entry *next = atomic_load_explicit(&head->next, memory_order_relaxed);
		if (atomic_compare_exchange_weak_explicit(&l->head, &head, next, memory_order_acq_rel,
							  memory_order_acquire))
			return head;
	}
	return NULL;
}

/* Pushes first -> ... -> last, already linked by the caller, with one successful CAS. */
static inline void seed_push_chain(struct seed_list *l, struct seed_entry *first,
				   struct seed_entry *last)
{
	struct seed_entry *head = atomic_load_explicit(&l->head, memory_order_relaxed);
	do
		atomic_store_explicit(&last->next, head, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(&l->head, &head, first, memory_order_release,
						      memory_order_relaxed));
}

static inline void seed_push(struct seed_list *l, struct seed_entry *e)
{
	seed_push_chain(l, e, e);
}

/* Fills a page record for the page at `mapping` and links its entries first to last. */
static inline void seed_page_init(struct seed_page *pg, void *mapping)
{
	pg->mapping = mapping;
	for (unsigned i = 0; i < SEED_ENTRIES_PER_PAGE; i++) {
		struct seed_entry *e = &pg->entries[i];
		e->addr = (uint64_t)(uintptr_t)mapping + i * SEED_ENTRY_SIZE;
		e->write_addr = (char *)mapping + i * SEED_ENTRY_SIZE;
		atomic_store_explicit(&e->next, i + 1 < SEED_ENTRIES_PER_PAGE ? e + 1 : NULL,
				      memory_order_relaxed);
	}
}

/* One process life of the seed model: its list, its pages, and the lock growth takes. */
struct seed_proc {
	struct seed_list list;
	pthread_mutex_t lock;
	struct seed_page *pages; /* under lock */
	unsigned npages;         /* under lock */
};

static inline void seed_proc_init(struct seed_proc *p)
{
	atomic_store_explicit(&p->list.head, NULL, memory_order_relaxed);
	pthread_mutex_init(&p->lock, NULL);
	p->pages = NULL;
	p->npages = 0;
}

/* Maps one page (mmap, as the seed maps in its target) and publishes all its entries. */
static inline int seed_grow_locked(struct seed_proc *p)
{
	struct seed_page *pg = malloc(sizeof(*pg));
	void *m = mmap(NULL, SEED_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (!pg || m == MAP_FAILED) {
		free(pg);
		if (m != MAP_FAILED)
			munmap(m, SEED_PAGE_SIZE);
		return -1;
	}
	seed_page_init(pg, m);
	pg->next = p->pages;
	p->pages = pg;
	p->npages++;
	seed_push_chain(&p->list, &pg->entries[0], &pg->entries[SEED_ENTRIES_PER_PAGE - 1]);
	return 0;
}

/* The seed's claim: pop; when empty, map a page (no second look) and try again. */
static inline struct seed_entry *seed_claim(struct seed_proc *p)
{
	for (;;) {
		struct seed_entry *e = seed_pop(&p->list);
		if (e)
			return e;
		pthread_mutex_lock(&p->lock);
		int err = seed_grow_locked(p);
		pthread_mutex_unlock(&p->lock);
		if (err)
			return NULL;
	}
}

static inline void seed_proc_destroy(struct seed_proc *p)
{
	while (p->pages) {
		struct seed_page *pg = p->pages;
		p->pages = pg->next;
		munmap(pg->mapping, SEED_PAGE_SIZE);
		free(pg);
	}
	pthread_mutex_destroy(&p->lock);
}

#endif /* PTSS_BENCH_ALLOC_SEED_H */
