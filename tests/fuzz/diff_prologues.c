/*
 * diff_prologues: real function prologues, run where they are and the way the tracer runs
 * them, in a sandboxed child under ptrace; the two runs must end alike.
 *
 *   prologues.py [LIBRARY...] | diff_prologues [-v] [--max N] [--seeds DIR] [CORPUS]
 *   diff_prologues --fuzz DIR     the instructions of fuzz_relocate inputs instead
 *   diff_prologues --random N [--seed S]   N random instructions instead
 *
 * CORPUS (default stdin) has one line per code window, "HEX ADDRESS NAME" (prologues.py).
 * Every instruction decoded from a window, up to an unconditional jump or a return, is a
 * case; cases are deduplicated by their bytes. A case is planned at an address with the
 * window's page offset; refusals are counted by reason. An accepted one runs in a child of
 * its own, whose memory is
 *
 *   code   64 KiB of int3 around the instruction (read, exec): whatever the instruction
 *          falls through or jumps to nearby traps; far targets fault at the fetch
 *   data   64 KiB that every register but rsp points into, gs_base too
 *   stack  64 KiB, rsp in the middle (8 mod 16, as at a function's entry)
 *   near   two pages at a rip-relative operand's address, which is up to 2 GiB away
 *   entry  a page 64 GiB away: beyond any rel32, as a thread's scratch is
 *
 * and whose qwords point into the int3 area, so that returns and indirect branches trap
 * too. The child maps all this, enables strict seccomp (nothing it runs may make a system
 * call), and stops itself; the parent then drives it with ptrace, restoring memory,
 * registers and the vector state before each run, for two register sets:
 *
 *   original   from the instruction's address, until the trap or fault that ends it; and
 *              single-stepped once
 *   relocated  reloc_hit_prepare's registers and entry (with the pointer read from the
 *              child when the instruction branches through memory, and again without it:
 *              the entry's own load), until the trap or fault; and single-stepped through
 *              the entry, reloc_unwind checked at every stop
 *
 * Compared: general registers, rip, status flags and DF, fs/gs bases, the XSAVE area (the
 * x87 last-instruction pointers aside: they are addresses of the instruction) and every
 * byte of data, stack, near pages and the TLS around fs_base; the ending signal, its code
 * and a fault's address. A fault inside the entry is unwound first, as the tracer does.
 * Not compared: what rdtsc, rdrand, cpuid and their like write; the progress registers of
 * a rep string instruction stopped between iterations. A case whose original run does not
 * end within 2 s (jmp $) is skipped; a relocated run that does not is a difference.
 * Prints each difference, a summary, and exits 1 if there was any.
 */
#define _GNU_SOURCE
#include "ref_decode.h"
#include "relocate.h"

#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096ull
#define CODE_BASE 0x300000000000ull
#define CODE_SIZE 0x10000ull
#define INSN_PAGE (CODE_BASE + 0x8000)
#define LAND_LO (CODE_BASE + 0x1000) /* where the qwords of memory point */
#define DATA (CODE_BASE + (16ull << 30))
#define DATA_SIZE 0x10000ull
#define STACK (CODE_BASE + (24ull << 30))
#define STACK_SIZE 0x10000ull
#define RSP0 (STACK + STACK_SIZE / 2 - 8)
#define ENTRY (CODE_BASE + (64ull << 30))
#define ENTRY_SIZE 64
#define NEAR_SIZE (2 * PAGE)
#define TLS_BELOW 0x2000ull
#define TLS_ABOVE 0x1000ull
#define MAX_STEPS 32
#define XSTATE_MAX 16384
#define MAX_REGIONS 8
#define FLAGS_MASK 0xcd5ull /* CF PF AF ZF SF DF OF */
#define N_SEEDS 2

/* ---- the corpus -------------------------------------------------------------------- */

struct icase {
	uint8_t bytes[RELOC_INSN_MAX]; /* from the instruction to the end of its window */
	uint8_t avail, len;
	bool first;                    /* the first instruction of its window */
	uint64_t vaddr;
	char *name;                    /* library:symbol+offset */
};

static struct icase *cases;
static size_t n_cases, cap_cases, n_windows, n_first;

/* Distinct instructions: open addressing on their bytes. */
#define SET_BITS 20
static uint32_t *set; /* case index + 1, 0: empty */

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull ^ n;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

static bool add_case(const uint8_t *p, size_t avail, size_t len, uint64_t vaddr, const char *name,
		     size_t off, bool first)
{
	uint64_t h = hash_bytes(p, len);
	size_t mask = (1u << SET_BITS) - 1, i = (size_t)h & mask;
	for (; set[i]; i = (i + 1) & mask) {
		const struct icase *c = &cases[set[i] - 1];
		if (c->len == len && !memcmp(c->bytes, p, len))
			return false;
	}
	if (n_cases + 1 >= mask / 2)
		return false; /* full: enough */
	if (n_cases == cap_cases) {
		cap_cases = cap_cases ? 2 * cap_cases : 4096;
		cases = realloc(cases, cap_cases * sizeof(*cases));
		if (!cases) {
			perror("diff_prologues");
			exit(2);
		}
	}
	struct icase *c = &cases[n_cases];
	memset(c, 0, sizeof(*c));
	memcpy(c->bytes, p, avail);
	c->avail = (uint8_t)avail;
	c->len = (uint8_t)len;
	c->first = first;
	c->vaddr = vaddr;
	if (asprintf(&c->name, "%s+%zu", name, off) < 0) {
		perror("diff_prologues");
		exit(2);
	}
	set[i] = (uint32_t)++n_cases;
	n_first += first;
	return true;
}

