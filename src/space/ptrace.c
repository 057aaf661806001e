/*
 * The `ptrace` space: pages inside another process, mapped by system calls injected into
 * one of its stopped threads (see inject.c). The memory is a memfd created in the target;
 * the tracer maps the file read+write through /proc/PID/fd and seals it against any other
 * writable mapping, then the target maps it PROT_NONE and commits pages read+execute. The
 * target's descriptor is closed again at once: the mappings keep the memfd alive, and the
 * program's descriptor table is left as it was. The program can neither write its pages
 * nor make them writable, nor can a fork child.
 *
 * Every injection is checked against the borrowed thread's seccomp filters first (see
 * inject.c); one they would not survive is not made, and its reason is kept.
 *
 * Cost, in injections: reserve 3 (memfd_create, mmap, close), commit 1 (any number of
 * pages), release 1 (munmap), fork clean-up 1 (munmap, whatever the page count).
 */
#define _GNU_SOURCE
#include "../inject.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <unistd.h>

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

struct ptrace_space {
	pid_t pid, tid;
	uint64_t insn;          /* a syscall instruction in the target; 0 until needed */
	int mem;                /* /proc/PID/mem, for the memfd's name; -1 until needed */
	uint64_t base;          /* the reservation in the target; 0 when none */
	void *view;             /* the tracer's read+write mapping of it */
	size_t size;
	unsigned long injections;
	char refusal[200];      /* why the last injection was not made; "" when it was */
};

static long inject(struct ptrace_space *s, long nr, long a0, long a1, long a2, long a3, long a4, long a5)
{
	if (!s->insn && !(s->insn = _ptss_find_syscall_insn(s->pid)))
		return -ENOEXEC;
	const long args[6] = { a0, a1, a2, a3, a4, a5 };
	s->injections++;
	s->refusal[0] = 0;
	return _ptss_inject(s->tid, s->insn, nr, args, s->refusal, sizeof(s->refusal));
}

/*
 * memfd_create reads its name from the target's memory: lend it 16 bytes of the borrowed
 * thread's stack, below the 128-byte red zone, and give them back afterwards.
 */
static long create_memfd(struct ptrace_space *s)
{
	char path[64];
	if (s->mem < 0) {
		snprintf(path, sizeof(path), "/proc/%d/mem", (int)s->pid);
		if ((s->mem = open(path, O_RDWR | O_CLOEXEC)) < 0)
			return -errno;
	}
	struct user_regs_struct regs;
	if (ptrace(PTRACE_GETREGS, s->tid, 0, &regs))
		return -errno;
	uint64_t at = ((regs.rsp - 128 - 16) & ~15ull);
	char saved[16], name[16] = "ptss";
	if (pread(s->mem, saved, sizeof(saved), (off_t)at) != sizeof(saved) ||
	    pwrite(s->mem, name, sizeof(name), (off_t)at) != sizeof(name))
		return -EFAULT;
	long fd = inject(s, SYS_memfd_create, (long)at, PTSS_MEMFD_FLAGS, 0, 0, 0, 0);
	if (fd == -EINVAL) /* a kernel before 6.3 does not know MFD_EXEC */
		fd = inject(s, SYS_memfd_create, (long)at, PTSS_MEMFD_FLAGS & ~MFD_EXEC, 0, 0, 0, 0);
	if (pwrite(s->mem, saved, sizeof(saved), (off_t)at) != sizeof(saved) && fd >= 0)
		fd = -EFAULT; /* cannot happen once the write above worked; never leave it unsaid */
	return fd;
}

/*
 * The tracer's side of a new memfd: sized, mapped read+write here, then sealed, so that no
 * mapping made afterwards — the target's own, or a fork child's copy of it — can ever be
 * made writable, and its size never changes. The tracer's view, made before the seal,
 * stays writable: it is the only writer of the pages. *view, or -errno.
 */
static int view_and_seal(struct ptrace_space *s, long fd, size_t size, void **view)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd/%ld", (int)s->pid, fd);
	int local = open(path, O_RDWR | O_CLOEXEC);
	if (local < 0)
		return -errno;
	int err = 0;
	void *v = MAP_FAILED;
	if (ftruncate(local, (off_t)size) ||
	    (v = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, local, 0)) == MAP_FAILED ||
	    fcntl(local, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL))
		err = -errno;
	close(local);
	if (err && v != MAP_FAILED)
		munmap(v, size);
	if (!err)
		*view = v;
	return err;
}

