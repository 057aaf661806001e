/*
 * Would the target's seccomp filters let ptss inject what it needs? A filter runs after
 * the tracer's syscall-entry-stop, and one that kills would take the target with it, so
 * the answer must be known before the first injection. The filters are read with
 * PTRACE_SECCOMP_GET_FILTER and run here, in a small classic-BPF interpreter, on the
 * very system calls the ptrace space makes.
 */
#define _GNU_SOURCE
#include "inject.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>

#define BPF_MAX_INSNS 4096 /* the kernel's own limit per filter */

/* Runs one filter on d; returns its action word, or SECCOMP_RET_KILL_PROCESS if invalid. */
static uint32_t bpf_run(const struct sock_filter *f, size_t n, const struct seccomp_data *d)
{
	uint32_t a = 0, x = 0, mem[BPF_MEMWORDS] = { 0 };
	const unsigned char *data = (const unsigned char *)d;
	for (size_t pc = 0; pc < n; pc++) {
		const struct sock_filter *i = &f[pc];
		uint32_t src = BPF_SRC(i->code) == BPF_X ? x : i->k;
		switch (BPF_CLASS(i->code)) {
		case BPF_LD:
		case BPF_LDX: {
			uint32_t v;
			switch (BPF_MODE(i->code)) {
			case BPF_ABS:
				if (i->k > sizeof(*d) - 4 || i->k % 4)
					return SECCOMP_RET_KILL_PROCESS;
				memcpy(&v, data + i->k, 4);
				break;
			case BPF_LEN: v = sizeof(*d); break;
			case BPF_IMM: v = i->k; break;
			case BPF_MEM:
				if (i->k >= BPF_MEMWORDS)
					return SECCOMP_RET_KILL_PROCESS;
				v = mem[i->k];
				break;
			default: return SECCOMP_RET_KILL_PROCESS;
			}
			*(BPF_CLASS(i->code) == BPF_LD ? &a : &x) = v;
			break;
		}
		case BPF_ST:
		case BPF_STX:
			if (i->k >= BPF_MEMWORDS)
				return SECCOMP_RET_KILL_PROCESS;
			mem[i->k] = BPF_CLASS(i->code) == BPF_ST ? a : x;
			break;
		case BPF_ALU:
			switch (BPF_OP(i->code)) {
			case BPF_ADD: a += src; break;
			case BPF_SUB: a -= src; break;
			case BPF_MUL: a *= src; break;
			case BPF_DIV: if (!src) return 0; a /= src; break; /* the kernel returns 0 */
			case BPF_MOD: if (!src) return 0; a %= src; break;
			case BPF_OR: a |= src; break;
			case BPF_AND: a &= src; break;
			case BPF_XOR: a ^= src; break;
			case BPF_LSH: a = src < 32 ? a << src : 0; break;
			case BPF_RSH: a = src < 32 ? a >> src : 0; break;
			case BPF_NEG: a = -a; break;
			default: return SECCOMP_RET_KILL_PROCESS;
			}
			break;
		case BPF_JMP: {
			bool taken;
			switch (BPF_OP(i->code)) {
			case BPF_JA: pc += i->k; continue;
			case BPF_JEQ: taken = a == src; break;
			case BPF_JGT: taken = a > src; break;
			case BPF_JGE: taken = a >= src; break;
			case BPF_JSET: taken = (a & src) != 0; break;
			default: return SECCOMP_RET_KILL_PROCESS;
			}
			pc += taken ? i->jt : i->jf;
			break;
		}
		case BPF_RET:
			return BPF_RVAL(i->code) == BPF_A ? a : i->k;
		case BPF_MISC:
			if (BPF_MISCOP(i->code) == BPF_TAX)
				x = a;
			else
				a = x;
			break;
		default:
			return SECCOMP_RET_KILL_PROCESS;
		}
	}
	return SECCOMP_RET_KILL_PROCESS; /* fell off the end: the kernel refuses such filters */
}

/* The seccomp mode from /proc/PID/status, or -1. */
static int seccomp_mode(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "re");
	int mode = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Seccomp: %d", &mode) == 1)
			break;
	if (f)
		fclose(f);
	return mode;
}

struct needed_call {
	const char *name;
	int nr;
	uint64_t args[6];
};

int ptss_ptrace_check_seccomp(pid_t pid, pid_t tid, char *why, size_t why_len)
{
	int mode = seccomp_mode(pid);
	if (mode < 0) {
		snprintf(why, why_len, "cannot read the seccomp mode of %d", (int)pid);
		return -ESRCH;
	}
	if (mode == SECCOMP_MODE_DISABLED)
		return 0;
	if (mode == SECCOMP_MODE_STRICT) {
		snprintf(why, why_len, "process %d is in seccomp strict mode: mmap is forbidden", (int)pid);
		return -EPERM;
	}
	/* The calls the ptrace space makes, with the arguments it passes (addresses aside). */
	const uint64_t any = 0x10000, len = 1 << 20;
	const struct needed_call calls[] = {
		{ "memfd_create", SYS_memfd_create, { any, MFD_CLOEXEC | 0x10 } },
		{ "ftruncate", SYS_ftruncate, { 3, len } },
		{ "mmap", SYS_mmap, { 0, len, PROT_NONE, MAP_SHARED, 3, 0 } },
		{ "mprotect", SYS_mprotect, { any, 4096, PROT_READ | PROT_EXEC } },
		{ "munmap", SYS_munmap, { any, len } },
		{ "close", SYS_close, { 3 } },
	};
	uint64_t insn = _ptss_find_syscall_insn(pid);
	int err = 0, refused = 0;
	for (unsigned long index = 0; !err; index++) {
		long n = ptrace(PTRACE_SECCOMP_GET_FILTER, tid, index, NULL);
		if (n < 0) {
			if (errno == ENOENT && index > 0)
				break; /* every filter checked */
			snprintf(why, why_len, "process %d has seccomp filters ptss cannot read (%s): "
				 "reading them needs CAP_SYS_ADMIN", (int)pid, strerror(errno));
			return -EACCES;
		}
		if (n == 0 || n > BPF_MAX_INSNS)
			break;
		struct sock_filter *f = calloc((size_t)n, sizeof(*f));
		if (!f)
			return -ENOMEM;
		if (ptrace(PTRACE_SECCOMP_GET_FILTER, tid, index, f) != n) {
			free(f);
			return -EIO;
		}
		for (size_t c = 0; c < sizeof(calls) / sizeof(calls[0]) && !err; c++) {
			struct seccomp_data d = { .nr = calls[c].nr, .arch = AUDIT_ARCH_X86_64,
						  .instruction_pointer = insn };
			memcpy(d.args, calls[c].args, sizeof(d.args));
			uint32_t action = bpf_run(f, (size_t)n, &d) & SECCOMP_RET_ACTION_FULL;
			if (action == SECCOMP_RET_ALLOW || action == SECCOMP_RET_LOG)
				continue;
			if (action == SECCOMP_RET_ERRNO) {
				/* Refused with an error: the injection fails cleanly, the target is fine. */
				snprintf(why, why_len, "the seccomp filter of process %d refuses %s: "
					 "no scratch pages can be mapped there", (int)pid, calls[c].name);
				refused = 1;
				continue;
			}
			snprintf(why, why_len, "the seccomp filter of process %d would %s on %s: "
				 "ptss must not inject it", (int)pid,
				 action == SECCOMP_RET_TRAP ? "raise SIGSYS" : "kill or stop it", calls[c].name);
			err = -EPERM;
		}
		free(f);
	}
	return err ? err : refused;
}
