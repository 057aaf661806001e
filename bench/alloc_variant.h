/*
 * The variants of the allocator bench: alloc.c is compiled once per variant with one
 * -DVARIANT_<NAME>, so every variant runs the same harness and the same workloads.
 *
 * Each variant defines:
 *   VARIANT_NAME           its name in the report
 *   VARIANT_NOTE           what it keeps per entry and which atomics a pair costs
 *   variant_init(cap)      a pool of at least cap entries, all free; 0 or -1
 *   variant_thread_start() optional (VARIANT_THREAD_HOOKS): set up a pair-workload
 *   variant_thread_end()   thread's own state before its loop, tear it down after
 *   variant_claim()        an entry, or NULL when the pool is empty
 *   variant_release(e)     gives e back
 *   variant_bytes()        tracer-side bytes kept per entry
 *
 * The list variants hand out slots of one array of 64-byte entries, which stands for the
 * target's scratch pages: an entry's address is derived from its index, as in ptss, so
 * they differ from ptss only in how the free set is kept.
 */
#ifndef PTSS_BENCH_ALLOC_VARIANT_H
#define PTSS_BENCH_ALLOC_VARIANT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#define ENTRY_SIZE 64u
#define NIL UINT32_MAX

/* The target's scratch memory, for the variants that hand out slots of it. */
static unsigned char *slots;

static inline int slots_init(size_t cap)
{
	slots = aligned_alloc(4096, cap * ENTRY_SIZE);
	return slots ? 0 : -1;
}
static inline void *slot_of(uint32_t i) { return slots + (size_t)i * ENTRY_SIZE; }
static inline uint32_t index_of(void *e)
{
	return (uint32_t)((size_t)((unsigned char *)e - slots) / ENTRY_SIZE);
}

#if defined(VARIANT_PTSS)
/*
 * ---- ptss through its public API, on a space in this process ----
 * Two paths of one executable, measured as two variants (bench/run sets
 * PTSS_BENCH_PATH=shared for the second):
 *   ptss         each pair-workload thread opens a cache (ptss_cache_new) and claims and
 *                releases through it: the per-caller path, which is what the goals are about;
 *   ptss_shared  ptss_claim / ptss_release on the shared list, as a tracer that serves many
 *                threads from one loop calls them (and every thread without a cache).
 * Thread churn uses the shared path in both: a thread that claims once gains nothing from
 * a cache of its own.
 */
#include <ptss/ptss.h>
#include <ptss/space.h>
#include <string.h>
#define VARIANT_THREAD_HOOKS 1
static const char *variant_name = "ptss";
static const char *variant_note =
	"next[] word per entry (8 B: index below, list depth); per-caller cache: no atomic "
	"read-modify-write while the cache has an entry, else one 64-bit CAS on a tag:index head";
#define VARIANT_NAME variant_name
#define VARIANT_NOTE variant_note
static ptss_space *space;
static ptss_proc *proc;
static bool shared_path;
static _Thread_local ptss_cache *cache;

static int variant_init(size_t cap)
{
	const char *path = getenv("PTSS_BENCH_PATH");
	if (path && strcmp(path, "shared") == 0) {
		shared_path = true;
		variant_name = "ptss_shared";
		variant_note = "next[] word per entry (8 B: index below, list depth); one 64-bit CAS "
			       "on a tag:index head per claim and per release, no counter";
	}
	space = ptss_space_self_new();
	proc = space ? ptss_proc_new(space, NULL) : NULL;
	ptss_entry **all = calloc(cap, sizeof(*all));
	/* Map the pool before timing, as the other variants build theirs. */
	if (!proc || !all || ptss_enable(proc, cap, all)) {
		free(all);
		return -1;
	}
	for (size_t i = 0; i < cap; i++)
		ptss_release(proc, all[i]);
	free(all);
	return 0;
}
static void variant_thread_start(void)
{
	if (!shared_path)
		cache = ptss_cache_new(proc);
}
static void variant_thread_end(void)
{
	ptss_cache_free(cache);
	cache = NULL;
}
static inline void *variant_claim(void)
{
	return cache ? ptss_cache_claim(cache) : ptss_claim(proc);
}
static inline void variant_release(void *e)
{
	if (cache)
		ptss_cache_release(cache, e);
	else
		ptss_release(proc, e);
}
static double variant_bytes(void)
{
	struct ptss_stats st;
	ptss_stats_get(proc, &st);
	return st.entries ? (double)st.tracer_bytes / (double)st.entries : 0;
}