/* splitmix64 */
static uint64_t rng(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Instructions after which the window's bytes need not be code. */
static bool ends_flow(const struct ref_insn *d)
{
	switch (d->in.mnemonic) {
	case ZYDIS_MNEMONIC_RET: case ZYDIS_MNEMONIC_JMP: case ZYDIS_MNEMONIC_UD2:
	case ZYDIS_MNEMONIC_INT3: case ZYDIS_MNEMONIC_HLT:
		return true;
	default:
		return false;
	}
}

static int read_corpus(FILE *f)
{
	char line[1024], hex[256], name[700];
	unsigned long long vaddr;

	while (fgets(line, sizeof(line), f)) {
		uint8_t w[64];
		size_t n = 0;
		if (line[0] == '#' || sscanf(line, "%255s %llx %699s", hex, &vaddr, name) != 3)
			continue;
		for (const char *h = hex; h[0] && h[1] && n < sizeof(w); h += 2) {
			unsigned b;
			if (sscanf(h, "%2x", &b) != 1)
				break;
			w[n++] = (uint8_t)b;
		}
		n_windows++;
		for (size_t off = 0; off < n;) {
			struct ref_insn d;
			if (!ref_decode(&d, w + off, n - off))
				break;
			size_t avail = n - off < RELOC_INSN_MAX ? n - off : RELOC_INSN_MAX;
			add_case(w + off, avail, d.in.length, vaddr + off, name, off, off == 0);
			if (ends_flow(&d))
				break;
			off += d.in.length;
		}
	}
	return ferror(f) ? -1 : 0;
}

/* fuzz_relocate inputs (their instruction and address; the registers are ours): the
 * instructions a fuzzer found, run for real. */
static int read_fuzz_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		uint8_t in[RELOC_INSN_MAX + 8] = { 0 };
		char path[4096];
		struct ref_insn insn;
		uint64_t addr;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		FILE *f = e->d_name[0] == '.' ? NULL : fopen(path, "rb");
		if (!f)
			continue;
		size_t n = fread(in, 1, sizeof(in), f);
		fclose(f);
		size_t avail = n < RELOC_INSN_MAX ? n : RELOC_INSN_MAX;
		memcpy(&addr, in + RELOC_INSN_MAX, 8);
		n_windows++;
		if (avail && ref_decode(&insn, in, avail))
			add_case(in, avail, insn.in.length, addr ^ 0x401000, e->d_name, 0, true);
	}
	closedir(d);
	return 0;
}

/*
 * Random instructions (seeded): 15 random bytes, the first often a prefix or an escape,
 * and half of those with a memory operand turned rip-relative. Only the first instruction
 * of each is a case.
 */
static void random_cases(size_t n, uint64_t seed)
{
	static const uint8_t lead[] = { 0x0f, 0x48, 0x4c, 0x66, 0xf2, 0xf3, 0xc4, 0xc5, 0x62, 0xff };
	uint64_t s = seed;
	for (size_t k = 0; k < n; k++) {
		uint8_t w[RELOC_INSN_MAX];
		struct ref_insn d;
		char name[40];
		for (size_t i = 0; i < sizeof(w); i++)
			w[i] = (uint8_t)rng(&s);
		uint64_t r = rng(&s);
		if (r & 1)
			w[0] = lead[(r >> 8) % sizeof(lead)];
		n_windows++;
		if (!ref_decode(&d, w, sizeof(w)))
			continue;
		if ((r & 2) && (d.in.attributes & ZYDIS_ATTRIB_HAS_MODRM) && d.in.raw.modrm.mod != 3) {
			w[d.in.raw.modrm.offset] = (uint8_t)((w[d.in.raw.modrm.offset] & 0x38) | 0x05);
			if (!ref_decode(&d, w, sizeof(w)))
				continue;
		}
		snprintf(name, sizeof(name), "random-%zu", k);
		add_case(w, sizeof(w), d.in.length, r >> 16, name, 0, true);
	}
}

/* ---- results ----------------------------------------------------------------------- */

static const char *const how_names[] = {
	"copy", "copy-end", "rip-relative", "nop", "jmp", "jcc", "jrcxz", "loop", "call",
	"jmp-indirect", "call-indirect",
};
#define N_HOW (sizeof(how_names) / sizeof(how_names[0]))

struct reason {
	char text[160];
	char example[160];
	unsigned count;
};

static struct {
	unsigned accepted, refused, how[N_HOW];
	unsigned runs, equal, different, child_errors, x87_ip_only, steps, unwinds;
	unsigned ended_trap, ended_segv, ended_other; /* the original runs */
	unsigned endless;                             /* cases whose original never ended */
	struct reason reasons[64];
	unsigned n_reasons;
} st;

static bool verbose;

static void count_refusal(const struct icase *c, const char *why)
{
	/* "TEXT at 0xADDR: REASON": count by REASON, remember an instruction. */
	const char *r = strstr(why, ": ");
	const char *key = r ? r + 2 : why;
	st.refused++;
	for (unsigned i = 0; i < st.n_reasons; i++)
		if (!strcmp(st.reasons[i].text, key)) {
			st.reasons[i].count++;
			return;
		}
	if (st.n_reasons < sizeof(st.reasons) / sizeof(st.reasons[0])) {
		struct reason *n = &st.reasons[st.n_reasons++];
		const char *at = strstr(why, " at 0x");
		int text_len = at ? (int)(at - why) : 0;
		snprintf(n->text, sizeof(n->text), "%.150s", key);
		snprintf(n->example, sizeof(n->example), "%.*s (%.70s)", text_len < 80 ? text_len : 80,
			 why, c->name);
		n->count = 1;
	}
}

