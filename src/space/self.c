/*
 * The `self` space: pages in this process. A memfd holds the memory; the reservation maps
 * it PROT_NONE and commits pages read+execute, and a second shared mapping of the same
 * file is the writable view. The two never overlap, so nothing is writable and executable.
 *
 * The view is the only writable handle to the scratch that the process keeps:
 *   - the memfd is sealed (F_SEAL_FUTURE_WRITE, F_SEAL_GROW, F_SEAL_SHRINK) once the view
 *     is mapped: the view keeps writing, but no new writable mapping, write(2) or resize
 *     can be made through any descriptor of it, however obtained;
 *   - the executable side is mapped after the seal, so the kernel gives it no may-write
 *     right: mprotect can never make it writable, here or in a fork child's copy;
 *   - the fd is closed once both are mapped (and is close-on-exec until then);
 *   - the view is MADV_DONTFORK: a fork child has the executable copy only, which
 *     ptss_fork removes, and cannot write its parent's entries.
 * Needs Linux 5.1 (F_SEAL_FUTURE_WRITE); MFD_EXEC (6.3) is asked for where it exists.
 */
#define _GNU_SOURCE
#include "../internal.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U /* Linux 6.3: ask for an executable memfd where noexec is the default */
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010 /* Linux 5.1 */
#endif

/* target == NULL: no reservation is held. */
struct self_space {
	void *target;    /* the executable side */
	void *view;      /* the writable side */
	size_t size;
};

static int memfd_for_code(void)
{
	unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
	int fd = memfd_create("ptss", flags | MFD_EXEC);
	if (fd < 0 && errno == EINVAL) /* a kernel before 6.3 does not know MFD_EXEC */
		fd = memfd_create("ptss", flags);
	return fd;
}

static void self_release(void *ctx, bool unmap_target)
{
	struct self_space *s = ctx;
	if (!s->target)
		return;
	munmap(s->view, s->size);
	if (unmap_target)
		munmap(s->target, s->size);
	*s = (struct self_space){ 0 };
}

static int self_reserve(void *ctx, size_t size, uint64_t *base, void **view)
{
	struct self_space *s = ctx;
	if (s->target)
		return -EBUSY;
	int fd = memfd_for_code();
	if (fd < 0)
		return -errno;
	void *target = MAP_FAILED, *rw = MAP_FAILED;
	if (ftruncate(fd, (off_t)size))
		goto fail;
	rw = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (rw == MAP_FAILED || madvise(rw, size, MADV_DONTFORK))
		goto fail;
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL))
		goto fail;
	/* Mapped after the seal: a shared mapping of it can never become writable. */
	target = mmap(NULL, size, PROT_NONE, MAP_SHARED, fd, 0);
	if (target == MAP_FAILED)
		goto fail;
	close(fd);
	*s = (struct self_space){ .target = target, .view = rw, .size = size };
	*base = (uint64_t)(uintptr_t)target;
	*view = rw;
	return 0;
fail:;
	int err = -errno;
	if (rw != MAP_FAILED)
		munmap(rw, size);
	close(fd);
	return err;
}

static int self_commit(void *ctx, size_t offset, size_t len)
{
	struct self_space *s = ctx;
	if (!s->target || offset > s->size || len > s->size - offset)
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
	struct self_space *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	ptss_space *space = ptss_space_new(&self_ops, s);
	if (!space)
		free(s);
	return space;
}