#elif defined(VARIANT_PTSS_LIST) || defined(VARIANT_PTSS_LIST_CNT)
/*
 * ---- diagnostic: ptss's own free list (src/freelist.h), inlined, without the library ----
 * ptss_list is the bare algorithm; ptss_list_cnt adds what ptss_claim and ptss_release
 * did around it before issue 11 (a claimed counter beside the head, a fetch-add per claim
 * and a fetch-sub per release, and the CLAIMED check on release). The steps from treiber
 * to ptss_list to ptss_shared say what each part costs.
 */
#include "freelist.h"
#if defined(VARIANT_PTSS_LIST)
#define VARIANT_NAME "ptss_list"
#define VARIANT_NOTE "diagnostic: src/freelist.h alone (tag:index head, one 64-bit CAS " \
		     "per pop and per push; the list's depth in each next[] word)"
#define COUNTED 0
#else
#define VARIANT_NAME "ptss_list_cnt"
#define VARIANT_NOTE "diagnostic: src/freelist.h + a shared claimed counter and the " \
		     "release check (ptss before issue 11)"
#define COUNTED 1
#endif
static struct {
	_Alignas(64) struct ptss_freelist fl; /* the counter beside the head, as ptss had it */
	_Atomic uint64_t claimed;
} hot;

static int variant_init(size_t cap)
{
	hot.fl.next = calloc(cap, sizeof(*hot.fl.next));
	if (!hot.fl.next || slots_init(cap))
		return -1;
	for (size_t i = 0; i < cap; i++)
		atomic_init(&hot.fl.next[i], ptss_link(i + 1 < cap ? (uint32_t)(i + 1) : PTSS_NIL,
						       (uint32_t)(cap - i)));
	atomic_init(&hot.fl.head, 0); /* tag 0, top 0 */
	return 0;
}
static inline void *variant_claim(void)
{
	uint32_t depth;
	uint32_t i = ptss_freelist_pop(&hot.fl, &depth);
	if (i == PTSS_NIL)
		return NULL;
	if (COUNTED)
		atomic_fetch_add_explicit(&hot.claimed, 1, memory_order_relaxed);
	return slot_of(i);
}
static inline void variant_release(void *e)
{
	uint32_t i = index_of(e);
	if (COUNTED) {
		if (ptss_link_below(atomic_load_explicit(&hot.fl.next[i], memory_order_relaxed)) !=
		    PTSS_CLAIMED)
			abort();
		atomic_fetch_sub_explicit(&hot.claimed, 1, memory_order_relaxed);
	}
	ptss_freelist_push(&hot.fl, i);
}
static double variant_bytes(void) { return sizeof(*hot.fl.next); }

#elif defined(VARIANT_TREIBER)
/* ---- the seed's list: plain-pointer Treiber stack over 24-byte records ---- */
#include "alloc_seed.h"
#define VARIANT_NAME "treiber"
#define VARIANT_NOTE "seed layout: {next, addr, write_addr} per entry + page records; " \
		     "one CAS of a plain pointer per pop and per push, ABA-prone"
static struct seed_list list;
static struct seed_page *pages;

static int variant_init(size_t cap)
{
	size_t npages = (cap + SEED_ENTRIES_PER_PAGE - 1) / SEED_ENTRIES_PER_PAGE;
	pages = calloc(npages, sizeof(*pages));
	if (!pages || slots_init(npages * SEED_ENTRIES_PER_PAGE))
		return -1;
	for (size_t p = 0; p < npages; p++) {
		seed_page_init(&pages[p], slot_of((uint32_t)(p * SEED_ENTRIES_PER_PAGE)));
		seed_push_chain(&list, &pages[p].entries[0],
				&pages[p].entries[SEED_ENTRIES_PER_PAGE - 1]);
	}
	return 0;
}
static inline void *variant_claim(void) { return seed_pop(&list); }
static inline void variant_release(void *e) { seed_push(&list, e); }
static double variant_bytes(void) { return SEED_TRACER_BYTES_PER_ENTRY; }