static void hex_bytes(const uint8_t *p, size_t n, char *out, size_t out_len)
{
	size_t pos = 0;
	out[0] = '\0';
	for (size_t i = 0; i < n && pos + 4 < out_len; i++)
		pos += (size_t)snprintf(out + pos, out_len - pos, "%s%02x", i ? " " : "", p[i]);
}

__attribute__((format(printf, 3, 4)))
static void report(const struct icase *c, const char *ctx, const char *fmt, ...)
{
	char b[64];
	va_list ap;
	hex_bytes(c->bytes, c->len, b, sizeof(b));
	printf("DIFF %s [%s] %s: ", c->name, b, ctx);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

/* ---- the child --------------------------------------------------------------------- */

struct region {
	uint64_t addr;
	size_t len;
	uint8_t *init; /* restored before each run */
};

struct child {
	pid_t pid;
	int mem;                       /* /proc/PID/mem: reads and writes any mapping */
	struct user_regs_struct base;  /* its registers at the stop: segments, fs_base */
	uint8_t xstate[XSTATE_MAX];    /* the vector state every run starts from */
	size_t xlen;
	int xtype;                     /* NT_X86_XSTATE, or NT_PRFPREG where there is none */
	struct region r[MAX_REGIONS];
	int nr;
	size_t mem_len;                /* bytes of all regions */
};

static int death_status;               /* waitpid's, for the last child that died */
static bool timed_out;                 /* it was killed: a run went on for 2 s */
static volatile sig_atomic_t alarmed;  /* the parent's timer */

static void on_alarm(int sig)
{
	(void)sig;
	alarmed = 1;
}

struct outcome {
	int sig, code;
	uint64_t fault_addr;
	struct user_regs_struct regs;
	uint8_t xstate[XSTATE_MAX];
	uint8_t *mem;                  /* the regions, one after the other */
};

static void *map_fixed(uint64_t addr, size_t len, int prot)
{
	void *p = mmap((void *)(uintptr_t)addr, len, prot,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	return p == (void *)(uintptr_t)addr ? p : NULL;
}

/* The child: maps its memory, gives up system calls, stops. The parent does the rest. */
__attribute__((noreturn))
static void child_main(uint64_t near)
{
	struct rlimit cpu = { 10, 10 }, zero = { 0, 0 }; /* the parent cuts runs at 2 s */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	setrlimit(RLIMIT_CPU, &cpu);
	setrlimit(RLIMIT_FSIZE, &zero);
	setrlimit(RLIMIT_CORE, &zero);
	if (!map_fixed(CODE_BASE, CODE_SIZE, PROT_READ | PROT_EXEC) ||
	    !map_fixed(DATA, DATA_SIZE, PROT_READ | PROT_WRITE) ||
	    !map_fixed(STACK, STACK_SIZE, PROT_READ | PROT_WRITE) ||
	    !map_fixed(ENTRY, PAGE, PROT_READ | PROT_EXEC) ||
	    (near && !map_fixed(near, NEAR_SIZE, PROT_READ | PROT_WRITE)))
		_exit(3);
	if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT))
		_exit(4);
	__asm__ volatile("int3");
	for (;;)
		__asm__ volatile("pause");
}

static bool mem_write(const struct child *ch, uint64_t addr, const void *p, size_t n)
{
	return pwrite(ch->mem, p, n, (off_t)addr) == (ssize_t)n;
}

static bool mem_read(const struct child *ch, uint64_t addr, void *p, size_t n)
{
	return pread(ch->mem, p, n, (off_t)addr) == (ssize_t)n;
}

/* Memory's qwords: addresses in the int3 area, different from one another. */
static void fill_pattern(uint8_t *p, size_t n, uint64_t salt)
{
	for (size_t i = 0; i + 8 <= n; i += 8) {
		uint64_t v = LAND_LO + ((i * 0x38 + salt * 0x128) & 0x3ff8);
		memcpy(p + i, &v, 8);
	}
}

static bool add_region(struct child *ch, uint64_t addr, size_t len, bool from_child, uint64_t salt)
{
	struct region *r = &ch->r[ch->nr];
	if (ch->nr == MAX_REGIONS || !(r->init = malloc(len)))
		return false;
	r->addr = addr;
	r->len = len;
	if (from_child) {
		if (!mem_read(ch, addr, r->init, len)) {
			free(r->init);
			return false;
		}
	} else {
		fill_pattern(r->init, len, salt);
	}
	ch->nr++;
	ch->mem_len += len;
	return true;
}

static void child_end(struct child *ch)
{
	if (ch->pid > 0) {
		kill(ch->pid, SIGKILL);
		waitpid(ch->pid, NULL, 0);
	}
	if (ch->mem >= 0)
		close(ch->mem);
	for (int i = 0; i < ch->nr; i++)
		free(ch->r[i].init);
	ch->pid = -1;
	ch->mem = -1;
	ch->nr = 0;
}

static bool get_xstate(pid_t pid, int type, void *buf, size_t *len)
{
	struct iovec v = { buf, XSTATE_MAX };
	if (ptrace(PTRACE_GETREGSET, pid, (void *)(uintptr_t)type, &v))
		return false;
	*len = v.iov_len;
	return true;
}

static const char no_sandbox[] = "no ptrace or seccomp here";

