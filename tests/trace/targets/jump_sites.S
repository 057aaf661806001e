/* Functions whose sites jump probes must refuse or handle (jump_target.c drives them). */
	.text

/* long jt_branch_into(long n): n >= 1. Its loop branches back to offset 2, inside the
 * 5 bytes a jmp would replace: the site must stay an int3. Returns n. */
	.globl jt_branch_into
	.type jt_branch_into, @function
jt_branch_into:
	xorl %eax, %eax
1:	addq $1, %rax
	subq $1, %rdi
	jg 1b
	ret
	.size jt_branch_into, .-jt_branch_into

/* long jt_spin(long x): single-byte instructions only, so that a thread running it in a
 * loop is often stopped inside the first 5 bytes. Returns x + 1. */
	.globl jt_spin
	.type jt_spin, @function
jt_spin:
	nop
	nop
	nop
	nop
	nop
	nop
	leaq 1(%rdi), %rax
	ret
	.size jt_spin, .-jt_spin

	.section .note.GNU-stack, "", @progbits