#elif defined(VARIANT_MUTEX) || defined(VARIANT_SPIN)
/* ---- a LIFO of indices under a lock: ptss's layout, a lock instead of the CAS ---- */
#if defined(VARIANT_MUTEX)
#define VARIANT_NAME "mutex"
#define VARIANT_NOTE "next[] index per entry (4 B); pthread_mutex around pop and push " \
		     "(an atomic to lock, one to unlock)"
typedef pthread_mutex_t lock_t;
#define lock_init(l)    pthread_mutex_init((l), NULL)
#define lock_acquire(l) pthread_mutex_lock(l)
#define lock_release(l) pthread_mutex_unlock(l)
#else
#define VARIANT_NAME "spin"
#define VARIANT_NOTE "next[] index per entry (4 B); pthread_spinlock around pop and push " \
		     "(never sleeps: a preempted holder stalls every waiter)"
typedef pthread_spinlock_t lock_t;
#define lock_init(l)    pthread_spin_init((l), PTHREAD_PROCESS_PRIVATE)
#define lock_acquire(l) pthread_spin_lock(l)
#define lock_release(l) pthread_spin_unlock(l)
#endif
static struct {
	_Alignas(64) lock_t lock; /* the lock and the head share the line they move with */
	uint32_t head;
} list;
static uint32_t *next;

static int variant_init(size_t cap)
{
	next = calloc(cap, sizeof(*next));
	if (!next || slots_init(cap))
		return -1;
	lock_init(&list.lock);
	for (size_t i = 0; i < cap; i++)
		next[i] = i + 1 < cap ? (uint32_t)(i + 1) : NIL;
	list.head = 0;
	return 0;
}
static inline void *variant_claim(void)
{
	lock_acquire(&list.lock);
	uint32_t i = list.head;
	if (i != NIL)
		list.head = next[i];
	lock_release(&list.lock);
	return i == NIL ? NULL : slot_of(i);
}
static inline void variant_release(void *e)
{
	uint32_t i = index_of(e);
	lock_acquire(&list.lock);
	next[i] = list.head;
	list.head = i;
	lock_release(&list.lock);
}
static double variant_bytes(void) { return sizeof(*next); }

#elif defined(VARIANT_BITMAP)
/*
 * ---- one bit per entry, as Linux uprobes hands out its XOL slots ----
 * Find a zero bit from the start, set it with an atomic or; if another thread set it first,
 * look again. Release clears it. No ABA: a bit has no history to confuse.
 */
#define VARIANT_NAME "bitmap"
#define VARIANT_NOTE "1 bit per entry; scan from word 0, fetch-or to set, fetch-and to clear"
static _Atomic uint64_t *words;
static size_t nwords;

static int variant_init(size_t cap)
{
	nwords = (cap + 63) / 64;
	words = aligned_alloc(64, (nwords * sizeof(*words) + 63) & ~(size_t)63);
	if (!words || slots_init(nwords * 64))
		return -1;
	for (size_t w = 0; w < nwords; w++)
		atomic_init(&words[w], 0);
	return 0;
}
static inline void *variant_claim(void)
{
	for (size_t w = 0; w < nwords; w++) {
		uint64_t v = atomic_load_explicit(&words[w], memory_order_relaxed);
		while (~v) {
			uint64_t bit = 1ull << __builtin_ctzll(~v);
			uint64_t old = atomic_fetch_or_explicit(&words[w], bit, memory_order_acq_rel);
			if (!(old & bit))
				return slot_of((uint32_t)(w * 64 + (size_t)__builtin_ctzll(bit)));
			v = old | bit;
		}
	}
	return NULL;
}
static inline void variant_release(void *e)
{
	uint32_t i = index_of(e);
	atomic_fetch_and_explicit(&words[i / 64], ~(1ull << (i % 64)), memory_order_release);
}
static double variant_bytes(void) { return 1.0 / 8; }

#elif defined(VARIANT_CK)
/* ---- Concurrency Kit's ck_stack, MPMC: ABA-safe through a double-width CAS ---- */
#include <ck_stack.h>
#ifndef CK_F_STACK_POP_MPMC
#error "ck_stack_pop_mpmc needs a double-width CAS (CK_F_PR_CAS_PTR_2_VALUE)"
#endif
#define VARIANT_NAME "ck_stack"
#define VARIANT_NOTE "next pointer per entry (8 B); pop: 128-bit CAS (cmpxchg16b) on " \
		     "head+generation; push: 64-bit CAS on head"