/* Starts a child for an instruction at addr; near: the page of its rip-relative operand. */
static const char *child_start(struct child *ch, const struct icase *c, uint64_t addr, uint64_t near)
{
	int status;
	char path[64];

	memset(ch, 0, sizeof(*ch));
	ch->mem = -1;
	fflush(stdout);
	ch->pid = fork();
	if (ch->pid < 0)
		return "fork failed";
	if (ch->pid == 0)
		child_main(near);
	if (waitpid(ch->pid, &status, 0) != ch->pid || !WIFSTOPPED(status) ||
	    WSTOPSIG(status) != SIGTRAP) {
		if (WIFEXITED(status) && WEXITSTATUS(status) == 3)
			return "its memory could not be mapped";
		if (WIFEXITED(status) && WEXITSTATUS(status) == 4)
			return no_sandbox;
		return "it did not stop";
	}
	ptrace(PTRACE_SETOPTIONS, ch->pid, NULL, (void *)(uintptr_t)PTRACE_O_EXITKILL);
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)ch->pid);
	ch->mem = open(path, O_RDWR | O_CLOEXEC);
	if (ch->mem < 0 || ptrace(PTRACE_GETREGS, ch->pid, NULL, &ch->base))
		return "no access to it";
	ch->xtype = NT_X86_XSTATE;
	if (!get_xstate(ch->pid, ch->xtype, ch->xstate, &ch->xlen)) {
		ch->xtype = NT_PRFPREG;
		if (!get_xstate(ch->pid, ch->xtype, ch->xstate, &ch->xlen))
			return "no vector state";
	}
	/* xmm0-15 in the legacy area, at 160: a pattern, so that moves show. */
	for (unsigned i = 160; i < 416 && i < ch->xlen; i++)
		ch->xstate[i] = (uint8_t)(i * 7 + 1);

	static uint8_t code[CODE_SIZE];
	memset(code, 0xcc, sizeof(code));
	memcpy(code + (addr - CODE_BASE), c->bytes, c->len);
	if (!mem_write(ch, CODE_BASE, code, sizeof(code)))
		return "its code could not be written";
	if (!add_region(ch, DATA, DATA_SIZE, false, 1) ||
	    !add_region(ch, STACK, STACK_SIZE, false, 2) ||
	    (near && !add_region(ch, near, NEAR_SIZE, false, 3)))
		return "out of memory";
	/* Thread-local storage, read as it is: as far as it is mapped, page by page. */
	uint64_t tls = (ch->base.fs_base & ~(PAGE - 1)) - TLS_BELOW;
	for (uint64_t p = tls; p < (ch->base.fs_base & ~(PAGE - 1)) + TLS_ABOVE; p += PAGE)
		add_region(ch, p, PAGE, true, 0);
	return NULL;
}

static bool restore(const struct child *ch, const uint8_t *entry, size_t entry_len)
{
	uint8_t e[ENTRY_SIZE];
	memset(e, 0xcc, sizeof(e));
	if (entry_len)
		memcpy(e, entry, entry_len);
	for (int i = 0; i < ch->nr; i++)
		if (!mem_write(ch, ch->r[i].addr, ch->r[i].init, ch->r[i].len))
			return false;
	return mem_write(ch, ENTRY, e, sizeof(e));
}

static bool set_state(const struct child *ch, const struct user_regs_struct *regs)
{
	struct iovec v = { (void *)ch->xstate, ch->xlen };
	return !ptrace(PTRACE_SETREGS, ch->pid, NULL, regs) &&
	       !ptrace(PTRACE_SETREGSET, ch->pid, (void *)(uintptr_t)ch->xtype, &v);
}

/* Waits for the child's next stop and records it; false if it is gone. */
static bool capture(struct child *ch, struct outcome *o)
{
	int status;
	siginfo_t si;
	size_t xlen;

	/* A run that never ends (jmp $, a long loop) is cut short: SIGALRM interrupts the wait. */
	struct itimerval t = { .it_value = { 2, 0 } }, off = { .it_value = { 0, 0 } };
	alarmed = 0;
	setitimer(ITIMER_REAL, &t, NULL);
	pid_t w = waitpid(ch->pid, &status, 0);
	setitimer(ITIMER_REAL, &off, NULL);
	if (w < 0 && errno == EINTR && alarmed) {
		kill(ch->pid, SIGKILL);
		waitpid(ch->pid, &status, 0);
		timed_out = true;
	}
	if (w != ch->pid || !WIFSTOPPED(status)) {
		death_status = status;
		ch->pid = -1;
		return false;
	}
	o->sig = WSTOPSIG(status);
	memset(&si, 0, sizeof(si));
	ptrace(PTRACE_GETSIGINFO, ch->pid, NULL, &si);
	o->code = si.si_code;
	o->fault_addr = (uint64_t)(uintptr_t)si.si_addr;
	ptrace(PTRACE_GETREGS, ch->pid, NULL, &o->regs);
	memset(o->xstate, 0, sizeof(o->xstate));
	get_xstate(ch->pid, ch->xtype, o->xstate, &xlen);
	size_t pos = 0;
	for (int i = 0; i < ch->nr; i++) {
		if (!mem_read(ch, ch->r[i].addr, o->mem + pos, ch->r[i].len))
			memset(o->mem + pos, 0, ch->r[i].len);
		pos += ch->r[i].len;
	}
	return true;
}

/* From regs until the run ends: a trap, a fault, a signal (or killed after 2 s). */
static bool run_cont(struct child *ch, const struct user_regs_struct *regs, const uint8_t *entry,
		     size_t entry_len, struct outcome *o)
{
	st.runs++;
	if (!restore(ch, entry, entry_len) || !set_state(ch, regs) ||
	    ptrace(PTRACE_CONT, ch->pid, NULL, NULL))
		return false;
	return capture(ch, o);
}

static bool run_step(struct child *ch, struct outcome *o)
{
	if (ptrace(PTRACE_SINGLESTEP, ch->pid, NULL, NULL))
		return false;
	return capture(ch, o);
}

/* ---- comparing --------------------------------------------------------------------- */

static const char *const reg_names[16] = { "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
					    "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15" };

