/* The target's memory, through /proc/PID/mem: int3 bytes, the code under a probe, the
 * pointer of an indirect branch. */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int mem_open(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	return open(path, O_RDWR | O_CLOEXEC);
}

int mem_read(struct process *p, uint64_t addr, void *buf, size_t len)
{
	return pread(p->mem, buf, len, (off_t)addr) == (ssize_t)len ? 0 : -EFAULT;
}

int mem_write(struct process *p, uint64_t addr, const void *buf, size_t len)
{
	return pwrite(p->mem, buf, len, (off_t)addr) == (ssize_t)len ? 0 : -EFAULT;
}