/* Cost: 3 injections (memfd_create, mmap, close); the tracer sizes and seals the memfd. */
static int ptrace_reserve(void *ctx, size_t size, uint64_t *base, void **view)
{
	struct ptrace_space *s = ctx;
	if (s->base)
		return -EBUSY;
	long fd = create_memfd(s);
	if (fd < 0)
		return (int)fd;
	void *v = NULL;
	long err = view_and_seal(s, fd, size, &v);
	long addr = err ? err : inject(s, SYS_mmap, 0, (long)size, PROT_NONE, MAP_SHARED, fd, 0);
	if (addr < 0 && addr > -4096)
		err = addr;
	char refusal[sizeof(s->refusal)]; /* of the call that failed, past the clean-up's calls */
	memcpy(refusal, s->refusal, sizeof(refusal));
	/* The mappings keep the memfd alive: the target keeps no descriptor of it. */
	long closed = inject(s, SYS_close, fd, 0, 0, 0, 0, 0);
	if (!err && closed == -ESRCH)
		err = closed;
	if (err) {
		if (v)
			munmap(v, size);
		if (addr >= 0 || addr <= -4096)
			inject(s, SYS_munmap, addr, (long)size, 0, 0, 0, 0);
		memcpy(s->refusal, refusal, sizeof(refusal));
		return (int)err;
	}
	s->base = (uint64_t)addr;
	s->view = v;
	s->size = size;
	*base = s->base;
	*view = v;
	return 0;
}

static int ptrace_commit(void *ctx, size_t offset, size_t len)
{
	struct ptrace_space *s = ctx;
	if (!s->base || offset > s->size || len > s->size - offset)
		return -EINVAL;
	return (int)inject(s, SYS_mprotect, (long)(s->base + offset), (long)len, PROT_READ | PROT_EXEC, 0, 0, 0);
}

static void ptrace_release(void *ctx, bool unmap_target)
{
	struct ptrace_space *s = ctx;
	if (!s->base)
		return;
	munmap(s->view, s->size);
	if (unmap_target)
		inject(s, SYS_munmap, (long)s->base, (long)s->size, 0, 0, 0, 0);
	s->base = 0;
	s->view = NULL;
}

static int ptrace_unmap(void *ctx, uint64_t addr, size_t len)
{
	return (int)inject(ctx, SYS_munmap, (long)addr, (long)len, 0, 0, 0, 0);
}

static void forget_target(struct ptrace_space *s)
{
	s->refusal[0] = 0;
	if (s->mem >= 0)
		close(s->mem);
	s->mem = -1;
	s->insn = 0;
}

static void ptrace_destroy(void *ctx)
{
	forget_target(ctx);
	free(ctx);
}

static const struct ptss_space_ops ptrace_ops = {
	.sz = sizeof(struct ptss_space_ops),
	.reserve = ptrace_reserve,
	.commit = ptrace_commit,
	.release = ptrace_release,
	.unmap = ptrace_unmap,
	.destroy = ptrace_destroy,
};

ptss_space *ptss_space_ptrace_new(pid_t pid, pid_t tid)
{
	ptss_check_arg(pid > 0 && tid > 0, NULL);
	if (kill(pid, 0) && errno == ESRCH)
		return NULL;
	struct ptrace_space *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	*s = (struct ptrace_space){ .pid = pid, .tid = tid, .mem = -1 };
	ptss_space *space = ptss_space_new(&ptrace_ops, s);
	if (!space)
		free(s);
	return space;
}

static struct ptrace_space *as_ptrace(const ptss_space *s)
{
	return s && s->ops.reserve == ptrace_reserve ? s->ctx : NULL;
}

void ptss_space_ptrace_use_thread(ptss_space *space, pid_t tid)
{
	struct ptrace_space *s = as_ptrace(space);
	if (s)
		s->tid = tid;
}

void ptss_space_ptrace_reset(ptss_space *space)
{
	struct ptrace_space *s = as_ptrace(space);
	if (s)
		forget_target(s);
}

const char *ptss_space_ptrace_refusal(const ptss_space *space)
{
	struct ptrace_space *s = as_ptrace(space);
	return s && s->refusal[0] ? s->refusal : NULL;
}

unsigned long ptss_space_ptrace_injections(const ptss_space *space)
{
	struct ptrace_space *s = as_ptrace(space);
	return s ? s->injections : 0;
}
