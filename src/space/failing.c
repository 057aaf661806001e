/*
 * A space that fails on demand, for tests: it forwards to an inner space and makes the
 * n-th reserve or commit after being armed fail with a chosen error, before reaching the
 * inner space (so the failure leaves nothing behind, as a real failed mmap does).
 */
#include "../internal.h"

#include <stdlib.h>

struct failing_space {
	ptss_space *inner;
	unsigned calls;   /* reserve and commit calls seen */
	unsigned fail_at; /* the call that fails; 0: none */
	int err;
};

static int should_fail(struct failing_space *f)
{
	f->calls++;
	if (f->fail_at && f->calls == f->fail_at) {
		f->fail_at = 0;
		return f->err;
	}
	return 0;
}

static int failing_reserve(void *ctx, size_t size, uint64_t *base, void **view)
{
	struct failing_space *f = ctx;
	int err = should_fail(f);
	return err ? err : _ptss_space_reserve(f->inner, size, base, view);
}

static int failing_commit(void *ctx, size_t offset, size_t len)
{
	struct failing_space *f = ctx;
	int err = should_fail(f);
	return err ? err : _ptss_space_commit(f->inner, offset, len);
}

static void failing_release(void *ctx, bool unmap_target)
{
	struct failing_space *f = ctx;
	_ptss_space_release(f->inner, unmap_target);
}

static int failing_unmap(void *ctx, uint64_t addr, size_t len)
{
	struct failing_space *f = ctx;
	return _ptss_space_unmap(f->inner, addr, len);
}

static void failing_destroy(void *ctx)
{
	struct failing_space *f = ctx;
	ptss_space_free(f->inner);
	free(f);
}

static const struct ptss_space_ops failing_ops = {
	.sz = sizeof(struct ptss_space_ops),
	.reserve = failing_reserve,
	.commit = failing_commit,
	.release = failing_release,
	.unmap = failing_unmap,
	.destroy = failing_destroy,
};

ptss_space *ptss_space_failing_new(ptss_space *inner)
{
	ptss_check_arg(inner, NULL);
	struct failing_space *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->inner = inner;
	ptss_space *s = ptss_space_new(&failing_ops, f);
	if (!s)
		free(f);
	return s;
}

static struct failing_space *as_failing(const ptss_space *s)
{
	return s && s->ops.reserve == failing_reserve ? s->ctx : NULL;
}

void ptss_space_failing_arm(ptss_space *s, unsigned n, int err)
{
	struct failing_space *f = as_failing(s);
	if (!f)
		return;
	f->fail_at = n ? f->calls + n : 0;
	f->err = err < 0 ? err : -err;
}

unsigned ptss_space_failing_calls(const ptss_space *s)
{
	struct failing_space *f = as_failing(s);
	return f ? f->calls : 0;
}