/*
 * Registers that cannot be compared: written by an instruction whose result differs from
 * run to run (time stamps, random numbers, the CPU it ran on).
 */
static unsigned nondeterministic(const struct ref_insn *d)
{
	unsigned m = 0;
	switch (d->in.mnemonic) {
	case ZYDIS_MNEMONIC_RDTSC: case ZYDIS_MNEMONIC_RDTSCP: case ZYDIS_MNEMONIC_RDRAND:
	case ZYDIS_MNEMONIC_RDSEED: case ZYDIS_MNEMONIC_RDPMC: case ZYDIS_MNEMONIC_CPUID:
	case ZYDIS_MNEMONIC_RDPID:
		break;
	default:
		return 0;
	}
	for (unsigned i = 0; i < d->in.operand_count; i++) {
		int n = d->ops[i].type == ZYDIS_OPERAND_TYPE_REGISTER ? ref_gpr(d->ops[i].reg.value) : -1;
		if (n >= 0 && (d->ops[i].actions & ZYDIS_OPERAND_ACTION_MASK_WRITE))
			m |= 1u << n;
	}
	return m | 1u << 16; /* and the flags (rdrand's CF) */
}

/* Registers that differ, as text; "" if none. skip: bit n for register n, 16 for flags. */
static const char *regs_diff(const struct user_regs_struct *a, const struct user_regs_struct *b,
			     unsigned skip)
{
	static char out[512];
	size_t pos = 0;
	out[0] = '\0';
#define ADD(...) pos += (size_t)snprintf(out + pos, pos < sizeof(out) ? sizeof(out) - pos : 0, __VA_ARGS__)
	for (int n = 0; n < 16; n++)
		if (!(skip & (1u << n)) && ref_reg_get(a, n) != ref_reg_get(b, n))
			ADD(" %s %#" PRIx64 "/%#" PRIx64, reg_names[n], ref_reg_get(a, n), ref_reg_get(b, n));
	if (a->rip != b->rip)
		ADD(" rip %#llx/%#llx", a->rip, b->rip);
	if (!(skip & (1u << 16)) && ((a->eflags ^ b->eflags) & FLAGS_MASK))
		ADD(" flags %#llx/%#llx", a->eflags & FLAGS_MASK, b->eflags & FLAGS_MASK);
	if (a->fs_base != b->fs_base || a->gs_base != b->gs_base)
		ADD(" fs/gs base");
#undef ADD
	return out;
}

struct ctx {
	const struct icase *c;
	const struct ref_insn *d;
	const struct reloc_plan *plan;
	uint64_t addr;
	unsigned skip; /* nondeterministic registers */
	char what[96]; /* seed and mode, for messages */
};

/* An ended relocated run as the tracer would show it: a fault inside the entry unwound. */
static bool unwind_fault(const struct ctx *x, const struct reloc_hit *hit, struct outcome *r)
{
	bool rerun = false;
	uint64_t rip = r->regs.rip;
	if (!hit->entry_len || rip < ENTRY || rip >= ENTRY + hit->entry_len)
		return true;
	int rc = reloc_unwind(x->plan, ENTRY, hit, &r->regs, &rerun);
	if (rc || !rerun) {
		report(x->c, x->what, "stopped (signal %d) at entry+%" PRIu64 ": unwind %d, rerun %d",
		       r->sig, (uint64_t)(rip - ENTRY), rc, rerun);
		return false;
	}
	if (r->fault_addr == rip && r->sig != SIGSEGV)
		r->fault_addr = x->plan->addr; /* what the tracer puts in si_addr */
	return true;
}

/* Original and relocated runs, both ended: equal? */
static bool same_end(const struct ctx *x, const struct child *ch, const struct outcome *o,
		     const struct outcome *r)
{
	const char *d;
	if (o->sig != r->sig || o->code != r->code) {
		report(x->c, x->what, "ended by signal %d code %d, the original by %d code %d", r->sig,
		       r->code, o->sig, o->code);
		return false;
	}
	if (o->fault_addr != r->fault_addr) {
		report(x->c, x->what, "fault address %#" PRIx64 ", the original's %#" PRIx64, r->fault_addr,
		       o->fault_addr);
		return false;
	}
	if (*(d = regs_diff(&r->regs, &o->regs, x->skip))) {
		report(x->c, x->what, "registers (relocated/original):%s", d);
		return false;
	}
	size_t pos = 0;
	for (int i = 0; i < ch->nr; i++) {
		for (size_t k = 0; k < ch->r[i].len; k++)
			if (o->mem[pos + k] != r->mem[pos + k]) {
				report(x->c, x->what, "memory at %#" PRIx64 " (relocated %02x, original %02x)",
				       ch->r[i].addr + k, r->mem[pos + k], o->mem[pos + k]);
				return false;
			}
		pos += ch->r[i].len;
	}
	/* The vector state; the x87 last-instruction and -operand pointers (bytes 6-23) are
	 * where an x87 instruction ran, so they may differ. */
	if (memcmp(o->xstate, r->xstate, 6) || memcmp(o->xstate + 24, r->xstate + 24, ch->xlen - 24)) {
		for (size_t k = 24; k < ch->xlen; k++)
			if (o->xstate[k] != r->xstate[k]) {
				report(x->c, x->what, "vector state differs at xsave byte %zu", k);
				break;
			}
		return false;
	}
	if (memcmp(o->xstate + 6, r->xstate + 6, 18))
		st.x87_ip_only++;
	return true;
}

/* Forgiven when a rep string instruction is stopped between iterations: what it writes
 * (its counters, lods's accumulator, cmps's flags). 0 for anything else. */
