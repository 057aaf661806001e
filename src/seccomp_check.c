/*
 * What a thread's seccomp filters do with the system calls ptss injects. A filter runs
 * after the tracer's syscall-entry-stop, and one that kills would take the target with it,
 * so the answer must be known before each injection: filters come and go with the
 * program (a thread installs one whenever it likes, and they differ between threads). The
 * filters are read with PTRACE_SECCOMP_GET_FILTER and run here, in a small classic-BPF
 * interpreter, on the very call about to be made.
 */
#define _GNU_SOURCE
#include "inject.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
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

/* The seccomp mode of a thread from /proc/TID/status, or -1. */
static int seccomp_mode(pid_t tid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	FILE *f = fopen(path, "re");
	int mode = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Seccomp: %d", &mode) == 1)
			break;
	if (f)
		fclose(f);
	return mode;
}

/* The kernel keeps the strongest action of all filters: the lowest as a signed number. */
static bool stronger(uint32_t a, uint32_t b)
{
	return (int32_t)(a & SECCOMP_RET_ACTION_FULL) < (int32_t)(b & SECCOMP_RET_ACTION_FULL);
}

/*
 * Runs every filter of stopped thread tid on each of the n calls, and gives each call the
 * return word the kernel would act on. 0, or -errno when the filters cannot be read
 * (EACCES: that needs CAP_SYS_ADMIN).
 */
static int filters_run(pid_t tid, const struct seccomp_data *calls, size_t n, uint32_t *rets)
{
	for (size_t c = 0; c < n; c++)
		rets[c] = SECCOMP_RET_ALLOW;
	for (unsigned long index = 0;; index++) {
		long len = ptrace(PTRACE_SECCOMP_GET_FILTER, tid, index, NULL);
		if (len < 0)
			return errno == ENOENT && index > 0 ? 0 : -errno; /* ENOENT: every filter run */
		if (len == 0 || len > BPF_MAX_INSNS)
			return -EIO;
		struct sock_filter *f = calloc((size_t)len, sizeof(*f));
		if (!f)
			return -ENOMEM;
		if (ptrace(PTRACE_SECCOMP_GET_FILTER, tid, index, f) != len) {
			free(f);
			return -EIO;
		}
		for (size_t c = 0; c < n; c++) {
			uint32_t r = bpf_run(f, (size_t)len, &calls[c]);
			if (stronger(r, rets[c]))
				rets[c] = r;
		}
		free(f);
	}
}

static const char *call_name(long nr)
{
	switch (nr) {
	case SYS_memfd_create: return "memfd_create";
	case SYS_ftruncate: return "ftruncate";
	case SYS_mmap: return "mmap";
	case SYS_mprotect: return "mprotect";
	case SYS_munmap: return "munmap";
	case SYS_close: return "close";
	default: return "a system call";
	}
}

/* What a return word means for a call that ptss would inject. */
static enum seccomp_verdict verdict_of(uint32_t ret, pid_t tid, long nr, long *result, char *why, size_t why_len)
{
	const char *what;
	switch (ret & SECCOMP_RET_ACTION_FULL) {
	case SECCOMP_RET_ALLOW:
	case SECCOMP_RET_LOG:
		return SECCOMP_VERDICT_ALLOW;
	case SECCOMP_RET_ERRNO:
	case SECCOMP_RET_TRACE: /* no tracer asked for seccomp events: the call is skipped */
		*result = (ret & SECCOMP_RET_ACTION_FULL) == SECCOMP_RET_ERRNO ? -(long)(ret & SECCOMP_RET_DATA)
									       : -ENOSYS;
		snprintf(why, why_len, "the seccomp filter of thread %d refuses %s (%s)", (int)tid,
			 call_name(nr), strerror((int)-*result));
		return SECCOMP_VERDICT_FAIL;
	case SECCOMP_RET_TRAP: what = "raise SIGSYS in it"; break;
	case SECCOMP_RET_USER_NOTIF: what = "hand it to its supervisor"; break;
	default: what = "kill it"; break;
	}
	snprintf(why, why_len, "the seccomp filter of thread %d would %s on %s", (int)tid, what, call_name(nr));
	return SECCOMP_VERDICT_FORBID;
}

