/*
 * Functions for tracer tests, each starting with one class of instruction that compilers put
 * first in functions. A probe displaces that instruction into a scratch entry; every result
 * depends on the instruction's effect, so a wrong relocation changes the result (or
 * faults). insn_driver.c holds the reference result of each one.
 *
 * Convention: long f(long x) in rdi, result in rax. Addressing is RIP-relative only, so
 * this file links PIE and non-PIE alike. Encodings that the assembler could choose
 * differently (rel8 vs rel32, nop forms) are spelled as bytes.
 *
 * ud2 padding after a jump's fall-through catches a relocated jump landing near, not at,
 * its target.
 */
	.intel_syntax noprefix

	.macro FUNC name
	.globl \name
	.type \name, @function
	.p2align 4
\name:
	.endm

	.macro END name
	.size \name, . - \name
	.endm

	.macro UD2_PAD
	.fill 64, 2, 0x0b0f
	.endm

	.text

/* endbr64 (f3 0f 1e fa): a no-op that IBT requires at indirect-branch targets. */
FUNC insn_endbr64
	endbr64
	lea rax, [rdi + 101]
	ret
END insn_endbr64

/* push rbp (55): the classic frame prologue. The pushed word must be the caller's rbp and
 * the stack 16-aligned after it; anything else adds 1000 or more. Returns 2x + 202. */
FUNC insn_push_rbp
	push rbp
	xor eax, eax
	cmp qword ptr [rsp], rbp
	setne al
	imul eax, eax, 1000
	mov rdx, rsp
	and edx, 15
	add eax, edx
	mov rbp, rsp
	lea rax, [rax + rdi * 2 + 202]
	leave
	ret
END insn_push_rbp

/* push r15 (41 57): REX-prefixed push, first in functions that save callee-saved registers.
 * Returns x + 250, plus the stack misalignment after it times 1000. */
FUNC insn_push_r15
	push r15
	mov r15, rsp
	and r15d, 15
	imul r15, r15, 1000
	lea rax, [r15 + rdi + 250]
	pop r15
	ret
END insn_push_r15

/* sub rsp, imm8 (48 83 ec 18): frame allocation. The entry rsp is 8 mod 16, so rsp is
 * 16-aligned after it. Returns x + 303, plus the misalignment times 1000. */
FUNC insn_sub_rsp_imm8
	sub rsp, 24
	mov [rsp + 8], rdi
	mov rax, rsp
	and eax, 15
	imul rax, rax, 1000
	add rax, [rsp + 8]
	add rax, 303
	add rsp, 24
	ret
END insn_sub_rsp_imm8

/* sub rsp, imm32 (48 81 ec 08 02 00 00): a frame over 127 bytes. Returns x + 313, plus the
 * misalignment times 1000. */
FUNC insn_sub_rsp_imm32
	sub rsp, 0x208
	mov [rsp + 0x200], rdi
	mov rax, rsp
	and eax, 15
	imul rax, rax, 1000
	add rax, [rsp + 0x200]
	add rax, 313
	add rsp, 0x208
	ret
END insn_sub_rsp_imm32

/* mov rax, [rip + d] (48 8b 05 d32): RIP-relative load. Returns insn_data_load + x. */
FUNC insn_load_rip
	mov rax, qword ptr [rip + insn_data_load]
	add rax, rdi
	ret
END insn_load_rip

/* mov [rip + d], rdi (48 89 3d d32): RIP-relative store. The driver also checks memory.
 * Returns 3x. */
FUNC insn_store_rip
	mov qword ptr [rip + insn_data_store], rdi
	mov rax, qword ptr [rip + insn_data_store]
	lea rax, [rax + rax * 2]
	ret
END insn_store_rip

/* mov dword [rip + d], imm32 (c7 05 d32 i32): the displacement is relative to the end of
 * the instruction, after the immediate. Returns 0x5eed1234 + x. */
FUNC insn_store_rip_imm
	mov dword ptr [rip + insn_data_store32], 0x5eed1234
	mov eax, dword ptr [rip + insn_data_store32]
	add rax, rdi
	ret
END insn_store_rip_imm

/* cmp dword [rip + d], imm8 (83 3d d32 i8): RIP-relative compare with an immediate after
 * the displacement. The driver sets insn_data_cmp to 0x50, 0x55 or 0x5a; returns x plus
 * 1, 2 or 3 for below, equal, above. */
FUNC insn_cmp_rip_imm8
	cmp dword ptr [rip + insn_data_cmp], 0x55
	mov eax, 1
	jl .Lcmp8_done
	mov eax, 2
	je .Lcmp8_done
	mov eax, 3
