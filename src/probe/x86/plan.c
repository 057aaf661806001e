/*
 * plan: the relocator's planning half — decoding and classifying the instruction under a
 * probe, once, at placement (reloc_plan_*). With jump.c and scan.c, the only files of ptss
 * that decode (through decode.h); the hit half (entry.c) works from the plan alone. Entry
 * layouts: layout.h.
 */
#include "decode.h"
#include "layout.h"
#include "relocate.h"

#include <Zydis/Zydis.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
/* Scratch candidates: the registers a ModRM base reaches without REX.B (rsp needs a SIB),
 * so a rebased instruction keeps its length and layout. */
static const uint8_t scratch_order[] = { 0, 1, 2, 3, 5, 6, 7 };

/* ---- decoding ---------------------------------------------------------------------- */

struct insn {
	ZydisDecodedInstruction in;
	ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
};

static bool decode(struct insn *d, const uint8_t *code, size_t n)
{
	return x86_decode(&d->in, d->ops, code, n);
}

static void format(const struct insn *d, uint64_t addr, char *buf, size_t len)
{
	ZydisFormatter f;
	if (!len)
		return;
	buf[0] = '\0';
	if (!ZYAN_SUCCESS(ZydisFormatterInit(&f, ZYDIS_FORMATTER_STYLE_INTEL)))
		return;
	ZydisFormatterSetProperty(&f, ZYDIS_FORMATTER_PROP_FORCE_RELATIVE_RIPREL, ZYAN_TRUE);
	ZydisFormatterSetProperty(&f, ZYDIS_FORMATTER_PROP_HEX_UPPERCASE, ZYAN_FALSE);
	ZydisFormatterSetProperty(&f, ZYDIS_FORMATTER_PROP_ADDR_PADDING_ABSOLUTE, ZYDIS_PADDING_DISABLED);
	ZydisFormatterSetProperty(&f, ZYDIS_FORMATTER_PROP_DISP_PADDING, ZYDIS_PADDING_DISABLED);
	ZydisFormatterSetProperty(&f, ZYDIS_FORMATTER_PROP_IMM_PADDING, ZYDIS_PADDING_DISABLED);
	if (!ZYAN_SUCCESS(ZydisFormatterFormatInstruction(&f, &d->in, d->ops,
							  d->in.operand_count_visible, buf, len, addr,
							  NULL)))
		buf[0] = '\0';
}

/* 0..15 for a general-purpose register of any width (ah counts as rax), else REG_NONE. */
static uint8_t gpr_number(ZydisRegister r)
{
	switch (ZydisRegisterGetClass(r)) {
	case ZYDIS_REGCLASS_GPR8:
	case ZYDIS_REGCLASS_GPR16:
	case ZYDIS_REGCLASS_GPR32:
	case ZYDIS_REGCLASS_GPR64:
		return (uint8_t)ZydisRegisterGetId(
			ZydisRegisterGetLargestEnclosing(ZYDIS_MACHINE_MODE_LONG_64, r));
	default:
		return REG_NONE;
	}
}

static bool is_ip(ZydisRegister r)
{
	return r == ZYDIS_REGISTER_RIP || r == ZYDIS_REGISTER_EIP || r == ZYDIS_REGISTER_IP;
}

/* Bit n set when general-purpose register n is an operand, explicit or implicit. */
static unsigned gprs_used(const struct insn *d)
{
	unsigned used = 0;
	for (unsigned i = 0; i < d->in.operand_count; i++) {
		const ZydisDecodedOperand *op = &d->ops[i];
		uint8_t n[2] = { REG_NONE, REG_NONE };
		if (op->type == ZYDIS_OPERAND_TYPE_REGISTER) {
			n[0] = gpr_number(op->reg.value);
		} else if (op->type == ZYDIS_OPERAND_TYPE_MEMORY) {
			n[0] = gpr_number(op->mem.base);
			n[1] = gpr_number(op->mem.index);
		}
		for (int k = 0; k < 2; k++)
			if (n[k] != REG_NONE)
				used |= 1u << n[k];
	}
	return used;
}

static uint8_t pick_scratch(unsigned used)
{
	for (size_t i = 0; i < sizeof(scratch_order); i++)
		if (!(used & (1u << scratch_order[i])))
			return scratch_order[i];
	return REG_NONE;
}

