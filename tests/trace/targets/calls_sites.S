/* Functions of calls_target.c whose shape must be exact: a tail call, and known offsets. */
	.text

/* long ct_leaf(long x): x + 100. */
	.globl ct_leaf
	.type ct_leaf, @function
ct_leaf:
	leaq 100(%rdi), %rax
	ret
	.size ct_leaf, .-ct_leaf

/* long ct_tail(long x): leaves by a jump into ct_leaf (a tail call). */
	.globl ct_tail
	.type ct_tail, @function
ct_tail:
	addq $1, %rdi
	jmp ct_leaf
	.size ct_tail, .-ct_tail

/* long ct_offs(long x): x * 2 + 1. Its instructions start at offsets 0, 3 and 8. */
	.globl ct_offs
	.type ct_offs, @function
ct_offs:
	movq %rdi, %rax     /* 0: 3 bytes */
	leaq 1(%rax,%rax), %rax /* 3: 5 bytes */
	ret
	.size ct_offs, .-ct_offs

/* long ct_mixed(long x): ct_leaf(x) + 1. Its entry is a call (no jmp may displace
 * it): an int3, while its ret may take a jmp that starts at the addq. */
	.globl ct_mixed
	.type ct_mixed, @function
ct_mixed:
	call ct_leaf
	addq $1, %rax
	nop
	ret
	.size ct_mixed, .-ct_mixed

/* long ct_mixed2(long x): x + 3, or x + 2 if x < 0. Its entry may take a jmp; its ret
 * may not (a branch lands on it, inside the bytes a jmp would cover). */
	.globl ct_mixed2
	.type ct_mixed2, @function
ct_mixed2:
	movq %rdi, %rax
	addq $2, %rax
	testq %rdi, %rdi
	js 1f
	addq $1, %rax
1:	ret
	.size ct_mixed2, .-ct_mixed2

	.section .note.GNU-stack, "", @progbits
