/*
 * Address spaces: where a process's scratch pages live.
 *
 * The core never maps anything itself; it asks its space. A space stands for one target
 * address space — this process (ptss_space_self_new), another process under ptrace, or a
 * test double — and holds at most one reservation at a time: the contiguous range of the
 * target from which one process life's pages are carved.
 *
 * The target sees its pages read+execute only. The tracer writes them through a view of
 * its own onto the same memory. No mapping is ever writable and executable at once.
 */
#ifndef PTSS_SPACE_H
#define PTSS_SPACE_H

#include <ptss/ptss.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The operations a space implements. Every int function returns 0 or a negative errno.
 * As with options, sz = sizeof(struct ptss_space_ops) lets the table grow.
 */
struct ptss_space_ops {
	size_t sz;
	/*
	 * Reserve `size` bytes in the target, not accessible there, and map a writable view of
	 * the same memory in the tracer. On success *base is the reservation's address in the
	 * target and *view the tracer's view of its first byte. -EBUSY if one is held already.
	 */
	int (*reserve)(void *ctx, size_t size, uint64_t *base, void **view);
	/* Make [base + offset, base + offset + len) of the reservation read+execute in the target. */
	int (*commit)(void *ctx, size_t offset, size_t len);
	/*
	 * End the reservation: drop the tracer's view and any tracer-side state, and when
	 * unmap_target is set also unmap the whole reservation in the target (one unmap).
	 * unmap_target is false after an exec or exit, when the target's memory is gone.
	 */
	void (*release)(void *ctx, bool unmap_target);
	/*
	 * Unmap [addr, addr + len) in the target. Used on a fork child's space to remove the
	 * parent's copied pages; it must not touch any view in the tracer.
	 */
	int (*unmap)(void *ctx, uint64_t addr, size_t len);
	/* Free ctx. The reservation, if any, was released before. May be NULL. */
	void (*destroy)(void *ctx);
};

/* A space over ops and ctx (ops is copied). NULL + errno on failure. */
PTSS_API ptss_space *ptss_space_new(const struct ptss_space_ops *ops, void *ctx);

/* Releases the reservation if still held (unmapping it), then destroys the space. */
PTSS_API void ptss_space_free(ptss_space *s);

/*
 * This process: pages are memfd memory mapped twice, read+execute for running and
 * read+write for writing. The writable view is the only writable handle the process
 * keeps: the memfd is sealed against new writes once the view is mapped, its fd is
 * closed, and the executable range can never be made writable (mprotect fails). The view
 * is marked MADV_DONTFORK: a forked child never inherits it. The executable range is
 * copied into children like any mapping, which is what ptss_fork removes.
 */
PTSS_API ptss_space *ptss_space_self_new(void);

/*
 * A test double that forwards to `inner` (which it owns) but fails on demand: after
 * ptss_space_failing_arm(s, n, err) the n-th following reserve or commit fails with err
 * (n = 0 disarms). Lets tests inject a failure at every point of a run.
 */
PTSS_API ptss_space *ptss_space_failing_new(ptss_space *inner);
PTSS_API void ptss_space_failing_arm(ptss_space *s, unsigned n, int err);
/* reserve and commit calls seen so far, failed ones included. */
PTSS_API unsigned ptss_space_failing_calls(const ptss_space *s);

#ifdef __cplusplus
}
#endif
#endif /* PTSS_SPACE_H */