static unsigned rep_progress(const struct ref_insn *d)
{
	unsigned m = 1u << 16 | 1u << 1 | 1u << 6 | 1u << 7; /* flags, rcx, rsi, rdi: the decoder
								    omits some of them */
	if (!(d->in.attributes & (ZYDIS_ATTRIB_HAS_REP | ZYDIS_ATTRIB_HAS_REPE | ZYDIS_ATTRIB_HAS_REPNE)))
		return 0;
	for (unsigned i = 0; i < d->in.operand_count; i++) {
		int n = d->ops[i].type == ZYDIS_OPERAND_TYPE_REGISTER ? ref_gpr(d->ops[i].reg.value) : -1;
		if (n >= 0 && (d->ops[i].actions & ZYDIS_OPERAND_ACTION_MASK_WRITE))
			m |= 1u << n;
	}
	return m;
}

/*
 * Through the entry one instruction at a time: every stop must unwind to the start (rerun)
 * or to where the original instruction ended (forward: `after`, a trap), and the last step,
 * out of the entry, must end there too (or fault as `after` does), or at the start for the
 * retry load. after NULL: not known (a rep string instruction that faulted), only reruns
 * are checked.
 */
static bool step_entry(const struct ctx *x, struct child *ch, const struct user_regs_struct *start,
		       const struct user_regs_struct *prepared, const uint8_t *entry,
		       const struct reloc_hit *hit, const struct outcome *after, bool retry,
		       struct outcome *s)
{
	const struct outcome *o1 = after;
	struct user_regs_struct u = *prepared;
	bool rerun;
	const char *d;
	int k = 0;

	st.steps++;
	if (!restore(ch, entry, hit->entry_len) || !set_state(ch, prepared)) {
		report(x->c, x->what, "ptrace: %s", strerror(errno));
		return false;
	}
	for (;;) {
		uint64_t off = u.rip - ENTRY;
		int rc = reloc_unwind(x->plan, ENTRY, hit, &u, &rerun);
		st.unwinds++;
		if (rc) {
			report(x->c, x->what, "unwind at entry+%" PRIu64 ": %d", off, rc);
			return false;
		}
		if (rerun && *(d = regs_diff(&u, start, x->skip | rep_progress(x->d)))) {
			report(x->c, x->what, "unwound at entry+%" PRIu64 " to rerun (unwound/start):%s",
			       off, d);
			return false;
		}
		if (!rerun && o1 && (o1->sig != SIGTRAP || *(d = regs_diff(&u, &o1->regs, x->skip)))) {
			report(x->c, x->what, "unwound at entry+%" PRIu64 " forward (unwound/original):%s",
			       off, o1->sig != SIGTRAP ? " the original faulted" : d);
			return false;
		}
		if (++k > MAX_STEPS) {
			if (rep_progress(x->d))
				return true; /* a long rep: its first iterations were enough */
			report(x->c, x->what, "more than %d steps in the entry", MAX_STEPS);
			return false;
		}
		if (!run_step(ch, s)) {
			if (ch->pid > 0)
				report(x->c, x->what, "ptrace: %s", strerror(errno));
			return false;
		}
		if (s->sig != SIGTRAP || s->regs.rip < ENTRY || s->regs.rip >= ENTRY + hit->entry_len)
			break;
		u = s->regs;
	}
	/* Out of the entry, or a fault in it (unwound back to the instruction). */
	if (s->sig == SIGTRAP && s->code == SI_KERNEL)
		s->regs.rip--; /* ran on into an int3, as out_o1 may */
	if (!unwind_fault(x, hit, s))
		return false;
	if (retry && s->sig == SIGTRAP) { /* the load done, back to the instruction to rerun it */
		if (*(d = regs_diff(&s->regs, start, x->skip))) {
			report(x->c, x->what, "stepped out of the retry load (out/start):%s", d);
			return false;
		}
		return true;
	}
	if (o1 && (s->sig != o1->sig || *(d = regs_diff(&s->regs, &o1->regs, x->skip)))) {
		report(x->c, x->what, "stepped out with signal %d, the original's step %d:%s", s->sig,
		       o1->sig, s->sig == o1->sig ? d : "");
		return false;
	}
	return true;
}

/* ---- one case ---------------------------------------------------------------------- */


/* Register set `seed`: every register but rsp a pointer into data, the flags both ways. */
static void start_regs(const struct child *ch, int seed, uint64_t addr, struct user_regs_struct *u)
{
	uint64_t s = 0x5eed0000u + (uint64_t)seed;
	*u = ch->base;
	for (int n = 0; n < 16; n++)
		*ref_reg(u, n) = DATA + 0x4000 + (rng(&s) & 0x7ff8);
	u->rsp = RSP0;
	if (seed == 1)
		u->rcx = 1; /* loop's last iteration */
	u->rip = addr;
	u->eflags = seed == 0 ? 0x202 : 0xad7; /* IF; IF and OF SF ZF AF PF CF (DF clear) */
	u->orig_rax = ~0ull;
	u->gs_base = DATA + 0x1000;
}

/* The address of an instruction's rip-relative operand, or 0. */
static uint64_t rip_operand(const struct ref_insn *d, uint64_t addr)
{
	struct user_regs_struct none;
	uint64_t ea;
	memset(&none, 0, sizeof(none));
	for (unsigned i = 0; i < d->in.operand_count; i++)
		if (d->ops[i].type == ZYDIS_OPERAND_TYPE_MEMORY && ref_names_ip(&d->ops[i]) &&
		    ref_mem_addr(d, &d->ops[i], addr, &none, &ea))
			return ea;
	return 0;
}

static struct outcome out_o, out_o1, out_r, out_s, out_after;

