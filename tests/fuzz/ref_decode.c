/*
 * ref_decode: see ref_decode.h. Everything here is written from the architecture manual's
 * point of view, not from the relocator's (src/probe/x86): register ranges spelled out, conditions by name.
 */
#include "ref_decode.h"

#include <string.h>

bool ref_decode(struct ref_insn *d, const uint8_t *code, size_t n)
{
	ZydisDecoder dec;
	if (!ZYAN_SUCCESS(ZydisDecoderInit(&dec, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64)))
		return false;
	return ZYAN_SUCCESS(ZydisDecoderDecodeFull(&dec, code, n < 15 ? n : 15, &d->in, d->ops));
}

int ref_gpr(ZydisRegister r)
{
	if (r >= ZYDIS_REGISTER_RAX && r <= ZYDIS_REGISTER_R15)
		return (int)(r - ZYDIS_REGISTER_RAX);
	if (r >= ZYDIS_REGISTER_EAX && r <= ZYDIS_REGISTER_R15D)
		return (int)(r - ZYDIS_REGISTER_EAX);
	if (r >= ZYDIS_REGISTER_AX && r <= ZYDIS_REGISTER_R15W)
		return (int)(r - ZYDIS_REGISTER_AX);
	if (r >= ZYDIS_REGISTER_AL && r <= ZYDIS_REGISTER_BL)
		return (int)(r - ZYDIS_REGISTER_AL);
	if (r >= ZYDIS_REGISTER_AH && r <= ZYDIS_REGISTER_BH)
		return (int)(r - ZYDIS_REGISTER_AH);
	if (r >= ZYDIS_REGISTER_SPL && r <= ZYDIS_REGISTER_R15B)
		return 4 + (int)(r - ZYDIS_REGISTER_SPL);
	return -1;
}

unsigned long long *ref_reg(struct user_regs_struct *u, int n)
{
	unsigned long long *f[16] = { &u->rax, &u->rcx, &u->rdx, &u->rbx, &u->rsp, &u->rbp,
				      &u->rsi, &u->rdi, &u->r8,  &u->r9,  &u->r10, &u->r11,
				      &u->r12, &u->r13, &u->r14, &u->r15 };
	return f[n & 15];
}

uint64_t ref_reg_get(const struct user_regs_struct *u, int n)
{
	return *ref_reg((struct user_regs_struct *)u, n);
}

bool ref_mem_addr(const struct ref_insn *d, const ZydisDecodedOperand *op, uint64_t at,
		  const struct user_regs_struct *u, uint64_t *ea)
{
	static ZydisRegisterContext ctx; /* 2 KiB: not on the fuzzer's stack */
	ZyanU64 a;

	memset(&ctx, 0, sizeof(ctx));
	for (int n = 0; n < 16; n++) {
		uint64_t v = ref_reg_get(u, n);
		ctx.values[ZYDIS_REGISTER_RAX + n] = v;
		ctx.values[ZYDIS_REGISTER_EAX + n] = (uint32_t)v;
		ctx.values[ZYDIS_REGISTER_AX + n] = (uint16_t)v;
	}
	if (op->type != ZYDIS_OPERAND_TYPE_MEMORY ||
	    !ZYAN_SUCCESS(ZydisCalcAbsoluteAddressEx(&d->in, op, at, &ctx, &a)))
		return false;
	if (op->mem.segment == ZYDIS_REGISTER_FS)
		a += u->fs_base;
	else if (op->mem.segment == ZYDIS_REGISTER_GS)
		a += u->gs_base;
	*ea = a;
	return true;
}

bool ref_jcc_taken(ZydisMnemonic m, uint64_t fl, bool *is_jcc)
{
	bool cf = fl & 0x1, pf = fl & 0x4, zf = fl & 0x40, sf = fl & 0x80, of = fl & 0x800;
	*is_jcc = true;
	switch (m) {
	case ZYDIS_MNEMONIC_JO: return of;
	case ZYDIS_MNEMONIC_JNO: return !of;
	case ZYDIS_MNEMONIC_JB: return cf;
	case ZYDIS_MNEMONIC_JNB: return !cf;
	case ZYDIS_MNEMONIC_JZ: return zf;
	case ZYDIS_MNEMONIC_JNZ: return !zf;
	case ZYDIS_MNEMONIC_JBE: return cf || zf;
	case ZYDIS_MNEMONIC_JNBE: return !cf && !zf;
	case ZYDIS_MNEMONIC_JS: return sf;
	case ZYDIS_MNEMONIC_JNS: return !sf;
	case ZYDIS_MNEMONIC_JP: return pf;
	case ZYDIS_MNEMONIC_JNP: return !pf;
	case ZYDIS_MNEMONIC_JL: return sf != of;
	case ZYDIS_MNEMONIC_JNL: return sf == of;
	case ZYDIS_MNEMONIC_JLE: return zf || sf != of;
	case ZYDIS_MNEMONIC_JNLE: return !zf && sf == of;
	default:
		*is_jcc = false;
		return false;
	}
}

static bool is_ip(ZydisRegister r)
{
	return r == ZYDIS_REGISTER_RIP || r == ZYDIS_REGISTER_EIP || r == ZYDIS_REGISTER_IP;
}

bool ref_names_ip(const ZydisDecodedOperand *op)
{
	return (op->type == ZYDIS_OPERAND_TYPE_REGISTER && is_ip(op->reg.value)) ||
	       (op->type == ZYDIS_OPERAND_TYPE_MEMORY && is_ip(op->mem.base));
}
