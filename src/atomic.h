/*
 * Atomic operations, each named after its memory order so that every ordering in ptss
 * can be found with grep. Plain C11 <stdatomic.h>, lock-free 32- and 64-bit operations
 * only: no double-width CAS, no libatomic.
 */
#ifndef PTSS_ATOMIC_H
#define PTSS_ATOMIC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "ptss needs lock-free 64-bit atomics");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "ptss needs lock-free 32-bit atomics");

#define ptss_atomic_load_relaxed(p)     atomic_load_explicit((p), memory_order_relaxed)
#define ptss_atomic_load_acquire(p)     atomic_load_explicit((p), memory_order_acquire)
#define ptss_atomic_store_relaxed(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)
#define ptss_atomic_store_release(p, v) atomic_store_explicit((p), (v), memory_order_release)
#define ptss_atomic_add_relaxed(p, v)   atomic_fetch_add_explicit((p), (v), memory_order_relaxed)
#define ptss_atomic_sub_relaxed(p, v)   atomic_fetch_sub_explicit((p), (v), memory_order_relaxed)

/* On failure *expected receives the current value, and the load is acquire. */
#define ptss_atomic_cas_weak_acq_rel(p, expected, desired)                                  \
	atomic_compare_exchange_weak_explicit((p), (expected), (desired), memory_order_acq_rel, \
					      memory_order_acquire)
/* On failure *expected receives the current value, with relaxed order. */
#define ptss_atomic_cas_weak_release(p, expected, desired)                                  \
	atomic_compare_exchange_weak_explicit((p), (expected), (desired), memory_order_release, \
					      memory_order_relaxed)
#define ptss_atomic_cas_weak_relaxed(p, expected, desired)                                  \
	atomic_compare_exchange_weak_explicit((p), (expected), (desired), memory_order_relaxed, \
					      memory_order_relaxed)

/* Raises *p to at least v (a high-water mark); relaxed. */
static inline void ptss_atomic_max_relaxed(_Atomic uint64_t *p, uint64_t v)
{
	uint64_t cur = ptss_atomic_load_relaxed(p);
	while (cur < v && !ptss_atomic_cas_weak_relaxed(p, &cur, v))
		;
}

#endif /* PTSS_ATOMIC_H */
