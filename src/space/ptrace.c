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
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
/* Shared data: never executable (Linux >= 6.3 seals it so; older kernels ignore it). */
#define DATA_MEMFD_FLAGS (MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL)

struct ptrace_space {
	pid_t pid, tid;
	uint64_t insn;          /* a syscall instruction in the target; 0 until needed */
	int mem;                /* /proc/PID/mem, for the memfd's name; -1 until needed */
	uint64_t near_lo, near_hi; /* where reservations go; 0, 0: anywhere */
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
 * thread's stack, below the 128-byte red zone, and give them back afterwards. flags
 * without `optional` are tried when the kernel does not know them (-EINVAL).
 */
static long create_memfd(struct ptrace_space *s, const char *label, unsigned flags, unsigned optional)
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
	char saved[16], name[16] = { 0 };
	snprintf(name, sizeof(name), "%s", label);
	if (pread(s->mem, saved, sizeof(saved), (off_t)at) != sizeof(saved) ||
	    pwrite(s->mem, name, sizeof(name), (off_t)at) != sizeof(name))
		return -EFAULT;
	long fd = inject(s, SYS_memfd_create, (long)at, flags, 0, 0, 0, 0);
	if (fd == -EINVAL) /* a kernel before 6.3 knows neither MFD_EXEC nor MFD_NOEXEC_SEAL */
		fd = inject(s, SYS_memfd_create, (long)at, flags & ~optional, 0, 0, 0, 0);
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
static int view_and_seal(struct ptrace_space *s, long fd, size_t size, unsigned seals, void **view)
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
	    fcntl(local, F_ADD_SEALS, seals))
		err = -errno;
	close(local);
	if (err && v != MAP_FAILED)
		munmap(v, size);
	if (!err)
		*view = v;
	return err;
}

/* The gap of the target's memory map inside [lo, hi) nearest its middle that holds size
 * bytes: its address, or 0. The heap's gap is kept for brk: a gap after [heap] starts
 * 1 GiB past it. */
static uint64_t find_gap(pid_t pid, uint64_t lo, uint64_t hi, size_t size)
{
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return 0;
	const uint64_t page = 4096, top = 0x7ffffffff000ull;
	uint64_t mid = lo / 2 + hi / 2, best = 0, best_d = UINT64_MAX, prev_end = 0x10000;
	for (bool more = true; more;) {
		unsigned long long a = top, b = top;
		more = fgets(line, sizeof(line), f) != NULL;
		if (more && sscanf(line, "%llx-%llx", &a, &b) != 2)
			continue;
		/* The gap [prev_end, a) clipped to [lo, hi): its end near mid, or its start. */
		uint64_t g0 = prev_end > lo ? prev_end : lo, g1 = a < hi ? a : hi;
		g0 = (g0 + page - 1) & ~(page - 1);
		if (g1 > g0 && g1 - g0 >= size) {
			uint64_t at = mid < g0 ? g0 : mid > g1 - size ? ((g1 - size) & ~(page - 1)) : mid & ~(page - 1);
			uint64_t d = at > mid ? at - mid : mid - at;
			if (at >= g0 && d < best_d)
				best = at, best_d = d;
		}
		if (more && b > prev_end)
			prev_end = strstr(line, "[heap]") ? b + (1ull << 30) : b;
	}
	fclose(f);
	return best;
}

/*
 * A new memfd of size bytes mapped in the target with prot (at a gap inside the space's
 * near range, if one is set) and in the tracer read+write, then sealed with seals. The
 * target keeps no descriptor: its mapping keeps the memfd alive. Cost: 3 injections
 * (memfd_create, mmap, close); the tracer sizes and seals the memfd.
 */
static int map_memfd(struct ptrace_space *s, const char *label, unsigned flags, unsigned optional,
		     unsigned seals, size_t size, int prot, uint64_t *addr_out, void **view)
{
	uint64_t hint = 0;
	int fixed = 0;
	if (s->near_hi) {
		if (!(hint = find_gap(s->pid, s->near_lo, s->near_hi, size)))
			return -ENOMEM;
		fixed = MAP_FIXED_NOREPLACE;
	}
	long fd = create_memfd(s, label, flags, optional);
	if (fd < 0)
		return (int)fd;
	void *v = NULL;
	long err = view_and_seal(s, fd, size, seals, &v);
	long addr = err ? err : inject(s, SYS_mmap, (long)hint, (long)size, prot, MAP_SHARED | fixed, fd, 0);
	if (addr < 0 && addr > -4096)
		err = addr;
	else if (!err && hint && (uint64_t)addr != hint)
		err = -ENOMEM; /* a kernel before 4.17 took the hint as a hint */
	char refusal[sizeof(s->refusal)]; /* of the call that failed, past the clean-up's calls */
	memcpy(refusal, s->refusal, sizeof(refusal));
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
	*addr_out = (uint64_t)addr;
	*view = v;
	return 0;
}

static int ptrace_reserve(void *ctx, size_t size, uint64_t *base, void **view)
{
	struct ptrace_space *s = ctx;
	if (s->base)
		return -EBUSY;
	int err = map_memfd(s, "ptss", PTSS_MEMFD_FLAGS, MFD_EXEC,
			    F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, size,
			    PROT_NONE, base, view);
	if (err)
		return err;
	s->base = *base;
	s->view = *view;
	s->size = size;
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

void ptss_space_ptrace_near(ptss_space *space, uint64_t lo, uint64_t hi)
{
	struct ptrace_space *s = as_ptrace(space);
	if (s) {
		s->near_lo = lo < hi ? lo : 0;
		s->near_hi = lo < hi ? hi : 0;
	}
}

int ptss_space_ptrace_map_data(ptss_space *space, size_t size, uint64_t *addr, void **view)
{
	struct ptrace_space *s = as_ptrace(space);
	if (!s || !size || !addr || !view)
		return -EINVAL;
	uint64_t lo = s->near_lo, hi = s->near_hi;
	s->near_lo = s->near_hi = 0; /* data goes anywhere */
	int err = map_memfd(s, "ptss-data", DATA_MEMFD_FLAGS, MFD_NOEXEC_SEAL,
			    F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, size, PROT_READ | PROT_WRITE,
			    addr, view);
	s->near_lo = lo;
	s->near_hi = hi;
	return err;
}

int ptss_space_ptrace_unmap_data(ptss_space *space, uint64_t addr, size_t size, void *view)
{
	struct ptrace_space *s = as_ptrace(space);
	if (view)
		munmap(view, size);
	return s ? (int)inject(s, SYS_munmap, (long)addr, (long)size, 0, 0, 0, 0) : -EINVAL;
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
