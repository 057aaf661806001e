/*
 * jump: optimized sites. A 5-byte `jmp rel32` replaces the instructions at a probe site
 * and sends every thread into a trampoline that counts the hit in the target's own
 * memory, runs the displaced instructions and jumps back: no trap, no stop. Three parts:
 *
 *   jump_plan_make    may this site be patched? decided from its function's code
 *   jump_tramp_write  the trampoline, for a plan and the process's data area
 *   jump_locate       where a thread stopped inside a trampoline stands
 *
 * Trampoline layout (offsets in struct jump_tramp):
 *
 *   0        the count: red zone skipped, rax rcx rdx rsi and the flags saved, the
 *            thread's slot looked up by its fs base, its counter incremented; on a miss
 *            an int3 (`trap`) while the tracer lives, else nothing
 *   reloc    the displaced instructions, relocated (off[i] each), registers and flags
 *            exactly as at the site
 *   ...      jmp back to addr + len (unless the last one never falls through)
 *
 * Data area (struct jump_data): a 32-bit `alive` word (non-zero low 30 bits while the
 * tracer holds it: a robust futex, cleared by the kernel when the tracer dies), a table
 * of 2^table_bits words `(slot << 48) | fs_base` found by open addressing from
 * jump_hash(fs_base), and one row of 64-bit counters per slot.
 */
#ifndef PTSS_PROBE_X86_JUMP_H
#define PTSS_PROBE_X86_JUMP_H

#include "relocate.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JUMP_PATCH_LEN 5
#define JUMP_INSNS_MAX JUMP_PATCH_LEN
#define JUMP_COVER_MAX (JUMP_PATCH_LEN - 1 + RELOC_INSN_MAX)
#define JUMP_TRAMP_MAX 256

#define JUMP_SLOT_SHARED 0xffffu /* a table word whose slot is this always misses */
#define JUMP_ALIVE_MASK 0x3fffffffu /* the owner's tid in a robust futex word */

/* A part of the probed function's code, scanned for branches into the patched bytes. */
struct jump_code {
	uint64_t addr;
	const uint8_t *bytes;
	size_t len;
};

/* One site's displaced instructions. Made once; read-only afterwards. */
struct jump_plan {
	uint64_t addr;
	uint8_t len;                  /* bytes displaced: whole instructions, >= 5 */
	uint8_t ninsns;
	uint8_t off[JUMP_INSNS_MAX];  /* each instruction's offset from addr */
	struct reloc_plan insn[JUMP_INSNS_MAX];
	int32_t disp_at[JUMP_INSNS_MAX]; /* offset of a rip-relative disp32 in it, or -1 */
};

/*
 * Whether the site at addr (code[0, avail): the bytes there) may be patched, its
 * function being parts[0, nparts) (the function from its symbol, and a FUNC.cold part):
 * 0, or -ENOTSUP with a one-line reason. Conservative, as kprobes' jump optimization:
 * the displaced instructions are relocatable (no call, syscall or int; a branch only
 * last), those after the first touch no memory but the stack's (only the first may
 * fault), the function holds no indirect jump and no branch into the patched bytes
 * past their first, and the patch stays inside the function.
 */
int jump_plan_make(struct jump_plan *jp, uint64_t addr, const uint8_t *code, size_t avail,
		   const struct jump_code *parts, size_t nparts, char *why, size_t why_len);

/* What the trampoline of one site needs to know of the data area. */
struct jump_data {
	uint64_t base;        /* the data area's address in the target */
	uint32_t alive_off;   /* the 32-bit alive word */
	uint32_t table_off;   /* the table of 2^table_bits 64-bit words */
	uint32_t table_bits;
	uint32_t counts_off;  /* counters: counts_off + slot * row_bytes + col * 8 */
	uint32_t row_bytes;
	uint32_t col;         /* this site's counter */
};

/* The table index of fs_base, as the trampoline computes it. */
uint32_t jump_hash(uint64_t fs_base, unsigned table_bits);

struct jump_tramp {
	uint16_t len;                 /* bytes written */
	uint16_t trap;                /* the int3 of a miss */
	uint16_t reloc;               /* the first displaced instruction (== off[0]) */
	uint16_t off[JUMP_INSNS_MAX]; /* each displaced instruction */
};

/*
 * Writes the trampoline of plan jp, to run at address `at`, into buf (cap bytes): 0, or
 * -ENOTSUP with a reason when a relocated branch or operand cannot reach its target from
 * there (more than 2 GiB away), -ENOSPC when cap is too small.
 */
int jump_tramp_write(const struct jump_plan *jp, const struct jump_data *d, uint64_t at,
		     uint8_t *buf, size_t cap, struct jump_tramp *out, char *why, size_t why_len);

/* The bytes that replace [addr, addr + len): jmp rel32 to tramp, int3 after it. */
int jump_patch_bytes(const struct jump_plan *jp, uint64_t tramp, uint8_t *patch);

enum jump_where {
	JUMP_OUTSIDE,   /* not in this trampoline */
	JUMP_COUNTING,  /* in the count: runs to `reloc` without touching the program's state */
	JUMP_AT_FIRST,  /* at the first displaced instruction: the site itself, nothing run */
	JUMP_DISPLACED, /* past it: the rest runs straight to the jump back */
};

/* Where rip stands in the trampoline of t written at `at`. */
enum jump_where jump_locate(const struct jump_tramp *t, uint64_t at, uint64_t rip);

#endif