static ck_stack_t stack CK_CC_CACHELINE; /* cmpxchg16b needs 16-byte alignment */
static ck_stack_entry_t *links;          /* links[i] stands for slot i */

static int variant_init(size_t cap)
{
	links = calloc(cap, sizeof(*links));
	if (!links || slots_init(cap))
		return -1;
	for (size_t i = cap; i-- > 0;)
		ck_stack_push_mpmc(&stack, &links[i]);
	return 0;
}
static inline void *variant_claim(void)
{
	ck_stack_entry_t *l = ck_stack_pop_mpmc(&stack);
	return l ? slot_of((uint32_t)(l - links)) : NULL;
}
static inline void variant_release(void *e) { ck_stack_push_mpmc(&stack, &links[index_of(e)]); }
static double variant_bytes(void) { return sizeof(*links); }

#elif defined(VARIANT_GLIBC) || defined(VARIANT_JEMALLOC) || defined(VARIANT_MIMALLOC)
/*
 * ---- a 64-byte malloc per entry ----
 * What a tracer gets if it takes its scratch from a general allocator: thread caches make
 * it fast, but the memory is the tracer's own, not executable in the target. Each
 * allocator is called through its own API (its own executable for jemalloc and mimalloc,
 * which also replace malloc there) so the report is sure which one ran.
 */
#if defined(VARIANT_GLIBC)
#include <malloc.h>
#define VARIANT_NAME "glibc_malloc"
#define alloc64()       malloc(ENTRY_SIZE)
#define free64(p)       free(p)
/* The chunk header sits before the usable bytes. */
#define footprint64(p)  (malloc_usable_size(p) + sizeof(size_t))
#elif defined(VARIANT_JEMALLOC)
#include <jemalloc/jemalloc.h>
#define VARIANT_NAME "jemalloc"
#define alloc64()       mallocx(ENTRY_SIZE, 0)
#define free64(p)       dallocx((p), 0)
#define footprint64(p)  sallocx((p), 0)
#else
#include <mimalloc.h>
#define VARIANT_NAME "mimalloc"
#define alloc64()       mi_malloc(ENTRY_SIZE)
#define free64(p)       mi_free(p)
#define footprint64(p)  mi_usable_size(p)
#endif
#define VARIANT_NOTE "the 64-byte object itself, in the tracer's heap (not the target's)"
static double footprint;

static int variant_init(size_t cap)
{
	(void)cap;
	void *p = alloc64();
	if (!p)
		return -1;
	footprint = (double)footprint64(p);
	free64(p);
	return 0;
}
static inline void *variant_claim(void) { return alloc64(); }
static inline void variant_release(void *e) { free64(e); }
static double variant_bytes(void) { return footprint; }

#elif defined(VARIANT_CAS2)
/*
 * ---- the floor: two bare 64-bit CAS per pair on one shared word ----
 * A load and a CAS loop for the claim, the same for the release: the least any
 * single-word lock-free list can do. Not an allocator; the "pair" it returns is a token.
 */
#define VARIANT_NAME "cas2"
#define VARIANT_NOTE "reference: one load + CAS loop per claim and per release, no list"
static struct {
	_Alignas(64) _Atomic uint64_t word;
} cas2;

static int variant_init(size_t cap)
{
	(void)cap;
	return 0;
}
static inline void *variant_claim(void)
{
	uint64_t v = atomic_load_explicit(&cas2.word, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(&cas2.word, &v, v + 1, memory_order_acq_rel,
						      memory_order_acquire))
		;
	return &cas2;
}
static inline void variant_release(void *e)
{
	(void)e;
	uint64_t v = atomic_load_explicit(&cas2.word, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(&cas2.word, &v, v + 1, memory_order_release,
						      memory_order_relaxed))
		;
}
static double variant_bytes(void) { return 0; }

#else
#error "define one VARIANT_<NAME>"
#endif

#ifndef VARIANT_THREAD_HOOKS
/* Per-thread set-up and tear-down, around a pair-workload thread's loop: none by default. */
static void variant_thread_start(void) {}
static void variant_thread_end(void) {}
#endif

#endif /* PTSS_BENCH_ALLOC_VARIANT_H */
