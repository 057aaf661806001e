/*
 * relocate: decoding, classification and the per-hit entry sequences. The only file that
 * includes Zydis.
 *
 * Entry layouts (offsets are instruction boundaries, where a stopped thread can be):
 *
 *   COPY      0: insn                 L: jmp [rip+0]; .quad addr+len
 *   COPY_END  0: insn (ret: never comes back)
 *   RIPREL    0: insn, based on R     L: movabs $saved, R    L+10: jmp [rip+0]; .quad addr+len
 *   CALL      0: push $lo32           5: mov dword [rsp+4], $hi32    13: jmp [rip+0]; .quad target
 *   RETRY     0: mov R, [mem]         L: movabs $saved, R    L+10: jmp [rip+0]; .quad addr
 *
 * The far jump is absolute because an entry may be more than 2 GiB from the code. None of
 * the added instructions touches the flags or memory below rsp: CALL writes exactly the
 * 8 bytes the call itself writes, and RETRY only reads.
 */
#include "relocate.h"

#include <Zydis/Zydis.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define REG_NONE 0xff
#define REG_RIP 16

enum layout { LAYOUT_NONE, LAYOUT_COPY, LAYOUT_COPY_END, LAYOUT_RIPREL, LAYOUT_CALL, LAYOUT_RETRY };

enum {
	MOVABS_LEN = 10,
	JMP_ABS_LEN = 14,
	CALL_PUSH_LEN = 5,                  /* push imm32 */
	CALL_JMP_OFF = CALL_PUSH_LEN + 8,  /* + mov dword [rsp+4], imm32 */
	CALL_LEN = CALL_JMP_OFF + JMP_ABS_LEN,
};

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
	ZydisDecoder dec;
	if (!ZYAN_SUCCESS(ZydisDecoderInit(&dec, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64)))
		return false;
	if (n > RELOC_INSN_MAX)
		n = RELOC_INSN_MAX;
	return ZYAN_SUCCESS(ZydisDecoderDecodeFull(&dec, code, n, &d->in, d->ops));
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
		/* Only 90 and 0f 1f are nops on every CPU: 0f 0d with a register operand, say,
		 * raises #UD on some. The others are copied, to do in the entry what they do. */
		if (!(in->opcode_map == ZYDIS_OPCODE_MAP_DEFAULT && in->opcode == 0x90) &&
		    !(in->opcode_map == ZYDIS_OPCODE_MAP_0F && in->opcode == 0x1f))
			break;
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

/* ---- hits -------------------------------------------------------------------------- */

static unsigned long long *reg_slot(struct user_regs_struct *r, unsigned n)
{
	switch (n) {
	case 0: return &r->rax;
	case 1: return &r->rcx;
	case 2: return &r->rdx;
	case 3: return &r->rbx;
	case 4: return &r->rsp;
	case 5: return &r->rbp;
	case 6: return &r->rsi;
	case 7: return &r->rdi;
	case 8: return &r->r8;
	case 9: return &r->r9;
	case 10: return &r->r10;
	case 11: return &r->r11;
	case 12: return &r->r12;
	case 13: return &r->r13;
	case 14: return &r->r14;
	default: return &r->r15;
	}
}

static uint64_t reg_get(const struct user_regs_struct *r, unsigned n)
{
	return *reg_slot((struct user_regs_struct *)r, n);
}

enum { CF = 1u << 0, PF = 1u << 2, ZF = 1u << 6, SF = 1u << 7, OF = 1u << 11 };

/* Condition cc of jcc/setcc/cmovcc: pairs of (c, !c). */
static bool cond_holds(unsigned cc, uint64_t fl)
{
	bool cf = fl & CF, pf = fl & PF, zf = fl & ZF, sf = fl & SF, of = fl & OF;
	bool c;
	switch (cc >> 1) {
	case 0: c = of; break;
	case 1: c = cf; break;
	case 2: c = zf; break;
	case 3: c = cf || zf; break;
	case 4: c = sf; break;
	case 5: c = pf; break;
	case 6: c = sf != of; break;
	default: c = zf || sf != of; break;
	}
	return c != (cc & 1);
}

