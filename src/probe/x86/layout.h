/*
 * layout: what the two halves of the relocator agree on — the register numbers a plan
 * stores, and the entry layouts a hit writes (offsets are instruction boundaries, where a
 * stopped thread can be):
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
#ifndef PTSS_PROBE_X86_LAYOUT_H
#define PTSS_PROBE_X86_LAYOUT_H

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


#endif
