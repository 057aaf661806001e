/* A space: an ops table and its context, behind a handle the core can call through. */
#include "../internal.h"

#include <stdlib.h>
#include <string.h>

ptss_space *ptss_space_new(const struct ptss_space_ops *ops, void *ctx)
{
	ptss_check_arg(ops && ops->sz >= sizeof(size_t), NULL);
	ptss_space *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	/* An older caller's table is shorter: the missing operations stay NULL. */
	memcpy(&s->ops, ops, ops->sz < sizeof(s->ops) ? ops->sz : sizeof(s->ops));
	if (!s->ops.reserve || !s->ops.commit || !s->ops.release || !s->ops.unmap) {
		free(s);
		errno = EINVAL;
		return NULL;
	}
	s->ctx = ctx;
	return s;
}

void ptss_space_free(ptss_space *s)
{
	if (!s)
		return;
	s->ops.release(s->ctx, true);
	if (s->ops.destroy)
		s->ops.destroy(s->ctx);
	free(s);
}

int _ptss_space_reserve(ptss_space *s, size_t size, uint64_t *base, void **view)
{
	return s->ops.reserve(s->ctx, size, base, view);
}

int _ptss_space_commit(ptss_space *s, size_t offset, size_t len)
{
	return s->ops.commit(s->ctx, offset, len);
}

void _ptss_space_release(ptss_space *s, bool unmap_target)
{
	s->ops.release(s->ctx, unmap_target);
}

int _ptss_space_unmap(ptss_space *s, uint64_t addr, size_t len)
{
	return s->ops.unmap(s->ctx, addr, len);
}