.Lcmp8_done:
	add rax, rdi
	ret
END insn_cmp_rip_imm8

/* cmp dword [rip + d], imm32 (81 3d d32 i32): as above with insn_data_cmp32 around
 * 0x12345678. */
FUNC insn_cmp_rip_imm32
	cmp dword ptr [rip + insn_data_cmp32], 0x12345678
	mov eax, 1
	jl .Lcmp32_done
	mov eax, 2
	je .Lcmp32_done
	mov eax, 3
.Lcmp32_done:
	add rax, rdi
	ret
END insn_cmp_rip_imm32

/* lea rax, [rip + d] (48 8d 05 d32): address of a table. Returns insn_data_table[x & 3]. */
FUNC insn_lea_rip
	lea rax, [rip + insn_data_table]
	and edi, 3
	mov rax, [rax + rdi * 8]
	ret
END insn_lea_rip

/* movsd xmm0, [rip + d] (f2 0f 10 05 d32): prefixed, two-byte-opcode RIP-relative load,
 * as for a floating-point constant. Returns x + 1900. */
FUNC insn_sse_rip
	movsd xmm0, qword ptr [rip + insn_data_double]
	cvttsd2si rax, xmm0
	add rax, rdi
	ret
END insn_sse_rip

/* jmp [rip + d] (ff 25 d32): indirect tail jump through memory, as through a GOT slot.
 * Returns what insn_helper_jmp_target returns: 7x + 1000. */
FUNC insn_jmp_mem
	jmp qword ptr [rip + insn_ptr_jmp_target]
	mov rax, -2
	ret
	UD2_PAD
END insn_jmp_mem

/* call [rip + d] (ff 15 d32): the helper checks that its return address is the original
 * next instruction, not one in a scratch entry. Returns 5x + 9. */
FUNC insn_call_mem
	call qword ptr [rip + insn_ptr_call_mem]
.Lcall_mem_ret:
	add rax, 9
	ret
END insn_call_mem

/* call rel32 (e8 r32): as above, direct. Returns 11x + 3. */
FUNC insn_call_rel32
	call insn_helper_call_rel32
.Lcall_rel32_ret:
	add rax, 3
	ret
END insn_call_rel32

/* lock xadd [rip + d], edi (f0 0f c1 3d d32): locked read-modify-write of a global
 * counter. Returns the counter's old value; the driver checks it grew by x. */
FUNC insn_lock_xadd
	lock xadd dword ptr [rip + insn_data_counter], edi
	mov eax, edi
	ret
END insn_lock_xadd

/* jmp rel32 (e9 r32): a function that starts with a long jump. Returns x + 1100. */
FUNC insn_jmp_rel32
	.byte 0xe9
	.long .Ljmp32_body - (. + 4)
	mov rax, -2
	ret
	UD2_PAD
.Ljmp32_body:
	lea rax, [rdi + 1100]
	ret
END insn_jmp_rel32

/* jmp rel8 (eb r8): a function that starts with a short jump. Returns x + 1200. */
FUNC insn_jmp_rel8
	.byte 0xeb
	.byte .Ljmp8_body - (. + 1)
	mov rax, -2
	ret
	.fill 8, 2, 0x0b0f
.Ljmp8_body:
	lea rax, [rdi + 1200]
	ret
END insn_jmp_rel8

/* jl rel8 (7c r8): its flags come from insn_flags_jcc8's `cmp rdi, 2` just before the call
 * (call leaves flags alone). Returns x + 1350 if x < 2, else x + 1300. */
FUNC insn_jcc_rel8
	.byte 0x7c
	.byte .Ljcc8_less - (. + 1)
	lea rax, [rdi + 1300]
	ret
	.fill 8, 2, 0x0b0f
.Ljcc8_less:
	lea rax, [rdi + 1350]
	ret
END insn_jcc_rel8

/* cmp rdi, imm8 (48 83 ff 02), then the call that gives insn_jcc_rel8 its flags. */
FUNC insn_flags_jcc8
	cmp rdi, 2
	call insn_jcc_rel8
	ret
END insn_flags_jcc8

/* jge rel32 (0f 8d r32): flags from insn_flags_jcc32's `cmp rdi, 3`. Returns x + 1450 if
 * x >= 3, else x + 1400. */
FUNC insn_jcc_rel32
	.byte 0x0f, 0x8d
	.long .Ljcc32_ge - (. + 4)
	lea rax, [rdi + 1400]
	ret
	UD2_PAD
.Ljcc32_ge:
	lea rax, [rdi + 1450]
	ret
