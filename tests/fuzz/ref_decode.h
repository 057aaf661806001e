/*
 * ref_decode: the relocator checks' own reading of x86-64 instructions (Zydis), kept apart
 * from the relocator's (src/probe/x86) so that a mistake there is not repeated here: registers by number,
 * effective addresses from a full register file, branch conditions by mnemonic.
 */
#ifndef PTSS_FUZZ_REF_DECODE_H
#define PTSS_FUZZ_REF_DECODE_H

#include <Zydis/Zydis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/user.h>

struct ref_insn {
	ZydisDecodedInstruction in;
	ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
};

/* Decodes the first instruction of code[0, n) in 64-bit mode; false if it is invalid. */
bool ref_decode(struct ref_insn *d, const uint8_t *code, size_t n);

/* x86 number (rax = 0 .. r15 = 15) of a general-purpose register of any width (ah is
 * rax), else -1. */
int ref_gpr(ZydisRegister r);

/* The user_regs_struct field of general-purpose register n (x86 numbering). */
unsigned long long *ref_reg(struct user_regs_struct *u, int n);
uint64_t ref_reg_get(const struct user_regs_struct *u, int n);

/*
 * The address a memory operand (or lea's agen) reaches when the instruction runs at `at`
 * with registers u, fs and gs bases added. false where Zydis computes none (vsib, mib).
 */
bool ref_mem_addr(const struct ref_insn *d, const ZydisDecodedOperand *op, uint64_t at,
		  const struct user_regs_struct *u, uint64_t *ea);

/* Whether the condition of jcc `m` holds for these flags; false for other mnemonics. */
bool ref_jcc_taken(ZydisMnemonic m, uint64_t eflags, bool *is_jcc);

/* Whether an operand names rip, eip or ip (register) or is based on it (memory). */
bool ref_names_ip(const ZydisDecodedOperand *op);

#endif /* PTSS_FUZZ_REF_DECODE_H */
