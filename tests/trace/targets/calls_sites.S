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

	.section .note.GNU-stack, "", @progbits