static void test_case(const struct icase *c)
{
	struct reloc_plan plan;
	struct ref_insn d;
	struct child ch;
	char why[256];
	uint64_t addr = INSN_PAGE + (c->vaddr & (PAGE - 1));

	if (reloc_plan_make(&plan, addr, c->bytes, c->avail, why, sizeof(why))) {
		count_refusal(c, why);
		return;
	}
	st.accepted++;
	st.how[plan.how < N_HOW ? plan.how : 0]++;
	ref_decode(&d, c->bytes, c->avail);

	/* The rip-relative operand's pages, unless they are the code's own. */
	uint64_t near = rip_operand(&d, addr) & ~(PAGE - 1);
	if (near && near + NEAR_SIZE > CODE_BASE && near < CODE_BASE + CODE_SIZE)
		near = 0;
	const char *err = child_start(&ch, c, addr, near);
	if (err == no_sandbox) { /* a container without them: skipped, as meson counts 77 */
		printf("diff_prologues: %s, skipped\n", err);
		exit(77);
	}
	if (err) {
		report(c, "setup", "child: %s", err);
		st.child_errors++;
		child_end(&ch);
		return;
	}

	struct ctx x = { .c = c, .d = &d, .plan = &plan, .addr = addr, .skip = nondeterministic(&d) };
	bool through_mem = (plan.how == RELOC_JMP_IND || plan.how == RELOC_CALL_IND) &&
			   d.ops[0].type == ZYDIS_OPERAND_TYPE_MEMORY;
	bool ok = true;
	bool original = true; /* in the original's runs */
	timed_out = false;
	for (int seed = 0; seed < N_SEEDS && ok && ch.pid > 0; seed++) {
		struct user_regs_struct start;
		start_regs(&ch, seed, addr, &start);
		snprintf(x.what, sizeof(x.what), "%s, registers %d, original", how_names[plan.how], seed);
		original = true;
		if (!run_cont(&ch, &start, NULL, 0, &out_o) ||
		    !restore(&ch, NULL, 0) || !set_state(&ch, &start) || !run_step(&ch, &out_o1)) {
			if (ch.pid > 0)
				report(c, x.what, "ptrace: %s", strerror(errno));
			ok = false;
			break;
		}
		original = false;
		/* A step that ran on into an int3 (after an instruction the kernel emulates, which
		 * gets no trap of its own: sgdt, str, smsw under UMIP): it ended at the int3. */
		if (out_o1.sig == SIGTRAP && out_o1.code == SI_KERNEL)
			out_o1.regs.rip--;
		if (out_o.sig == SIGTRAP)
			st.ended_trap++;
		else if (out_o.sig == SIGSEGV)
			st.ended_segv++;
		else
			st.ended_other++;
		if (verbose && out_o.sig != SIGTRAP)
			printf("  %s, registers %d: the original ended by signal %d at %#llx\n", c->name,
			       seed, out_o.sig, out_o.regs.rip);
		/* Where the instruction ends: its single step; for a rep string instruction, whose
		 * step is one iteration, the continued run's trap just after it. */
		const struct outcome *after = &out_o1;
		if (rep_progress(&d)) {
			after = NULL;
			if (out_o.sig == SIGTRAP && out_o.regs.rip == addr + c->len + 1) {
				out_after = out_o;
				out_after.regs.rip--;
				after = &out_after;
			}
		}
		for (int retry = 0; retry <= (int)through_mem && ok; retry++) {
			struct user_regs_struct u = start;
			struct reloc_hit hit;
			uint8_t entry[ENTRY_SIZE];
			uint64_t la, val;
			const uint64_t *loaded = NULL;

			snprintf(x.what, sizeof(x.what), "%s, registers %d%s", how_names[plan.how], seed,
				 retry ? ", the entry's own load" : "");
			restore(&ch, NULL, 0);
			if (!retry && reloc_hit_load_addr(&plan, &u, &la) && mem_read(&ch, la, &val, 8))
				loaded = &val;
			int rc = reloc_hit_prepare(&plan, ENTRY, entry, sizeof(entry), &u, loaded, &hit);
			if (rc) {
				report(c, x.what, "reloc_hit_prepare: %d", rc);
				ok = false;
				break;
			}
			if (!hit.entry_len && out_o1.sig == SIGTRAP &&
			    *regs_diff(&u, &out_o1.regs, x.skip)) {
				report(c, x.what, "emulated (emulated/original):%s",
				       regs_diff(&u, &out_o1.regs, x.skip));
				ok = false;
				break;
			}
			if (!run_cont(&ch, &u, entry, hit.entry_len, &out_r)) {
				if (ch.pid > 0)
					report(c, x.what, "ptrace: %s", strerror(errno));
				ok = false;
				break;
			}
			ok = unwind_fault(&x, &hit, &out_r) && same_end(&x, &ch, &out_o, &out_r);
			if (ok && hit.entry_len)
				ok = step_entry(&x, &ch, &start, &u, entry, &hit, after,
						through_mem && !loaded, &out_s);
		}
	}
	if (ch.pid <= 0 && timed_out && original) {
		st.endless++; /* not comparable: the instruction itself does not end */
		ok = true;
	} else if (ch.pid <= 0 && timed_out) {
		report(c, x.what, "the relocated run did not end, the original did");
		st.different++;
		ok = false;
	} else if (ch.pid <= 0) {
		/* Killed (seccomp, rlimit) or gone: a difference unless it was the original. */
		if (WIFSIGNALED(death_status))
			report(c, x.what, "the child was killed by signal %d", WTERMSIG(death_status));
		else
			report(c, x.what, "the child ended (status %#x)", death_status);
		if (original)
			st.child_errors++;
		else
			st.different++;
		ok = false;
	} else if (ok) {
		st.equal++;
	} else {
		st.different++;
	}
	if (verbose)
		printf("%s %s %s\n", ok ? "ok" : "NOT OK", c->name, how_names[plan.how]);
	child_end(&ch);
}