bool reloc_hit_load_addr(const struct reloc_plan *plan, const struct user_regs_struct *regs,
			 uint64_t *addr)
{
	if ((plan->how != RELOC_JMP_IND && plan->how != RELOC_CALL_IND) || plan->reg != REG_NONE)
		return false;
	uint64_t a = (uint64_t)plan->disp;
	if (plan->base == REG_RIP)
		a += plan->addr + plan->len;
	else if (plan->base != REG_NONE)
		a += reg_get(regs, plan->base);
	if (plan->index != REG_NONE)
		a += reg_get(regs, plan->index) * plan->scale;
	if (plan->seg == 'f')
		a += regs->fs_base;
	else if (plan->seg == 'g')
		a += regs->gs_base;
	*addr = a;
	return true;
}

struct emit {
	uint8_t b[RELOC_ENTRY_MAX];
	size_t n;
};

static void put(struct emit *e, const void *p, size_t n)
{
	memcpy(e->b + e->n, p, n);
	e->n += n;
}

static void put_u32(struct emit *e, uint32_t v) { put(e, &v, 4); } /* x86: little-endian */
static void put_u64(struct emit *e, uint64_t v) { put(e, &v, 8); }

static void put_jmp_abs(struct emit *e, uint64_t target)
{
	static const uint8_t jmp[] = { 0xff, 0x25, 0, 0, 0, 0 }; /* jmp [rip+0] */
	put(e, jmp, sizeof(jmp));
	put_u64(e, target);
}

static void put_movabs(struct emit *e, unsigned reg, uint64_t v)
{
	uint8_t op[2] = { (uint8_t)(0x48 | (reg >> 3)), (uint8_t)(0xb8 | (reg & 7)) };
	put(e, op, 2);
	put_u64(e, v);
}

/* The call's push, made of what writes exactly its 8 bytes: push imm32 (sign-extended),
 * then the high half over it. */
static void put_call(struct emit *e, struct reloc_hit *h, uint64_t ret, uint64_t target)
{
	static const uint8_t mov_hi[] = { 0xc7, 0x44, 0x24, 0x04 }; /* mov dword [rsp+4], imm32 */
	uint8_t push = 0x68;
	put(e, &push, 1);
	put_u32(e, (uint32_t)ret);
	put(e, mov_hi, sizeof(mov_hi));
	put_u32(e, (uint32_t)(ret >> 32));
	put_jmp_abs(e, target);
	h->layout = LAYOUT_CALL;
	h->head_len = CALL_PUSH_LEN;
	h->resume = target;
}

int reloc_hit_prepare(const struct reloc_plan *plan, uint64_t entry_addr, void *entry,
		      size_t entry_size, struct user_regs_struct *regs, const uint64_t *loaded,
		      struct reloc_hit *hit)
{
	if (!plan || !regs || !hit || regs->rip != plan->addr || !plan->len)
		return -EINVAL;

	struct user_regs_struct r = *regs;
	struct reloc_hit h = { .layout = LAYOUT_NONE };
	struct emit e = { .n = 0 };
	uint64_t next = plan->addr + plan->len;
	uint64_t call_target = plan->target;
	bool through_mem = plan->reg == REG_NONE;

