/*
 * relocate: how a probe's displaced instruction runs away from home (x86-64).
 *
 * At placement, reloc_plan_make decodes the instruction under the probe once and decides
 * how every hit runs it:
 *
 *   copied       position independent: copied into the thread's entry, followed by an
 *                absolute jump back to the next instruction (none after a return)
 *   rip-relative its memory operand is rebased on a scratch register the instruction does
 *                not use; the tracer's registers load it with the original next-instruction
 *                address, and the entry restores it with `movabs $saved, %reg` (the saved
 *                value is this thread's, which is why entries are per thread)
 *   call         the entry pushes the ORIGINAL return address (push imm32, then the high
 *                half with mov [rsp+4]: exactly the 8 bytes the call writes) and jumps
 *   emulated     registers only, nothing runs in the entry: nops and endbr, relative
 *                jmp/jcc/jrcxz/loop, indirect jmp
 *
 * Nothing a hit runs writes below the stack pointer except what the instruction itself
 * writes, and the tracer never writes the target's memory for a hit: only the entry.
 * (Emulated calls push on the stack only: a target running with a user shadow stack,
 * Linux >= 6.6 with CET, would fault at the callee's return; the tracer can refuse
 * RELOC_CALL and RELOC_CALL_IND plans for such a target.)
 *
 * A hit: reloc_hit_prepare writes the entry and sets the thread's registers; the thread
 * then runs with a single ptrace resume and no second stop. reloc_unwind maps a thread
 * stopped inside its entry back to the original code (before a signal is delivered to it,
 * or at detach).
 *
 * Errors: 0 or a negative errno. No output; refusals come back as a one-line reason.
 * Two halves: plan.c (placement; it decodes, through Zydis: decode.h) and entry.c
 * (hits and unwinding); what they agree on is in layout.h.
 */
#ifndef PTSS_TRACE_RELOCATE_H
#define PTSS_TRACE_RELOCATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/user.h> /* struct user_regs_struct */

enum reloc_how {
	RELOC_COPY,      /* copied, then jump back to addr + len */
	RELOC_COPY_END,  /* copied, never comes back (ret, ret imm16, iret) */
	RELOC_RIPREL,    /* rip-relative operand rebased on the scratch register */
	RELOC_NOP,       /* emulated: rip = addr + len (nop of any length, endbr) */
	RELOC_JMP,       /* emulated: jmp rel8/rel32 */
	RELOC_JCC,       /* emulated: jcc rel8/rel32, condition from eflags */
	RELOC_JRCXZ,     /* emulated: jrcxz, jecxz */
	RELOC_LOOP,      /* emulated: loop, loope, loopne (64-bit count) */
	RELOC_CALL,      /* call rel32: return address pushed by the entry */
	RELOC_JMP_IND,   /* jmp reg / jmp [mem]: emulated (the entry only reads a pointer that
	                    the tracer could not) */
	RELOC_CALL_IND,  /* call reg / call [mem]: like RELOC_CALL, target from reg or memory */
};

/* Longest instruction, and the most bytes any hit writes into an entry. */
#define RELOC_INSN_MAX 15
#define RELOC_ENTRY_MAX (RELOC_INSN_MAX + 24)

/*
 * One probe's instruction, decoded and classified; made once at placement, read-only
 * afterwards (hits on many threads may share it). The fields are the relocator's own; the
 * struct is complete so that a caller can embed one per probe.
 */
struct reloc_plan {
	uint64_t addr;       /* the instruction's address in the target */
	uint64_t target;     /* relative branches: the branch target */
	int64_t disp;        /* indirect through memory: displacement */
	uint8_t len;         /* the instruction's length */
	uint8_t how;         /* enum reloc_how */
	uint8_t cond;        /* JCC: condition (low nibble of the opcode); LOOP: 0 loop, 1 loope,
	                        2 loopne; JRCXZ: 1 for jecxz */
	uint8_t scratch;     /* RIPREL and indirect through memory: the scratch register (x86
	                        number, rax = 0 .. r15 = 15) */
	uint8_t reg;         /* indirect through a register: its number, else 0xff */
	uint8_t base, index; /* indirect through memory: numbers, 16 = rip, 0xff = none */
	uint8_t scale;       /* indirect through memory: 1, 2, 4, 8 */
	uint8_t seg;         /* indirect through memory: 0, or 'f' / 'g' for fs: / gs: */
	uint8_t code_len;    /* bytes used in code[] */
	uint8_t orig[RELOC_INSN_MAX]; /* the instruction as found */
	uint8_t code[RELOC_INSN_MAX]; /* RIPREL: the rebased instruction; indirect through
	                                 memory: `mov scratch, [mem]` for the retry path */
};

/*
 * Decodes the first instruction of code[0, avail) — the target's bytes at addr, read
 * before the probe's int3 was written — and decides how hits run it. On refusal returns
 * -ENOTSUP and writes a one-line reason naming the instruction into why (if why_len > 0),
 * e.g. "syscall at 0x401000: cannot run out of line". -EINVAL for bad arguments.
 */
