/*
 * libFuzzer harness for the relocator: arbitrary instruction bytes at an arbitrary address,
 * an entry anywhere (often more than 2 GiB away) and arbitrary registers. Plans are
 * checked against the harness's own decode (ref_decode.h), and every hit by walking what
 * it wrote, instruction by instruction, on a model of the registers:
 *
 *   plan      refused where relocate.h promises a refusal, accepted where it promises a
 *             class, and copied only when nothing in the instruction depends on where it
 *             runs; the length is the decoder's
 *   emulated  rip as the architecture computes it (conditions by mnemonic, loop's count,
 *             indirect targets), nothing else changed but loop's rcx, nothing written
 *   entry     every instruction valid and inside entry_len; the displaced instruction is the
 *             original with the same operands, reaching the same memory with the registers
 *             as prepared, and using no register the hit changed; the added instructions
 *             touch no flags and write no memory but a call's return address (exactly the
 *             8 bytes below rsp, holding addr + len); they restore every register and jump
 *             to addr + len, to the call's target, or back to addr (the retry load)
 *   unwind    at every instruction boundary in the entry: back to addr with the start
 *             state, or forward to the finished state; -EINVAL between boundaries, -ENOENT
 *             outside the entry
 *
 * Any violation prints the input and aborts.
 *
 * Input: up to 15 instruction bytes, then a configuration (zero-padded when short):
 *   u64 addr, u64 entry, u8 mode, u64 regs[16] (rax .. r15, x86 order), u64 eflags,
 *   u64 fs_base, u64 gs_base, u64 loaded (the pointer a jmp/call through memory reads).
 * Addresses are xor-ed with typical ones, so that an all-zero configuration is a probe at
 * 0x401000 with an entry at 0x7f0000000000.
 */
#include "ref_decode.h"
#include "relocate.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define USER_MASK ((1ull << 47) - 1)
#define ENTRY_SIZE 64 /* ptss's entries */
#define FILL 0xa5
#define POISON(n) (0xdead0000beef0000ull | (uint64_t)(n)) /* a register the walk cannot know */
#define RSP_BIT (1u << 4)
#define MAX_BOUNDS 16

enum {
	M_LOADED = 1,      /* the tracer could read the pointer (else the entry loads it) */
	M_NEAR_ENTRY = 2,  /* entry within 2 GiB of addr */
	M_SMALL_ENTRY = 4, /* also try an entry one byte smaller than promised */
};

enum { CFG_ADDR = 0, CFG_ENTRY = 8, CFG_MODE = 16, CFG_REGS = 17, CFG_FLAGS = CFG_REGS + 128,
       CFG_FS = CFG_FLAGS + 8, CFG_GS = CFG_FS + 8, CFG_LOADED = CFG_GS + 8, CFG_SIZE = CFG_LOADED + 8 };

struct input {
	uint8_t code[RELOC_INSN_MAX];
	size_t avail;
	uint64_t addr, entry, loaded;
	uint8_t mode;
	struct user_regs_struct regs;
};

static const struct input *cur; /* for messages */

static const char *const how_names[] = {
	"copy", "copy-end", "rip-relative", "nop", "jmp", "jcc", "jrcxz", "loop", "call",
	"jmp-indirect", "call-indirect",
};

static const char *how_name(unsigned how)
{
	return how < sizeof(how_names) / sizeof(how_names[0]) ? how_names[how] : "?";
}

__attribute__((format(printf, 1, 2), noreturn))
static void fail(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "fuzz_relocate: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n  bytes:");
	for (size_t i = 0; i < cur->avail; i++)
		fprintf(stderr, " %02x", cur->code[i]);
	fprintf(stderr, "\n  addr %#" PRIx64 ", entry %#" PRIx64 ", mode %#x, loaded %#" PRIx64 "\n",
		cur->addr, cur->entry, cur->mode, cur->loaded);
	abort();
}

#define CHECK(cond, ...) do { if (!(cond)) fail(__VA_ARGS__); } while (0)

static const char *const reg_names[16] = { "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
					    "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15" };