	switch ((enum reloc_how)plan->how) {
	case RELOC_NOP:
		r.rip = next;
		break;
	case RELOC_JMP:
		r.rip = plan->target;
		break;
	case RELOC_JCC:
		r.rip = cond_holds(plan->cond, r.eflags) ? plan->target : next;
		break;
	case RELOC_JRCXZ: {
		uint64_t count = plan->cond ? (uint32_t)r.rcx : r.rcx;
		r.rip = count == 0 ? plan->target : next;
		break;
	}
	case RELOC_LOOP: {
		bool zf = r.eflags & ZF;
		r.rcx -= 1; /* flags untouched */
		bool take = r.rcx != 0 && (plan->cond == 0 || (plan->cond == 1) == zf);
		r.rip = take ? plan->target : next;
		break;
	}
	case RELOC_COPY:
		put(&e, plan->orig, plan->len);
		put_jmp_abs(&e, next);
		h.layout = LAYOUT_COPY;
		h.head_len = plan->len;
		h.resume = next;
		break;
	case RELOC_COPY_END:
		put(&e, plan->orig, plan->len);
		h.layout = LAYOUT_COPY_END;
		h.head_len = plan->len;
		break;
	case RELOC_RIPREL:
		h.saved = reg_get(&r, plan->scratch);
		put(&e, plan->code, plan->code_len);
		put_movabs(&e, plan->scratch, h.saved);
		put_jmp_abs(&e, next);
		*reg_slot(&r, plan->scratch) = next; /* scratch + disp = the original target */
		h.layout = LAYOUT_RIPREL;
		h.head_len = plan->code_len;
		h.resume = next;
		break;
	case RELOC_JMP_IND:
	case RELOC_CALL_IND:
		if (!through_mem) {
			call_target = reg_get(&r, plan->reg);
		} else if (loaded) {
			call_target = *loaded;
		} else {
			/* The tracer could not read the pointer: let the thread read it. */
			h.saved = reg_get(&r, plan->scratch);
			put(&e, plan->code, plan->code_len);
			put_movabs(&e, plan->scratch, h.saved);
			put_jmp_abs(&e, plan->addr);
			if (plan->base == REG_RIP)
				*reg_slot(&r, plan->scratch) = next;
			h.layout = LAYOUT_RETRY;
			h.head_len = plan->code_len;
			h.resume = plan->addr;
			break;
		}
		if (plan->how == RELOC_JMP_IND)
			r.rip = call_target;
		else
			put_call(&e, &h, next, call_target);
		break;
	case RELOC_CALL:
		put_call(&e, &h, next, call_target);
		break;
	default:
		return -EINVAL;
	}

	if (e.n) {
		if (e.n > entry_size)
			return -ENOSPC;
		if (!entry)
			return -EINVAL;
		memcpy(entry, e.b, e.n);
		r.rip = entry_addr;
	}
	h.entry_len = (uint8_t)e.n;
	*regs = r;
	*hit = h;
	return 0;
}

bool reloc_hit_returns_to_probe(const struct reloc_hit *hit)
{
	return hit->layout == LAYOUT_RETRY;
}

int reloc_unwind(const struct reloc_plan *plan, uint64_t entry_addr, const struct reloc_hit *hit,
		 struct user_regs_struct *regs, bool *rerun)
{
	if (!plan || !hit || !regs || !rerun)
		return -EINVAL;
	if (!hit->entry_len || regs->rip < entry_addr || regs->rip - entry_addr >= hit->entry_len)
		return -ENOENT;

	uint64_t off = regs->rip - entry_addr;
	uint64_t L = hit->head_len;
	bool before, scratch = false;

	switch ((enum layout)hit->layout) {
	case LAYOUT_COPY:
	case LAYOUT_COPY_END:
		if (off != 0 && (hit->layout == LAYOUT_COPY_END || off != L))
			return -EINVAL;
		before = off == 0;
		break;
	case LAYOUT_RIPREL:
		if (off != 0 && off != L && off != L + MOVABS_LEN)
			return -EINVAL;
		before = off == 0;
		scratch = true;
		break;
	case LAYOUT_RETRY:
		/* Only a load has run: always back to the probe, which reads again. */
		if (off != 0 && off != L && off != L + MOVABS_LEN)
			return -EINVAL;
		before = true;
		scratch = true;
		break;
	case LAYOUT_CALL:
		if (off != 0 && off != CALL_PUSH_LEN && off != CALL_JMP_OFF)
			return -EINVAL;
		/* Half a push is undone; the slot it wrote is the one the call writes anyway. */
		if (off == CALL_PUSH_LEN)
			regs->rsp += 8;
		before = off != CALL_JMP_OFF;
		break;
	default:
		return -EINVAL;
	}
	if (scratch)
		*reg_slot(regs, plan->scratch) = hit->saved;
	regs->rip = before ? plan->addr : hit->resume;
	*rerun = before;
	return 0;
}