int reloc_plan_make(struct reloc_plan *plan, uint64_t addr, const uint8_t *code, size_t avail,
		    char *why, size_t why_len);

/* The original instruction's length. */
size_t reloc_plan_len(const struct reloc_plan *plan);

/* How hits run it. */
enum reloc_how reloc_plan_how(const struct reloc_plan *plan);

/*
 * The instruction in Intel syntax for messages, rip-relative operands as [rip+0x...] and
 * branch targets absolute, e.g. "mov rax, [rip+0x2f3e]". Returns buf ("" on failure).
 */
const char *reloc_plan_describe(const struct reloc_plan *plan, char *buf, size_t len);

/* The most bytes a hit of this plan writes into an entry (0: it never runs there). */
size_t reloc_plan_entry_need(const struct reloc_plan *plan);

/*
 * Whether hits fit entries of entry_size bytes: 0, or -ENOSPC with a one-line reason
 * ("mov rax, [rip+0x10] at 0x401000: needs 31 bytes of entry, entries have 16"). With the
 * default 64-byte entries every accepted plan fits.
 */
int reloc_plan_fits(const struct reloc_plan *plan, size_t entry_size, char *why, size_t why_len);

/*
 * Whether a hit needs 8 bytes of the target's memory: true for jmp/call through memory,
 * with *addr the pointer's address computed from the stopped thread's registers (fs_base
 * and gs_base included). The tracer reads them while the thread is stopped and passes
 * them to reloc_hit_prepare; if it cannot read them, it passes NULL and the entry makes
 * the thread read them itself (see below).
 */
bool reloc_hit_load_addr(const struct reloc_plan *plan, const struct user_regs_struct *regs,
			 uint64_t *addr);

/*
 * What one hit did, for reloc_unwind. Keep it with the thread until its next hit.
 */
struct reloc_hit {
	uint64_t saved;     /* the program's value of the scratch register */
	uint64_t resume;    /* where the entry jumps when it is done */
	uint8_t entry_len;  /* bytes written to the entry; 0: emulated, never runs there */
	uint8_t head_len;   /* length of the first instruction in the entry */
	uint8_t layout;     /* layout.h's enum layout */
};

/*
 * A hit. regs: the thread's registers at the stop, rip already set back to the probe
 * address (plan->addr; else -EINVAL). Writes the entry through `entry` (the tracer's view
 * of entry_size bytes, executed at entry_addr) unless the hit is emulated, and sets regs
 * to what the thread must resume with: rip = entry_addr and, for rip-relative plans, the
 * scratch register = addr + len; for emulated ones the final state. Nothing else is
 * written anywhere; the tracer sets regs (PTRACE_SETREGS) and resumes.
 *
 * loaded: when reloc_hit_load_addr says so, the 8 bytes read there, or NULL when they
 * could not be read. Then the entry loads them itself and jumps back to the probe
 * address: a bad pointer faults in the entry exactly as the original would (reloc_unwind
 * puts the fault back at the probe), and if the load succeeds after all the thread hits
 * the probe again — one execution seen as two hits, in that race only.
 *
 * -ENOSPC when the hit needs more than entry_size bytes (check with reloc_plan_fits at
 * placement); regs and the entry are untouched on any error.
 */
int reloc_hit_prepare(const struct reloc_plan *plan, uint64_t entry_addr, void *entry,
		      size_t entry_size, struct user_regs_struct *regs, const uint64_t *loaded,
		      struct reloc_hit *hit);

/*
 * Whether the entry of this hit ends by jumping back to the probe itself (the pointer of
 * an indirect branch that the tracer could not read): the displaced instruction does not
 * run for this hit, the thread's next hit of the probe is its real execution.
 */
bool reloc_hit_returns_to_probe(const struct reloc_hit *hit);

/*
 * The thread was stopped with rip inside its entry (a signal about to be delivered, a
 * detach): rewrites regs so that it continues at the equivalent place in the original
 * code, with the scratch register restored.
 *   Before the displaced instruction ran (or it faulted): rip = the probe address and
 *   *rerun = true — resuming there hits the probe again, which the tracer must not count
 *   twice. After it ran: the tail is finished here (rip = the next instruction, or a
 *   call's target) and *rerun = false.
 * The entry may then be reused by the thread's next hit (a signal handler's).
 * -ENOENT when rip is not inside the entry (nothing to do: emulated hits never are);
 * -EINVAL when rip is inside it but not at one of its instruction boundaries.
 *
 * Registers are not all a handler sees: for SIGILL, SIGFPE and SIGTRAP the kernel's
 * si_addr is the faulting instruction's address, i.e. inside the entry; when it equals
 * the rip before unwinding, the tracer sets it to plan->addr too (PTRACE_SETSIGINFO).
 * A SIGSEGV's si_addr is the data address and needs nothing.
 */
int reloc_unwind(const struct reloc_plan *plan, uint64_t entry_addr, const struct reloc_hit *hit,
		 struct user_regs_struct *regs, bool *rerun);

#endif /* PTSS_TRACE_RELOCATE_H */