/* The only memory operand based on rip or eip, or NULL. */
static const ZydisDecodedOperand *ip_relative_operand(const struct insn *d)
{
	for (unsigned i = 0; i < d->in.operand_count; i++)
		if (d->ops[i].type == ZYDIS_OPERAND_TYPE_MEMORY && is_ip(d->ops[i].mem.base))
			return &d->ops[i];
	return NULL;
}

/* ---- refusals ---------------------------------------------------------------------- */

__attribute__((format(printf, 5, 6)))
static int refuse(char *why, size_t why_len, const char *text, uint64_t addr, const char *fmt, ...)
{
	if (why && why_len) {
		int n = snprintf(why, why_len, "%s at 0x%" PRIx64 ": ", text, addr);
		if (n >= 0 && (size_t)n < why_len) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(why + n, why_len - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return -ENOTSUP;
}

/* ---- classification ---------------------------------------------------------------- */

static bool is_jcc(ZydisMnemonic m)
{
	switch (m) {
	case ZYDIS_MNEMONIC_JO: case ZYDIS_MNEMONIC_JNO: case ZYDIS_MNEMONIC_JB:
	case ZYDIS_MNEMONIC_JNB: case ZYDIS_MNEMONIC_JZ: case ZYDIS_MNEMONIC_JNZ:
	case ZYDIS_MNEMONIC_JBE: case ZYDIS_MNEMONIC_JNBE: case ZYDIS_MNEMONIC_JS:
	case ZYDIS_MNEMONIC_JNS: case ZYDIS_MNEMONIC_JP: case ZYDIS_MNEMONIC_JNP:
	case ZYDIS_MNEMONIC_JL: case ZYDIS_MNEMONIC_JNL: case ZYDIS_MNEMONIC_JLE:
	case ZYDIS_MNEMONIC_JNLE:
		return true;
	default:
		return false;
	}
}

/* 66 on a near branch: Intel ignores it, AMD makes it 16-bit (a rel16, a 16-bit target).
 * REX.W overrides it, as in the padded `data16 data16 rex.W call`. */
static bool operand_size_ok(const ZydisDecodedInstruction *in)
{
	return !(in->attributes & ZYDIS_ATTRIB_HAS_OPERANDSIZE) ||
	       ((in->attributes & ZYDIS_ATTRIB_HAS_REX) && in->raw.rex.W);
}

static int plan_relative(struct reloc_plan *plan, const struct insn *d, const char *text,
			 char *why, size_t why_len)
{
	const ZydisDecodedInstruction *in = &d->in;
	ZyanU64 target;

	if (!operand_size_ok(in))
		return refuse(why, why_len, text, plan->addr,
			      "operand-size prefix on a branch (CPU-dependent)");
	if (d->ops[0].type != ZYDIS_OPERAND_TYPE_IMMEDIATE || !d->ops[0].imm.is_relative ||
	    !ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(in, &d->ops[0], plan->addr, &target)))
		return refuse(why, why_len, text, plan->addr, "unsupported relative operand");
	plan->target = target;

	if (in->mnemonic == ZYDIS_MNEMONIC_JMP) {
		plan->how = RELOC_JMP;
	} else if (in->mnemonic == ZYDIS_MNEMONIC_CALL) {
		plan->how = RELOC_CALL;
	} else if (is_jcc(in->mnemonic)) {
		plan->how = RELOC_JCC;
		plan->cond = in->opcode & 0xf; /* 70+cc and 0f 80+cc */
	} else if (in->mnemonic == ZYDIS_MNEMONIC_JRCXZ || in->mnemonic == ZYDIS_MNEMONIC_JECXZ) {
		plan->how = RELOC_JRCXZ;
		plan->cond = in->mnemonic == ZYDIS_MNEMONIC_JECXZ;
	} else if (in->mnemonic == ZYDIS_MNEMONIC_LOOP || in->mnemonic == ZYDIS_MNEMONIC_LOOPE ||
		   in->mnemonic == ZYDIS_MNEMONIC_LOOPNE) {
		/* With 67 the count is ecx; whether the upper half of rcx survives is not
		 * something to guess. */
		if (in->address_width != 64)
			return refuse(why, why_len, text, plan->addr,
				      "loop with a 32-bit count is not supported");
		/* An f2/f3 prefix turns loope into loopne (and back) on some CPUs only. */
		for (ZyanU8 i = 0; i < in->raw.prefix_count; i++)
			if (in->raw.prefixes[i].value == 0xf2 || in->raw.prefixes[i].value == 0xf3)
				return refuse(why, why_len, text, plan->addr,
					      "rep prefix on a loop (CPU-dependent)");
		plan->how = RELOC_LOOP;
		plan->cond = in->mnemonic == ZYDIS_MNEMONIC_LOOP ? 0 :
			     in->mnemonic == ZYDIS_MNEMONIC_LOOPE ? 1 : 2;
	} else {
		return refuse(why, why_len, text, plan->addr,
			      "relative operand that cannot run out of line");
	}
	return 0;
}

/*
 * `mov R, [mem]` with the memory operand of `jmp/call [mem]` (ff /4, ff /2): the retry
 * path's load. R is neither base nor index; a rip base becomes R, as in RIPREL.
 */
static void build_load(struct reloc_plan *plan, const struct insn *d)
{
	const ZydisDecodedInstruction *in = &d->in;
	const uint8_t *o = plan->orig;
	uint8_t *c = plan->code;
	size_t n = 0;
	uint8_t r = plan->scratch;
	bool rip = plan->base == REG_RIP;

	if (plan->seg)
		c[n++] = plan->seg == 'f' ? 0x64 : 0x65;
	/* REX.W; X and B still extend index and base, except on rip where they mean nothing. */
	c[n++] = (uint8_t)(0x48 | (!rip && (in->attributes & ZYDIS_ATTRIB_HAS_REX) ?
				   (in->raw.rex.X << 1) | in->raw.rex.B : 0));
	c[n++] = 0x8b;
	if (rip)
		c[n++] = (uint8_t)(0x80 | (r << 3) | r);
	else
		c[n++] = (uint8_t)((o[in->raw.modrm.offset] & 0xc7) | (r << 3));
	/* SIB and displacement follow ModRM up to the end: ff /2 and /4 take no immediate. */
	for (size_t i = in->raw.modrm.offset + 1u; i < in->length; i++)
		c[n++] = o[i];
	plan->code_len = (uint8_t)n;
}

static bool same_operand(const ZydisDecodedOperand *a, const ZydisDecodedOperand *b)
{
	if (a->type != b->type || a->actions != b->actions || a->size != b->size ||
	    a->visibility != b->visibility)
		return false;
	switch (a->type) {
	case ZYDIS_OPERAND_TYPE_REGISTER:
		return a->reg.value == b->reg.value;
	case ZYDIS_OPERAND_TYPE_MEMORY:
		return a->mem.type == b->mem.type && a->mem.segment == b->mem.segment &&
		       a->mem.base == b->mem.base && a->mem.index == b->mem.index &&
		       a->mem.scale == b->mem.scale && a->mem.disp.value == b->mem.disp.value;
	case ZYDIS_OPERAND_TYPE_IMMEDIATE:
		return a->imm.value.u == b->imm.value.u && a->imm.is_relative == b->imm.is_relative;
	default:
		return memcmp(&a->ptr, &b->ptr, sizeof(a->ptr)) == 0;
	}
}

/*
 * The rebased instruction must decode to the original with only the rip base replaced by
 * R: checked by decoding it, rather than trusted to the bit surgery.
 */
static bool rebase_ok(const struct insn *orig, const uint8_t *code, size_t len, uint8_t r)
{
	struct insn d;
	if (!decode(&d, code, len) || d.in.length != orig->in.length ||
	    d.in.mnemonic != orig->in.mnemonic || d.in.operand_count != orig->in.operand_count)
		return false;
	for (unsigned i = 0; i < d.in.operand_count; i++) {
		ZydisDecodedOperand want = orig->ops[i];
		if (want.type == ZYDIS_OPERAND_TYPE_MEMORY && want.mem.base == ZYDIS_REGISTER_RIP) {
			want.mem.base = (ZydisRegister)(ZYDIS_REGISTER_RAX + r);
			/* An rbp base defaults to ss, which is as flat as ds in 64-bit mode. */
			if (r == 5 && want.mem.segment == ZYDIS_REGISTER_DS)
				want.mem.segment = ZYDIS_REGISTER_SS;
		}
		if (!same_operand(&want, &d.ops[i]))
			return false;
	}
	return true;
}

static int plan_riprel(struct reloc_plan *plan, const struct insn *d,
		       const ZydisDecodedOperand *mem, const char *text, char *why, size_t why_len)
{
	const ZydisDecodedInstruction *in = &d->in;
	uint8_t *c = plan->code;

	if (mem->mem.base != ZYDIS_REGISTER_RIP)
		return refuse(why, why_len, text, plan->addr, "eip-relative operand is not supported");
	if (mem->mem.type != ZYDIS_MEMOP_TYPE_MEM && mem->mem.type != ZYDIS_MEMOP_TYPE_AGEN)
		return refuse(why, why_len, text, plan->addr, "unsupported rip-relative operand");
	if (!(in->attributes & ZYDIS_ATTRIB_HAS_MODRM) || (in->attributes & ZYDIS_ATTRIB_HAS_SIB) ||
	    in->raw.modrm.mod != 0 || in->raw.modrm.rm != 5 || in->raw.disp.size != 32 ||
	    (in->attributes & ZYDIS_ATTRIB_HAS_MVEX))
		return refuse(why, why_len, text, plan->addr, "unexpected rip-relative encoding");
	plan->scratch = pick_scratch(gprs_used(d));
	if (plan->scratch == REG_NONE)
		return refuse(why, why_len, text, plan->addr, "no free scratch register");

	/* mod 00 rm 101 ([rip+disp32]) becomes mod 10 rm R ([R+disp32]): same length, same
	 * displacement. R < 8, so the B bit that the rip form ignored must now say 0. */
	memcpy(c, plan->orig, plan->len);
	c[in->raw.modrm.offset] = (uint8_t)(0x80 | (c[in->raw.modrm.offset] & 0x38) | plan->scratch);
	if (in->attributes & ZYDIS_ATTRIB_HAS_REX)
		c[in->raw.rex.offset] &= (uint8_t)~0x01;
	else if ((in->attributes & ZYDIS_ATTRIB_HAS_VEX) && in->raw.vex.size == 3)
		c[in->raw.vex.offset + 1] |= 0x20; /* inverted: ~B = 1 */
	else if (in->attributes & ZYDIS_ATTRIB_HAS_XOP)
		c[in->raw.xop.offset + 1] |= 0x20;
	else if (in->attributes & ZYDIS_ATTRIB_HAS_EVEX)
		c[in->raw.evex.offset + 1] |= 0x20;
	plan->code_len = plan->len;
	if (!rebase_ok(d, c, plan->len, plan->scratch))
		return refuse(why, why_len, text, plan->addr, "cannot rebase its rip-relative operand");
	plan->how = RELOC_RIPREL;
	return 0;
}

static int plan_indirect(struct reloc_plan *plan, const struct insn *d, const char *text,
			 char *why, size_t why_len)
{
	const ZydisDecodedOperand *op = &d->ops[0];

	plan->how = d->in.mnemonic == ZYDIS_MNEMONIC_CALL ? RELOC_CALL_IND : RELOC_JMP_IND;
	if (!operand_size_ok(&d->in))
		return refuse(why, why_len, text, plan->addr,
			      "operand-size prefix on a branch (CPU-dependent)");
	if (op->size != 64)
		return refuse(why, why_len, text, plan->addr, "indirect branch to a %u-bit target",
			      op->size);
	if (op->type == ZYDIS_OPERAND_TYPE_REGISTER) {
		plan->reg = gpr_number(op->reg.value);
		return plan->reg == REG_NONE ? refuse(why, why_len, text, plan->addr,
						      "unexpected branch register") : 0;
	}
	if (op->type != ZYDIS_OPERAND_TYPE_MEMORY || op->mem.type != ZYDIS_MEMOP_TYPE_MEM)
		return refuse(why, why_len, text, plan->addr, "unexpected branch operand");
	if (d->in.address_width != 64 || op->mem.base == ZYDIS_REGISTER_EIP)
		return refuse(why, why_len, text, plan->addr, "32-bit addressing is not supported");

	plan->base = op->mem.base == ZYDIS_REGISTER_RIP ? REG_RIP : gpr_number(op->mem.base);
	plan->index = gpr_number(op->mem.index);
	plan->scale = op->mem.scale ? op->mem.scale : 1;
	plan->disp = op->mem.disp.value;
	plan->seg = op->mem.segment == ZYDIS_REGISTER_FS ? 'f' :
		    op->mem.segment == ZYDIS_REGISTER_GS ? 'g' : 0;
	if ((op->mem.base != ZYDIS_REGISTER_NONE && plan->base == REG_NONE) ||
	    (op->mem.index != ZYDIS_REGISTER_NONE && plan->index == REG_NONE))
		return refuse(why, why_len, text, plan->addr, "unexpected address registers");

	unsigned used = 0;
	if (plan->base < 16)
		used |= 1u << plan->base;
	if (plan->index < 16)
		used |= 1u << plan->index;
	plan->scratch = pick_scratch(used);
	build_load(plan, d);

	/* Check the load as the rebased instructions are checked. */
	struct insn l;
	ZydisRegister want_base = plan->base == REG_RIP ?
		(ZydisRegister)(ZYDIS_REGISTER_RAX + plan->scratch) : op->mem.base;
	if (!decode(&l, plan->code, plan->code_len) || l.in.length != plan->code_len ||
	    l.in.mnemonic != ZYDIS_MNEMONIC_MOV ||
	    l.ops[0].type != ZYDIS_OPERAND_TYPE_REGISTER ||
	    l.ops[0].reg.value != (ZydisRegister)(ZYDIS_REGISTER_RAX + plan->scratch) ||
	    l.ops[1].type != ZYDIS_OPERAND_TYPE_MEMORY || l.ops[1].mem.base != want_base ||
	    l.ops[1].mem.index != op->mem.index || l.ops[1].mem.disp.value != op->mem.disp.value ||
	    l.ops[1].mem.segment != op->mem.segment || l.ops[1].size != 64)
		return refuse(why, why_len, text, plan->addr, "cannot rebuild its memory operand");
	return 0;
}

int reloc_plan_make(struct reloc_plan *plan, uint64_t addr, const uint8_t *code, size_t avail,
		    char *why, size_t why_len)
{
	struct insn d;
	char text[96];

	if (!plan || !code || !avail)
		return -EINVAL;
	if (why && why_len)
		why[0] = '\0';
	memset(plan, 0, sizeof(*plan));
	plan->addr = addr;
	plan->scratch = plan->reg = plan->base = plan->index = REG_NONE;

	if (!decode(&d, code, avail)) {
		char bytes[3 * RELOC_INSN_MAX + 1] = "";
		size_t n = avail < RELOC_INSN_MAX ? avail : RELOC_INSN_MAX, pos = 0;
		for (size_t i = 0; i < n; i++)
			pos += (size_t)snprintf(bytes + pos, sizeof(bytes) - pos, "%s%02x",
						i ? " " : "", code[i]);
		return refuse(why, why_len, "undecodable instruction", addr, "bytes %s%s", bytes,
			      avail < RELOC_INSN_MAX ? " (truncated?)" : "");
	}
	const ZydisDecodedInstruction *in = &d.in;
	plan->len = in->length;
	memcpy(plan->orig, code, in->length);
	format(&d, addr, text, sizeof(text));

	switch (in->mnemonic) {
	case ZYDIS_MNEMONIC_SYSCALL:
	case ZYDIS_MNEMONIC_SYSENTER:
	case ZYDIS_MNEMONIC_SYSEXIT:
	case ZYDIS_MNEMONIC_SYSRET:
		/* rcx would get the entry's address, and a clone child or a restarted call
		 * would come back into an entry that is not its own. */
		return refuse(why, why_len, text, addr, "cannot run out of line");
	case ZYDIS_MNEMONIC_INT3:
		return refuse(why, why_len, text, addr, "a breakpoint is already there");
	case ZYDIS_MNEMONIC_INT:
	case ZYDIS_MNEMONIC_INT1:
	case ZYDIS_MNEMONIC_INTO:
		return refuse(why, why_len, text, addr, "cannot run out of line");
	case ZYDIS_MNEMONIC_NOP:
		/* 90, 0f 1f and the memory forms of the hint nops are nops on every CPU; a
		 * register form may not be (0f 0d with a register operand raises #UD on some):
		 * it is copied verbatim, to do in the entry what it does. */
		if (!(in->opcode_map == ZYDIS_OPCODE_MAP_DEFAULT && in->opcode == 0x90) &&
		    !(in->opcode_map == ZYDIS_OPCODE_MAP_0F && in->opcode == 0x1f) &&
		    in->raw.modrm.mod == 3) {
			plan->how = RELOC_COPY;
			return 0;
		}
		/* fall through */
	case ZYDIS_MNEMONIC_ENDBR64:
	case ZYDIS_MNEMONIC_ENDBR32:
		/* No effect but rip, even with a memory operand (never accessed). */
		plan->how = RELOC_NOP;
		return 0;
	case ZYDIS_MNEMONIC_RET:
	case ZYDIS_MNEMONIC_IRET:
	case ZYDIS_MNEMONIC_IRETD:
	case ZYDIS_MNEMONIC_IRETQ:
		/* Position independent and never comes back: copied with no jump after it. */
		plan->how = RELOC_COPY_END;
		return 0;
	default:
		break;
	}
	if (in->meta.branch_type == ZYDIS_BRANCH_TYPE_FAR)
		return refuse(why, why_len, text, addr, "far branches are not supported");
	/* ZYDIS_ATTRIB_IS_RELATIVE also covers rip-relative memory: look at the immediates. */
	for (unsigned i = 0; i < in->operand_count; i++)
		if (d.ops[i].type == ZYDIS_OPERAND_TYPE_IMMEDIATE && d.ops[i].imm.is_relative)
			return plan_relative(plan, &d, text, why, why_len);
	if (in->mnemonic == ZYDIS_MNEMONIC_JMP || in->mnemonic == ZYDIS_MNEMONIC_CALL)
		return plan_indirect(plan, &d, text, why, why_len);

	/* Anything else that names the instruction pointer other than as a memory base
	 * would see the entry's address. */
	for (unsigned i = 0; i < in->operand_count; i++)
		if (d.ops[i].type == ZYDIS_OPERAND_TYPE_REGISTER && is_ip(d.ops[i].reg.value))
			return refuse(why, why_len, text, addr,
				      "uses the instruction pointer in a way that is not supported");
	const ZydisDecodedOperand *mem = ip_relative_operand(&d);
	if (mem)
		return plan_riprel(plan, &d, mem, text, why, why_len);
	plan->how = RELOC_COPY;
	return 0;
}

size_t reloc_plan_len(const struct reloc_plan *plan)
{
	return plan->len;
}

enum reloc_how reloc_plan_how(const struct reloc_plan *plan)
{
	return (enum reloc_how)plan->how;
}

const char *reloc_plan_describe(const struct reloc_plan *plan, char *buf, size_t len)
{
	struct insn d;
	if (!len)
		return buf;
	buf[0] = '\0';
	if (plan->len && decode(&d, plan->orig, plan->len))
		format(&d, plan->addr, buf, len);
	return buf;
}

size_t reloc_plan_entry_need(const struct reloc_plan *plan)
{
	bool through_mem = plan->reg == REG_NONE;
	size_t retry = (size_t)plan->code_len + MOVABS_LEN + JMP_ABS_LEN;

	switch ((enum reloc_how)plan->how) {
	case RELOC_COPY:
		return plan->len + (size_t)JMP_ABS_LEN;
	case RELOC_COPY_END:
		return plan->len;
	case RELOC_RIPREL:
		return plan->len + (size_t)MOVABS_LEN + JMP_ABS_LEN;
	case RELOC_CALL:
		return CALL_LEN;
	case RELOC_JMP_IND:
		return through_mem ? retry : 0;
	case RELOC_CALL_IND:
		return through_mem && retry > CALL_LEN ? retry : CALL_LEN;
	default:
		return 0;
	}
}

int reloc_plan_fits(const struct reloc_plan *plan, size_t entry_size, char *why, size_t why_len)
{
	size_t need = reloc_plan_entry_need(plan);
	char text[96];

	if (need <= entry_size)
		return 0;
	reloc_plan_describe(plan, text, sizeof(text));
	refuse(why, why_len, text, plan->addr, "needs %zu bytes of entry, entries have %zu", need,
	       entry_size);
	return -ENOSPC;
}