/* ---- fuzz seeds -------------------------------------------------------------------- */

/* Writes each case as a fuzz_relocate input: its bytes, then a configuration with the
 * address the library would have at 0x7f3400000000, registers as in the runs here. */
static int write_seeds(const char *dir)
{
	for (size_t i = 0; i < n_cases; i++) {
		const struct icase *c = &cases[i];
		uint8_t in[RELOC_INSN_MAX + 177];
		uint64_t v, s = 0x5eed0000u;
		char path[4096];
		memset(in, 0x90, RELOC_INSN_MAX);
		memset(in + RELOC_INSN_MAX, 0, sizeof(in) - RELOC_INSN_MAX);
		memcpy(in, c->bytes, c->avail);
		v = (0x7f3400000000ull + c->vaddr) ^ 0x401000;
		memcpy(in + RELOC_INSN_MAX, &v, 8);
		in[RELOC_INSN_MAX + 16] = 1; /* the pointer was read */
		for (int n = 0; n < 16; n++) {
			v = n == 4 ? RSP0 : DATA + 0x4000 + (rng(&s) & 0x7ff8);
			memcpy(in + RELOC_INSN_MAX + 17 + 8 * n, &v, 8);
		}
		snprintf(path, sizeof(path), "%s/prologue-%06zu", dir, i);
		FILE *f = fopen(path, "wb");
		if (!f || fwrite(in, sizeof(in), 1, f) != 1 || fclose(f)) {
			perror(path);
			return 2;
		}
	}
	printf("%zu seeds in %s\n", n_cases, dir);
	return 0;
}

/* ---- main -------------------------------------------------------------------------- */

static int by_count(const void *a, const void *b)
{
	const struct reason *x = a, *y = b;
	return (x->count < y->count) - (x->count > y->count);
}

int main(int argc, char **argv)
{
	const char *seeds = NULL, *path = NULL, *fuzz_dir = NULL;
	size_t n_random = 0;
	uint64_t seed = 1;
	size_t max = (size_t)-1;
	struct timespec t0, t1;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-v"))
			verbose = true;
		else if (!strcmp(argv[i], "--seeds") && i + 1 < argc)
			seeds = argv[++i];
		else if (!strcmp(argv[i], "--fuzz") && i + 1 < argc)
			fuzz_dir = argv[++i];
		else if (!strcmp(argv[i], "--random") && i + 1 < argc)
			n_random = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--max") && i + 1 < argc)
			max = strtoull(argv[++i], NULL, 0);
		else if (argv[i][0] != '-' && !path)
			path = argv[i];
		else {
			fprintf(stderr, "usage: %s [-v] [--max N] [--seeds DIR] [--fuzz DIR | "
				"--random N [--seed S] | CORPUS]\n",
				argv[0]);
			return 2;
		}
	}
	set = calloc(1u << SET_BITS, sizeof(*set));
	if (!set)
		return 2;
	if (n_random) {
		random_cases(n_random, seed);
	} else if (fuzz_dir) {
		if (read_fuzz_dir(fuzz_dir)) {
			perror(fuzz_dir);
			return 2;
		}
	} else {
		FILE *f = path ? fopen(path, "r") : stdin;
		if (!f || read_corpus(f)) {
			perror(path ? path : "stdin");
			return 2;
		}
		if (f != stdin)
			fclose(f);
	}
	if (seeds)
		return write_seeds(seeds);
	if (!n_cases) {
		fprintf(stderr, "diff_prologues: no instructions in the corpus\n");
		return 2;
	}

	size_t mem_max = DATA_SIZE + STACK_SIZE + NEAR_SIZE + TLS_BELOW + TLS_ABOVE + 2 * PAGE;
	struct outcome *outs[] = { &out_o, &out_o1, &out_r, &out_s };
	for (size_t i = 0; i < 4; i++)
		if (!(outs[i]->mem = malloc(mem_max)))
			return 2;
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = { .sa_handler = on_alarm }; /* no SA_RESTART: waits are cut */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	size_t n = n_cases < max ? n_cases : max;
	for (size_t i = 0; i < n; i++)
		test_case(&cases[i]);
	clock_gettime(CLOCK_MONOTONIC, &t1);

	printf("prologues: %zu windows, %zu distinct instructions (%zu first in a window), %zu tested\n",
	       n_windows, n_cases, n_first, n);
	printf("accepted %u:", st.accepted);
	for (size_t h = 0; h < N_HOW; h++)
		if (st.how[h])
			printf(" %s %u", how_names[h], st.how[h]);
	printf("\nrefused %u:\n", st.refused);
	qsort(st.reasons, st.n_reasons, sizeof(st.reasons[0]), by_count);
	for (unsigned i = 0; i < st.n_reasons; i++)
		printf("  %6u  %s  e.g. %s\n", st.reasons[i].count, st.reasons[i].text,
		       st.reasons[i].example);
	printf("executed %u: equal %u, different %u, child errors %u (%u runs, %u stepped through "
	       "the entry, %u unwinds; x87 pointers alone differed in %u)\n",
	       st.accepted, st.equal, st.different, st.child_errors, st.runs, st.steps, st.unwinds,
	       st.x87_ip_only);
	printf("original runs ended by a trap %u, by SIGSEGV %u, otherwise %u; %u cases never "
	       "ended (skipped)\n", st.ended_trap, st.ended_segv, st.ended_other, st.endless);
	printf("%.1f s\n", (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	return st.different || st.child_errors ? 1 : 0;
}