enum seccomp_verdict _ptss_seccomp_verdict(pid_t tid, uint64_t insn, long nr, const long args[6],
					   long *result, char *why, size_t why_len)
{
	char none[1];
	if (!why || !why_len)
		why = none, why_len = sizeof(none);
	int mode = seccomp_mode(tid);
	if (mode < 0) {
		*result = -ESRCH;
		return SECCOMP_VERDICT_FAIL;
	}
	if (mode == SECCOMP_MODE_DISABLED)
		return SECCOMP_VERDICT_ALLOW;
	if (mode == SECCOMP_MODE_STRICT) {
		snprintf(why, why_len, "thread %d is in seccomp strict mode: %s would kill it", (int)tid, call_name(nr));
		return SECCOMP_VERDICT_FORBID;
	}
	struct seccomp_data d = { .nr = (int)nr, .arch = AUDIT_ARCH_X86_64, .instruction_pointer = insn };
	for (int i = 0; i < 6; i++)
		d.args[i] = (uint64_t)args[i];
	uint32_t ret;
	int err = filters_run(tid, &d, 1, &ret);
	if (err) {
		snprintf(why, why_len, "the seccomp filters of thread %d cannot be read (%s; reading them "
			 "needs CAP_SYS_ADMIN): ptss cannot know that %s is safe", (int)tid, strerror(-err),
			 call_name(nr));
		return SECCOMP_VERDICT_FORBID;
	}
	return verdict_of(ret, tid, nr, result, why, why_len);
}

int ptss_ptrace_check_seccomp(pid_t pid, pid_t tid, char *why, size_t why_len)
{
	int mode = seccomp_mode(tid);
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
	const struct { int nr; uint64_t args[6]; } needed[] = {
		{ SYS_memfd_create, { any, PTSS_MEMFD_FLAGS } },
		{ SYS_mmap, { 0, len, PROT_NONE, MAP_SHARED, 3, 0 } },
		{ SYS_mprotect, { any, 4096, PROT_READ | PROT_EXEC } },
		{ SYS_munmap, { any, len } },
		{ SYS_close, { 3 } },
	};
	enum { N = sizeof(needed) / sizeof(needed[0]) };
	struct seccomp_data d[N];
	uint64_t insn = _ptss_find_syscall_insn(pid);
	for (size_t c = 0; c < N; c++) {
		d[c] = (struct seccomp_data){ .nr = needed[c].nr, .arch = AUDIT_ARCH_X86_64,
					      .instruction_pointer = insn };
		memcpy(d[c].args, needed[c].args, sizeof(d[c].args));
	}
	uint32_t rets[N];
	int err = filters_run(tid, d, N, rets);
	if (err) {
		snprintf(why, why_len, "process %d has seccomp filters ptss cannot read (%s): "
			 "reading them needs CAP_SYS_ADMIN", (int)pid, strerror(-err));
		return -EACCES;
	}
	int refused = 0;
	for (size_t c = 0; c < N; c++) {
		long result;
		char reason[160];
		switch (verdict_of(rets[c], tid, needed[c].nr, &result, reason, sizeof(reason))) {
		case SECCOMP_VERDICT_ALLOW:
			break;
		case SECCOMP_VERDICT_FAIL:
			snprintf(why, why_len, "the seccomp filter of process %d refuses %s: "
				 "no scratch pages can be mapped there", (int)pid, call_name(needed[c].nr));
			refused = 1;
			break;
		case SECCOMP_VERDICT_FORBID:
			snprintf(why, why_len, "%s: ptss must not inject it", reason);
			return -EPERM;
		}
	}
	return refused;
}