/* The first field in which two register files differ, or NULL. */
static const char *regs_differ(const struct user_regs_struct *a, const struct user_regs_struct *b)
{
	static const struct { const char *name; size_t off; } f[] = {
#define F(x) { #x, offsetof(struct user_regs_struct, x) }
		F(rax), F(rcx), F(rdx), F(rbx), F(rsp), F(rbp), F(rsi), F(rdi), F(r8), F(r9),
		F(r10), F(r11), F(r12), F(r13), F(r14), F(r15), F(rip), F(eflags), F(orig_rax),
		F(cs), F(ss), F(ds), F(es), F(fs), F(gs), F(fs_base), F(gs_base),
#undef F
	};
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
		if (memcmp((const char *)a + f[i].off, (const char *)b + f[i].off, 8))
			return f[i].name;
	return NULL;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static void parse(const uint8_t *data, size_t size, struct input *in)
{
	uint8_t cfg[CFG_SIZE] = { 0 };

	memset(in, 0, sizeof(*in));
	in->avail = size < RELOC_INSN_MAX ? size : RELOC_INSN_MAX;
	memcpy(in->code, data, in->avail);
	if (size > RELOC_INSN_MAX)
		memcpy(cfg, data + RELOC_INSN_MAX,
		       size - RELOC_INSN_MAX < CFG_SIZE ? size - RELOC_INSN_MAX : CFG_SIZE);
	in->addr = (get64(cfg + CFG_ADDR) ^ 0x401000) & USER_MASK;
	in->mode = cfg[CFG_MODE];
	if (in->mode & M_NEAR_ENTRY)
		in->entry = (in->addr + (uint64_t)(int64_t)(int32_t)get64(cfg + CFG_ENTRY)) & USER_MASK;
	else
		in->entry = (get64(cfg + CFG_ENTRY) ^ 0x7f0000000000ull) & USER_MASK;
	for (int n = 0; n < 16; n++)
		*ref_reg(&in->regs, n) = get64(cfg + CFG_REGS + 8 * n);
	in->regs.rip = in->addr;
	in->regs.eflags = (get64(cfg + CFG_FLAGS) & 0xcd5) | 0x202; /* status flags, DF; IF */
	in->regs.orig_rax = ~0ull;
	in->regs.fs_base = get64(cfg + CFG_FS) & USER_MASK;
	in->regs.gs_base = get64(cfg + CFG_GS) & USER_MASK;
	in->loaded = get64(cfg + CFG_LOADED);
}

/* ---- what relocate.h promises for an instruction ----------------------------------- */

#define BIT(h) (1u << (h))

/*
 * The classes the instruction may get (0: it must be refused), and whether it must be
 * accepted: refusals are allowed only where the header has a reason for them.
 */
static unsigned expected_classes(const struct ref_insn *d, bool *must_accept)
{
	ZydisMnemonic m = d->in.mnemonic;
	bool rel = false, ip_reg = false, ip_mem = false, is_jcc;

	*must_accept = false;
	for (unsigned i = 0; i < d->in.operand_count; i++) {
		const ZydisDecodedOperand *op = &d->ops[i];
		if (op->type == ZYDIS_OPERAND_TYPE_IMMEDIATE && op->imm.is_relative)
			rel = true;
		if (ref_names_ip(op)) {
			if (op->type == ZYDIS_OPERAND_TYPE_MEMORY)
				ip_mem = true;
			else
				ip_reg = true;
		}
	}
	switch (m) {
	case ZYDIS_MNEMONIC_SYSCALL: case ZYDIS_MNEMONIC_SYSENTER: case ZYDIS_MNEMONIC_SYSEXIT:
	case ZYDIS_MNEMONIC_SYSRET: case ZYDIS_MNEMONIC_INT3: case ZYDIS_MNEMONIC_INT:
	case ZYDIS_MNEMONIC_INT1: case ZYDIS_MNEMONIC_INTO:
		return 0;
	case ZYDIS_MNEMONIC_NOP: case ZYDIS_MNEMONIC_ENDBR64: case ZYDIS_MNEMONIC_ENDBR32:
		/* Emulated, or copied: faithful too, and right for what the decoder calls a nop
		 * but a CPU may not (0f 0d with a register operand is #UD on AMD); a copied
		 * hint nop with a rip-relative operand is rebased like any such operand. */
		*must_accept = true;
		return BIT(RELOC_NOP) | BIT(RELOC_COPY) | BIT(RELOC_RIPREL);
	case ZYDIS_MNEMONIC_RET: case ZYDIS_MNEMONIC_IRET: case ZYDIS_MNEMONIC_IRETD:
	case ZYDIS_MNEMONIC_IRETQ:
		*must_accept = true;
		return BIT(RELOC_COPY_END);
	default:
		break;
	}
	if (d->in.meta.branch_type == ZYDIS_BRANCH_TYPE_FAR)
		return 0;
	if (rel) {
		ref_jcc_taken(m, 0, &is_jcc);
		if (m == ZYDIS_MNEMONIC_JMP)
			return BIT(RELOC_JMP);
		if (m == ZYDIS_MNEMONIC_CALL)
			return BIT(RELOC_CALL);
		if (is_jcc)
			return BIT(RELOC_JCC);
		if (m == ZYDIS_MNEMONIC_JRCXZ || m == ZYDIS_MNEMONIC_JECXZ)
			return BIT(RELOC_JRCXZ);
		if (m == ZYDIS_MNEMONIC_LOOP || m == ZYDIS_MNEMONIC_LOOPE || m == ZYDIS_MNEMONIC_LOOPNE)
			return BIT(RELOC_LOOP);
		return 0;
	}
	if (m == ZYDIS_MNEMONIC_JMP)
		return BIT(RELOC_JMP_IND);
	if (m == ZYDIS_MNEMONIC_CALL)
		return BIT(RELOC_CALL_IND);
	if (ip_reg)
		return 0;
	if (ip_mem)
		return BIT(RELOC_RIPREL);
	*must_accept = true; /* depends on nothing of where it runs */
	return BIT(RELOC_COPY);
}

/* ---- emulated hits ----------------------------------------------------------------- */

static uint64_t rel_target(const struct ref_insn *d, uint64_t addr)
{
	for (unsigned i = 0; i < d->in.operand_count; i++)
		if (d->ops[i].type == ZYDIS_OPERAND_TYPE_IMMEDIATE && d->ops[i].imm.is_relative)
			return addr + d->in.length + d->ops[i].imm.value.u; /* sign-extended */
	fail("no relative operand");
}

/* Where an indirect branch goes: a register's value, or the loaded pointer (NULL: the
 * entry loads it, and the walk sees it go back to addr). */
static uint64_t ind_target(const struct ref_insn *d, const struct user_regs_struct *orig,
			   const uint64_t *loaded, uint64_t addr)
{
	if (d->ops[0].type == ZYDIS_OPERAND_TYPE_REGISTER) {
		int n = ref_gpr(d->ops[0].reg.value);
		CHECK(n >= 0, "branch through a non-GPR register was accepted");
		return ref_reg_get(orig, n);
	}
	return loaded ? *loaded : addr;
}

static void check_emulated(const struct input *in, const struct reloc_plan *plan,
			   const struct ref_insn *d, const struct user_regs_struct *got,
			   const uint64_t *loaded)
{
	const struct user_regs_struct *o = &in->regs;
	struct user_regs_struct want = *o;
	uint64_t next = in->addr + d->in.length;
	ZydisMnemonic m = d->in.mnemonic;
	bool taken = false, is_jcc;

	switch ((enum reloc_how)plan->how) {
	case RELOC_NOP:
		break;
	case RELOC_JMP:
		taken = true;
		break;
	case RELOC_JCC:
		taken = ref_jcc_taken(m, o->eflags, &is_jcc);
		CHECK(is_jcc, "jcc plan for a %s", ZydisMnemonicGetString(m));
		break;
	case RELOC_JRCXZ:
		taken = m == ZYDIS_MNEMONIC_JECXZ ? (uint32_t)o->rcx == 0 : o->rcx == 0;
		break;
	case RELOC_LOOP:
		CHECK(d->in.address_width == 64, "loop with a %u-bit count accepted",
		      d->in.address_width);
		want.rcx = o->rcx - 1;
		taken = want.rcx != 0 &&
			(m == ZYDIS_MNEMONIC_LOOP || (m == ZYDIS_MNEMONIC_LOOPE) == !!(o->eflags & 0x40));
		break;
	case RELOC_JMP_IND:
		CHECK(d->ops[0].type == ZYDIS_OPERAND_TYPE_REGISTER || loaded,
		      "jmp through memory emulated without the pointer");
		break;
	default:
		fail("a %s hit wrote no entry", how_name(plan->how));
	}
	if (plan->how == RELOC_JMP_IND)
		want.rip = ind_target(d, o, loaded, in->addr);
	else
		want.rip = taken ? rel_target(d, in->addr) : next;
	const char *f = regs_differ(got, &want);
	CHECK(!f, "emulated %s: %s differs (rip %#llx, want %#llx)", how_name(plan->how), f,
	      got->rip, want.rip);
}

/* ---- entries ----------------------------------------------------------------------- */

struct walk {
	const struct input *in;
	const struct reloc_plan *plan;
	const struct ref_insn *d;           /* the original */
	const uint8_t *buf;                 /* the entry as written */
	size_t len;
	bool retry;                         /* the entry loads the pointer itself */
	bool call;                          /* the entry pushes a return address */
	uint64_t want_load;                 /* through memory: the pointer's address */
	struct user_regs_struct orig;       /* at the probe */
	struct user_regs_struct now;        /* at the current boundary */
	uint16_t unknown;                   /* written by the displaced instruction */
	uint8_t slot[8], slot_set;          /* the 8 bytes below orig.rsp, as written */
	bool displaced_ran, ended;
	uint64_t target;                    /* where the final jump goes */
	size_t nb;                          /* boundaries */
	size_t b_off[MAX_BOUNDS];
	struct user_regs_struct b_regs[MAX_BOUNDS];
	uint16_t b_unknown[MAX_BOUNDS];
	uint8_t b_may[MAX_BOUNDS];          /* what unwinding there may do: enum unwind_may */
};

enum unwind_may { MAY_RERUN = 1, MAY_FORWARD = 2 };

/*
 * Where a thread stopped at this boundary may go. Before the displaced instruction, back
 * to the probe; after it, forward only: running it twice is wrong. The retry load only
 * reads, so always back. A call's pushes are rewritten by the call when it reruns, so
 * back is always right, and forward too once the slot holds the return address.
 */
static uint8_t unwind_may(const struct walk *w)
{
	uint64_t ret;
	memcpy(&ret, w->slot, 8);
	if (w->retry)
		return MAY_RERUN;
	if (w->call)
		return MAY_RERUN | (w->slot_set == 0xff && ret == w->in->addr + w->d->in.length ?
				    MAY_FORWARD : 0);
	return w->displaced_ran ? MAY_FORWARD : MAY_RERUN;
}

/* The displaced instruction: the original's operands, the original's memory. */
static void check_displaced(struct walk *w, const struct ref_insn *e, size_t off)
{
	const struct ref_insn *o = w->d;
	uint64_t at = w->in->entry + off;

	if (w->plan->how != RELOC_RIPREL)
		CHECK(e->in.length == o->in.length && !memcmp(w->buf + off, w->in->code, o->in.length),
		      "the %s entry does not start with the instruction", how_name(w->plan->how));
	CHECK(e->in.mnemonic == o->in.mnemonic && e->in.operand_count == o->in.operand_count,
	      "the displaced instruction became %s", ZydisMnemonicGetString(e->in.mnemonic));
	for (unsigned i = 0; i < o->in.operand_count; i++) {
		const ZydisDecodedOperand *a = &o->ops[i], *b = &e->ops[i];
		int n;
		CHECK(a->type == b->type && a->actions == b->actions && a->size == b->size &&
		      a->visibility == b->visibility, "operand %u changed kind", i);
		switch (a->type) {
		case ZYDIS_OPERAND_TYPE_REGISTER:
			CHECK(a->reg.value == b->reg.value, "operand %u: %s became %s", i,
			      ZydisRegisterGetString(a->reg.value), ZydisRegisterGetString(b->reg.value));
			n = ref_gpr(a->reg.value);
			CHECK(n < 0 || ref_reg_get(&w->orig, n) == ref_reg_get(&w->now, n),
			      "operand %u: uses %s, which the hit changed", i, reg_names[n]);
			CHECK(n < 0 || !(w->unknown & (1u << n)), "operand %u: unknown %s", i, reg_names[n]);
			break;
		case ZYDIS_OPERAND_TYPE_IMMEDIATE:
			CHECK(a->imm.value.u == b->imm.value.u && !a->imm.is_relative,
			      "operand %u: immediate changed", i);
			break;
		case ZYDIS_OPERAND_TYPE_MEMORY: {
			uint64_t ea_o = 0, ea_r = 0;
			bool ko = ref_mem_addr(o, a, w->in->addr, &w->orig, &ea_o);
			bool kr = ref_mem_addr(e, b, at, &w->now, &ea_r);
			CHECK(!ref_names_ip(b), "operand %u: still based on the instruction pointer", i);
			CHECK(a->mem.type == b->mem.type, "operand %u: memory kind changed", i);
			CHECK(ko == kr && ea_o == ea_r,
			      "operand %u reaches %#" PRIx64 ", the original %#" PRIx64, i, ea_r, ea_o);
			if (!ko) /* vsib, mib: no address to compare; the registers must be the same */
				CHECK(a->mem.base == b->mem.base && a->mem.index == b->mem.index &&
				      a->mem.disp.value == b->mem.disp.value,
				      "operand %u: registers changed", i);
			n = ref_gpr(b->mem.index);
			CHECK(n < 0 || ref_reg_get(&w->orig, n) == ref_reg_get(&w->now, n),
			      "operand %u: index %s changed by the hit", i, reg_names[n]);
			break;
		}
		default:
			CHECK(!memcmp(&a->ptr, &b->ptr, sizeof(a->ptr)), "operand %u changed", i);
			break;
		}
	}
	/* What it writes, the walk no longer knows; none may be a register the hit changed:
	 * the entry's restore would undo the write. */
	for (unsigned i = 0; i < e->in.operand_count; i++) {
		const ZydisDecodedOperand *b = &e->ops[i];
		int n = b->type == ZYDIS_OPERAND_TYPE_REGISTER ? ref_gpr(b->reg.value) : -1;
		if (n < 0 || !(b->actions & ZYDIS_OPERAND_ACTION_MASK_WRITE))
			continue;
		CHECK(ref_reg_get(&w->orig, n) == ref_reg_get(&w->now, n),
		      "writes %s, which the hit changed", reg_names[n]);
		w->unknown |= (uint16_t)(1u << n);
	}
	w->displaced_ran = true;
}

static void write_mem(struct walk *w, const struct ref_insn *e, size_t off, uint64_t ea,
		      unsigned n, uint64_t v)
{
	const char *name = ZydisMnemonicGetString(e->in.mnemonic);
	uint64_t rel = ea - (w->orig.rsp - 8);

	CHECK(w->call, "%s at entry+%zu writes memory", name, off);
	CHECK(!(w->unknown & RSP_BIT), "%s at entry+%zu: rsp unknown", name, off);
	CHECK((int64_t)(ea - w->now.rsp) >= 0, "%s at entry+%zu writes below rsp", name, off);
	CHECK(n <= 8 && rel <= 8 - n, "%s at entry+%zu writes [rsp%+" PRId64 ", +%u) of the start rsp",
	      name, off, (int64_t)(ea - w->orig.rsp), n);
	for (unsigned i = 0; i < n; i++) {
		w->slot[rel + i] = (uint8_t)(v >> (8 * i));
		w->slot_set |= (uint8_t)(1u << (rel + i));
	}
}

/* An instruction the relocator added: its effect on the model. */
static void run_added(struct walk *w, const struct ref_insn *e, size_t off, size_t *next)
{
	const ZydisAccessedFlags *f = e->in.cpu_flags;
	const ZydisDecodedOperand *a = &e->ops[0], *b = &e->ops[1];
	const char *name = ZydisMnemonicGetString(e->in.mnemonic);
	uint64_t at = w->in->entry + off, ea;
	int n;

	CHECK(!f || !(f->modified | f->set_0 | f->set_1 | f->undefined),
	      "%s at entry+%zu changes flags", name, off);
	switch (e->in.mnemonic) {
	case ZYDIS_MNEMONIC_PUSH:
		CHECK(a->type == ZYDIS_OPERAND_TYPE_IMMEDIATE && e->in.operand_width == 64,
		      "unexpected push at entry+%zu", off);
		CHECK(!(w->unknown & RSP_BIT), "push with rsp unknown");
		w->now.rsp -= 8;
		write_mem(w, e, off, w->now.rsp, 8, a->imm.value.u);
		return;
	case ZYDIS_MNEMONIC_MOV:
		if (a->type == ZYDIS_OPERAND_TYPE_MEMORY && b->type == ZYDIS_OPERAND_TYPE_IMMEDIATE) {
			n = ref_gpr(a->mem.base);
			CHECK(n >= 0 && !(w->unknown & (1u << n)) && a->mem.index == ZYDIS_REGISTER_NONE,
			      "store at entry+%zu through an unknown address", off);
			CHECK(ref_mem_addr(e, a, at, &w->now, &ea), "store at entry+%zu: no address", off);
			write_mem(w, e, off, ea, a->size / 8, b->imm.value.u);
			return;
		}
		CHECK(a->type == ZYDIS_OPERAND_TYPE_REGISTER, "unexpected mov at entry+%zu", off);
		n = ref_gpr(a->reg.value);
		CHECK(n >= 0 && a->size == 64, "mov to %s at entry+%zu",
		      ZydisRegisterGetString(a->reg.value), off);
		if (b->type == ZYDIS_OPERAND_TYPE_IMMEDIATE) { /* the restore */
			*ref_reg(&w->now, n) = b->imm.value.u;
			w->unknown &= (uint16_t)~(1u << n);
			return;
		}
		/* The retry load: the pointer the original reads, into a register restored later. */
		CHECK(w->retry && off == 0 && b->type == ZYDIS_OPERAND_TYPE_MEMORY && b->size == 64,
		      "unexpected load at entry+%zu", off);
		CHECK(ref_mem_addr(e, b, at, &w->now, &ea) && ea == w->want_load,
		      "the retry loads from %#" PRIx64 ", the original from %#" PRIx64, ea, w->want_load);
		w->unknown |= (uint16_t)(1u << n);
		return;
	case ZYDIS_MNEMONIC_JMP:
		if (a->type == ZYDIS_OPERAND_TYPE_MEMORY) {
			CHECK(ref_mem_addr(e, a, at, &w->now, &ea), "jmp at entry+%zu: no address", off);
			CHECK(ea >= at + e->in.length && ea - w->in->entry + 8 <= w->len,
			      "jmp at entry+%zu reads its target outside the entry's tail", off);
			memcpy(&w->target, w->buf + (ea - w->in->entry), 8);
			*next = ea - w->in->entry + 8;
		} else if (a->type == ZYDIS_OPERAND_TYPE_IMMEDIATE && a->imm.is_relative) {
			w->target = at + e->in.length + a->imm.value.u;
		} else {
			fail("unexpected jmp at entry+%zu", off);
		}
		w->ended = true;
		return;
	default:
		fail("unexpected %s at entry+%zu", name, off);
	}
}

static void check_unwind(const struct walk *w, const struct reloc_hit *hit,
			 const struct user_regs_struct *prepared, uint64_t target)
{
	const struct input *in = w->in;
	struct user_regs_struct u, want;
	bool rerun, bound[ENTRY_SIZE + 1] = { false };
	int rc;

	for (size_t k = 0; k < w->nb; k++) {
		bound[w->b_off[k]] = true;
		u = w->b_regs[k];
		for (int n = 0; n < 16; n++)
			if (w->b_unknown[k] & (1u << n))
				*ref_reg(&u, n) = POISON(n);
		u.rip = in->entry + w->b_off[k];
		want = u;
		rc = reloc_unwind(w->plan, in->entry, hit, &u, &rerun);
		CHECK(rc == 0, "unwind at entry+%zu: %d", w->b_off[k], rc);
		if (rerun) {
			CHECK(w->b_may[k] & MAY_RERUN, "unwind at entry+%zu reruns, after the effect",
			      w->b_off[k]);
			want = w->orig;
		} else {
			CHECK(w->b_may[k] & MAY_FORWARD, "unwind at entry+%zu goes forward, before the effect",
			      w->b_off[k]);
			for (int n = 0; n < 16; n++)
				if (!(w->b_unknown[k] & (1u << n)))
					*ref_reg(&want, n) = ref_reg_get(&w->orig, n);
			if (w->call)
				want.rsp = w->orig.rsp - 8;
			want.rip = target;
		}
		const char *f = regs_differ(&u, &want);
		CHECK(!f, "unwind at entry+%zu (%s): %s wrong", w->b_off[k], rerun ? "rerun" : "forward", f);
	}
	/* Between boundaries: refused, regs untouched. Outside the entry: not its business. */
	for (size_t off = 0; off <= w->len; off++) {
		if (bound[off])
			continue;
		u = *prepared;
		u.rip = in->entry + off;
		want = u;
		rc = reloc_unwind(w->plan, in->entry, hit, &u, &rerun);
		CHECK(rc == (off < w->len ? -EINVAL : -ENOENT), "unwind at entry+%zu: %d", off, rc);
		CHECK(!regs_differ(&u, &want), "a refused unwind changed the registers");
	}
	if (in->entry) {
		u = *prepared;
		u.rip = in->entry - 1;
		CHECK(reloc_unwind(w->plan, in->entry, hit, &u, &rerun) == -ENOENT,
		      "unwind before the entry");
	}
}

static void check_entry(const struct input *in, const struct reloc_plan *plan,
			const struct ref_insn *d, const uint8_t *buf, const struct reloc_hit *hit,
			const struct user_regs_struct *prepared, const uint64_t *loaded,
			uint64_t want_load)
{
	static struct walk w; /* large: off the fuzzer's stack */
	enum reloc_how how = (enum reloc_how)plan->how;
	uint64_t next = in->addr + d->in.length;
	bool through_mem = (how == RELOC_JMP_IND || how == RELOC_CALL_IND) &&
			   d->ops[0].type == ZYDIS_OPERAND_TYPE_MEMORY;

	memset(&w, 0, sizeof(w));
	w.in = in;
	w.plan = plan;
	w.d = d;
	w.buf = buf;
	w.len = hit->entry_len;
	w.retry = through_mem && !loaded;
	w.call = !w.retry && (how == RELOC_CALL || how == RELOC_CALL_IND);
	w.want_load = want_load;
	w.orig = in->regs;
	w.now = *prepared;

	/* The registers the thread resumes with: the probe's, but rip = the entry and at most
	 * one more register, which holds addr + len for a rip-relative operand. */
	CHECK(prepared->rip == in->entry, "rip %#llx is not the entry", prepared->rip);
	struct user_regs_struct same = *prepared;
	same.rip = in->regs.rip;
	int changed = 0;
	for (int n = 0; n < 16; n++) {
		if (ref_reg_get(prepared, n) == ref_reg_get(&in->regs, n))
			continue;
		bool rip_based = how == RELOC_RIPREL || (w.retry && d->ops[0].mem.base == ZYDIS_REGISTER_RIP);
		CHECK(rip_based && ref_reg_get(prepared, n) == next && !changed++,
		      "the hit changed %s", reg_names[n]);
		*ref_reg(&same, n) = ref_reg_get(&in->regs, n);
	}
	CHECK(!regs_differ(&same, &in->regs), "the hit changed %s", regs_differ(&same, &in->regs));

	size_t off = 0;
	while (off < w.len) {
		struct ref_insn e;
		CHECK(!w.ended, "bytes after the end of the sequence, at entry+%zu", off);
		CHECK(w.nb < MAX_BOUNDS, "too many instructions");
		w.b_off[w.nb] = off;
		w.b_regs[w.nb] = w.now;
		w.b_unknown[w.nb] = w.unknown;
		w.b_may[w.nb] = unwind_may(&w);
		w.nb++;
		CHECK(ref_decode(&e, buf + off, w.len - off), "invalid instruction at entry+%zu", off);
		size_t after = off + e.in.length;
		w.now.rip = in->entry + off;
		if (off == 0 && (how == RELOC_COPY || how == RELOC_COPY_END || how == RELOC_RIPREL)) {
			check_displaced(&w, &e, off);
			w.ended = how == RELOC_COPY_END;
		} else {
			run_added(&w, &e, off, &after);
		}
		off = after;
	}
	CHECK(off == w.len, "the last instruction crosses entry_len");
	CHECK(w.ended && (w.displaced_ran || how != RELOC_COPY_END), "the sequence does not end");

	uint64_t want_target;
	switch (how) {
	case RELOC_COPY: case RELOC_RIPREL:
		CHECK(w.displaced_ran, "the displaced instruction is not at the entry's start");
		want_target = next;
		break;
	case RELOC_COPY_END:
		return check_unwind(&w, hit, prepared, 0);
	case RELOC_CALL:
		want_target = rel_target(d, in->addr);
		break;
	case RELOC_JMP_IND: case RELOC_CALL_IND:
		want_target = ind_target(d, &in->regs, loaded, in->addr);
		CHECK(w.retry || how == RELOC_CALL_IND, "jmp through an entry without a retry");
		break;
	default:
		fail("a %s hit wrote an entry", how_name(how));
	}
	CHECK(w.target == want_target, "the entry goes to %#" PRIx64 ", want %#" PRIx64, w.target,
	      want_target);
	if (w.call) {
		uint64_t ret;
		memcpy(&ret, w.slot, 8);
		CHECK(w.slot_set == 0xff && ret == next, "return address %#" PRIx64 " (bytes %#x), want %#" PRIx64,
		      ret, w.slot_set, next);
	}
	for (int n = 0; n < 16; n++) {
		uint64_t want = ref_reg_get(&in->regs, n) - (n == 4 && w.call ? 8 : 0);
		CHECK((w.unknown & (1u << n)) || ref_reg_get(&w.now, n) == want,
		      "the entry leaves %s = %#" PRIx64 ", want %#" PRIx64, reg_names[n],
		      ref_reg_get(&w.now, n), want);
	}
	check_unwind(&w, hit, prepared, want_target);
}

/* ---- a hit ------------------------------------------------------------------------- */

static void check_hit(const struct input *in, const struct reloc_plan *plan,
		      const struct ref_insn *d, size_t need)
{
	const struct user_regs_struct *o = &in->regs;
	struct user_regs_struct u;
	struct reloc_hit hit;
	uint8_t buf[ENTRY_SIZE];
	uint64_t la = 0, want_la = 0;
	bool through_mem = (plan->how == RELOC_JMP_IND || plan->how == RELOC_CALL_IND) &&
			   d->ops[0].type == ZYDIS_OPERAND_TYPE_MEMORY;
	int rc;

	bool load = reloc_hit_load_addr(plan, o, &la);
	if (through_mem) {
		CHECK(ref_mem_addr(d, &d->ops[0], in->addr, o, &want_la), "no address for the pointer");
		CHECK(load && la == want_la, "load address %#" PRIx64 ", want %#" PRIx64, la, want_la);
	} else {
		CHECK(!load, "a load address for a %s plan", how_name(plan->how));
	}
	const uint64_t *loaded = through_mem && (in->mode & M_LOADED) ? &in->loaded : NULL;

	/* Refusals leave everything alone. */
	struct user_regs_struct away = *o;
	away.rip = in->addr + 1;
	u = away;
	memset(buf, FILL, sizeof(buf));
	rc = reloc_hit_prepare(plan, in->entry, buf, sizeof(buf), &u, loaded, &hit);
	CHECK(rc == -EINVAL && !regs_differ(&u, &away), "prepare away from the probe: %d", rc);
	for (size_t i = 0; i < sizeof(buf); i++)
		CHECK(buf[i] == FILL, "a refused prepare wrote the entry");
	if ((in->mode & M_SMALL_ENTRY) && need) {
		u = *o;
		rc = reloc_hit_prepare(plan, in->entry, buf, need - 1, &u, loaded, &hit);
		if (rc) {
			CHECK(rc == -ENOSPC, "prepare into %zu bytes: %d", need - 1, rc);
			CHECK(!regs_differ(&u, o), "a refused prepare changed %s", regs_differ(&u, o));
			for (size_t i = 0; i < sizeof(buf); i++)
				CHECK(buf[i] == FILL, "a refused prepare wrote the entry");
		} else {
			CHECK(hit.entry_len <= need - 1, "wrote %u bytes into %zu", hit.entry_len, need - 1);
		}
	}

	u = *o;
	memset(buf, FILL, sizeof(buf));
	rc = reloc_hit_prepare(plan, in->entry, buf, sizeof(buf), &u, loaded, &hit);
	CHECK(rc == 0, "prepare: %d", rc);
	CHECK(hit.entry_len <= need, "wrote %u bytes, promised %zu", hit.entry_len, need);
	for (size_t i = hit.entry_len; i < sizeof(buf); i++)
		CHECK(buf[i] == FILL, "wrote entry+%zu, beyond entry_len %u", i, hit.entry_len);
	if (!hit.entry_len) {
		bool rerun;
		check_emulated(in, plan, d, &u, loaded);
		u.rip = in->entry;
		CHECK(reloc_unwind(plan, in->entry, &hit, &u, &rerun) == -ENOENT,
		      "unwind of an emulated hit");
		return;
	}
	check_entry(in, plan, d, buf, &hit, &u, loaded, want_la);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in;
	struct reloc_plan plan;
	struct ref_insn d;
	char why[256], at[40], text[128];
	bool must_accept = false;

	parse(data, size, &in);
	cur = &in;
	int rc = reloc_plan_make(&plan, in.addr, in.code, in.avail, why, sizeof(why));
	if (!in.avail) {
		CHECK(rc == -EINVAL, "no bytes: %d", rc);
		return 0;
	}
	bool ok = ref_decode(&d, in.code, in.avail);
	unsigned want = ok ? expected_classes(&d, &must_accept) : 0;
	if (rc) {
		CHECK(rc == -ENOTSUP, "reloc_plan_make: %d", rc);
		snprintf(at, sizeof(at), " at 0x%" PRIx64 ": ", in.addr);
		CHECK(why[0] && !strchr(why, '\n') && strstr(why, at), "bad reason \"%s\"", why);
		CHECK(!must_accept, "refused (%s), but relocate.h promises %s", why,
		      how_name((unsigned)__builtin_ctz(want)));
		return 0;
	}
	CHECK(ok, "accepted bytes the decoder rejects");
	CHECK(plan.len == d.in.length && reloc_plan_len(&plan) == d.in.length,
	      "length %u, the decoder says %u", plan.len, d.in.length);
	CHECK(reloc_plan_how(&plan) == plan.how && (want & BIT(plan.how)),
	      "%s classified as %s, want %s", ZydisMnemonicGetString(d.in.mnemonic),
	      how_name(plan.how), want ? how_name((unsigned)__builtin_ctz(want)) : "a refusal");
	CHECK(reloc_plan_describe(&plan, text, sizeof(text))[0], "no description");
	size_t need = reloc_plan_entry_need(&plan);
	CHECK(need <= RELOC_ENTRY_MAX && reloc_plan_fits(&plan, ENTRY_SIZE, NULL, 0) == 0,
	      "needs %zu bytes of entry", need);
	check_hit(&in, &plan, &d, need);
	return 0;
}