END insn_jcc_rel32

/* cmp rdi, imm8 (48 83 ff 03), then the call that gives insn_jcc_rel32 its flags. */
FUNC insn_flags_jcc32
	cmp rdi, 3
	call insn_jcc_rel32
	ret
END insn_flags_jcc32

/* jrcxz rel8 (e3 r8): a conditional jump with no rel32 form; rcx is the fourth argument,
 * long insn_jrcxz(long x, long, long, long c). Returns x + 1550 if c == 0, else
 * x + 1500. */
FUNC insn_jrcxz
	jrcxz .Ljrcxz_zero
	lea rax, [rdi + 1500]
	ret
	.fill 8, 2, 0x0b0f
.Ljrcxz_zero:
	lea rax, [rdi + 1550]
	ret
END insn_jrcxz

/* mov rax, fs:0x28 (64 48 8b 04 25 28 00 00 00): segment-prefixed absolute load of the
 * stack-protector canary; long insn_fs_canary(long x, long canary). Returns x + 1600 if
 * it read the canary, else -1. */
FUNC insn_fs_canary
	mov rax, qword ptr fs:[0x28]
	cmp rax, rsi
	jne .Lfs_bad
	lea rax, [rdi + 1600]
	ret
.Lfs_bad:
	mov rax, -1
	ret
END insn_fs_canary

/* nopl 0x0(rax,rax,1) (0f 1f 44 00 00): the 5-byte nop of patchable function entries
 * (-mnop-mcount, -fpatchable-function-entry). Returns x + 1700. */
FUNC insn_nopl5
	.byte 0x0f, 0x1f, 0x44, 0x00, 0x00
	lea rax, [rdi + 1700]
	ret
END insn_nopl5

/* nopw cs:0x0(rax,rax,1) (66 2e 0f 1f 84 00 00 00 00 00): 10 bytes, two prefixes. Returns
 * x + 1750. */
FUNC insn_nopw10
	.byte 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00
	lea rax, [rdi + 1750]
	ret
END insn_nopw10

/* xor eax, eax (31 c0): rax holds the caller's garbage until it runs. Returns x + 1800. */
FUNC insn_xor_eax
	xor eax, eax
	add rax, rdi
	add rax, 1800
	ret
END insn_xor_eax

/* Helpers: not starting with a class under test, but callable and countable. */

/* Reached by insn_jmp_mem's jump. Returns 7x + 1000. */
FUNC insn_helper_jmp_target
	imul rax, rdi, 7
	add rax, 1000
	ret
END insn_helper_jmp_target

/* Called by insn_call_mem. Returns 5x, or -1000000 if the return address is not
 * .Lcall_mem_ret. */
FUNC insn_helper_call_mem
	lea rax, [rip + .Lcall_mem_ret]
	cmp rax, [rsp]
	jne .Lcall_mem_bad
	imul rax, rdi, 5
	ret
.Lcall_mem_bad:
	mov rax, -1000000
	ret
END insn_helper_call_mem

/* Called by insn_call_rel32. Returns 11x, or -1000000 if the return address is not
 * .Lcall_rel32_ret. */
FUNC insn_helper_call_rel32
	lea rax, [rip + .Lcall_rel32_ret]
	cmp rax, [rsp]
	jne .Lcall_rel32_bad
	imul rax, rdi, 11
	ret
.Lcall_rel32_bad:
	mov rax, -1000000
	ret
END insn_helper_call_rel32

/* The canary, for the driver to pass to insn_fs_canary. */
FUNC insn_helper_read_canary
	mov rax, qword ptr fs:[0x28]
	ret
END insn_helper_read_canary

	.data
	.p2align 3

	.macro DATA name, size
	.globl \name
	.type \name, @object
	.size \name, \size
\name:
	.endm

DATA insn_data_load, 8
	.quad 0x5a5a1234
DATA insn_data_store, 8
	.quad 0
DATA insn_data_table, 32
	.quad 11, 2222, 333333, 44444444
DATA insn_data_double, 8
	.double 1900.0
/* Pointers: a RELATIVE dynamic relocation in the PIE, absolute in the non-PIE. */
DATA insn_ptr_jmp_target, 8
	.quad insn_helper_jmp_target
DATA insn_ptr_call_mem, 8
	.quad insn_helper_call_mem
DATA insn_data_store32, 4
	.long 0
DATA insn_data_cmp, 4
	.long 0
DATA insn_data_cmp32, 4
	.long 0
DATA insn_data_counter, 4
	.long 0

	.section .note.GNU-stack, "", @progbits
