/*
 * The `self` space: pages in this process. A memfd holds the memory; the reservation maps
 * it PROT_NONE and commits pages read+execute, and a second shared mapping of the same
 * file is the writable view. The two never overlap, so nothing is writable and executable.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U /* Linux 6.3: ask for an executable memfd where noexec is the default */
#endif

struct self_space {
	int fd;          /* -1 when no reservation is held */
	void *target;    /* the executable side */
	void *view;      /* the writable side */
	size_t size;
};

static int memfd_for_code(void)
{
	int fd = memfd_create("ptss", MFD_CLOEXEC | MFD_EXEC);
	if (fd < 0 && errno == EINVAL) /* a kernel before 6.3 does not know MFD_EXEC */
		fd = memfd_create("ptss", MFD_CLOEXEC);
	return fd;
}

static void self_release(void *ctx, bool unmap_target)
{
	struct self_space *s = ctx;
	if (s->fd < 0)
		return;
	munmap(s->view, s->size);
	if (unmap_target)
		munmap(s->target, s->size);
	close(s->fd);
	*s = (struct self_space){ .fd = -1 };
}

static int self_reserve(void *ctx, size_t size, uint64_t *base, void **view)
{
	struct self_space *s = ctx;
	if (s->fd >= 0)
		return -EBUSY;
	int fd = memfd_for_code();
	if (fd < 0)
		return -errno;
	s->fd = fd;
	s->size = size;
	s->target = s->view = MAP_FAILED;
	if (ftruncate(fd, (off_t)size))
		goto fail;
	s->target = mmap(NULL, size, PROT_NONE, MAP_SHARED, fd, 0);
	if (s->target == MAP_FAILED)
		goto fail;
	s->view = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (s->view == MAP_FAILED || madvise(s->view, size, MADV_DONTFORK))
		goto fail;
	*base = (uint64_t)(uintptr_t)s->target;
	*view = s->view;
	return 0;
fail:;
	int err = -errno;
	if (s->view != MAP_FAILED)
		munmap(s->view, size);
	if (s->target != MAP_FAILED)
		munmap(s->target, size);
	close(fd);
	*s = (struct self_space){ .fd = -1 };
	return err;
}

static int self_commit(void *ctx, size_t offset, size_t len)
{
	struct self_space *s = ctx;
	if (s->fd < 0 || offset > s->size || len > s->size - offset)
		return -EINVAL;
	return mprotect((char *)s->target + offset, len, PROT_READ | PROT_EXEC) ? -errno : 0;
}

static int self_unmap(void *ctx, uint64_t addr, size_t len)
{
	(void)ctx;
	return munmap((void *)(uintptr_t)addr, len) ? -errno : 0;
}

static const struct ptss_space_ops self_ops = {
	.sz = sizeof(struct ptss_space_ops),
	.reserve = self_reserve,
	.commit = self_commit,
	.release = self_release,
	.unmap = self_unmap,
	.destroy = free,
};

ptss_space *ptss_space_self_new(void)
{
	struct self_space *s = malloc(sizeof(*s));
	if (!s)
		return NULL;
	*s = (struct self_space){ .fd = -1 };
	ptss_space *space = ptss_space_new(&self_ops, s);
	if (!space)
		free(s);
	return space;
}
