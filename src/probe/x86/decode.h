/* decode: one x86-64 instruction through Zydis, for the files of x86/ that decode
 * (plan.c, jump.c, scan.c): at most RELOC_INSN_MAX bytes of code[0, n) looked at. */
#ifndef PTSS_PROBE_X86_DECODE_H
#define PTSS_PROBE_X86_DECODE_H

#include "relocate.h"

#include <Zydis/Zydis.h>
#include <stdbool.h>

static inline bool x86_decode(ZydisDecodedInstruction *in, ZydisDecodedOperand *ops,
			      const uint8_t *code, size_t n)
{
	ZydisDecoder dec;
	return ZYAN_SUCCESS(ZydisDecoderInit(&dec, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64)) &&
	       ZYAN_SUCCESS(ZydisDecoderDecodeFull(&dec, code, n < RELOC_INSN_MAX ? n : RELOC_INSN_MAX,
						   in, ops));
}

#endif
