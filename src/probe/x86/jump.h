/*
 * jump: optimized sites. A 5-byte `jmp rel32` replaces the instructions at a probe site
 * and sends every thread into a trampoline that counts the hit in the target's own
 * memory, runs the displaced instructions and jumps back: no trap, no stop. The parts:
 *
 *   jump_plan_make    may this entry (or offset) site be patched? decided from its
 *                     function's code
 *   jump_plan_exit    may this exit (a ret, a tail jmp) be: the jmp then starts at an
 *                     instruction before it, the exit last of the displaced instructions
 *                     (an entry's plan may end with an exit too: a small function)
 *   jump_tramp_write  the trampoline, for a plan and the process's data area
 *   jump_locate       where a thread stopped inside a trampoline stands
 *
 * Trampoline layouts (offsets in struct jump_tramp). A count part skips the red zone,
 * saves rax rcx rdx rsi (rdi too when timed) and the flags, and looks the thread's slot
 * up by its fs base; on a miss it runs an int3 (its `trap`) while the tracer lives, else
 * nothing; then it restores all of them. Registers and flags reach every displaced
 * instruction exactly as at the site.
 *
 *   entry:        [entry count: counter + 1; timed: push a call frame] [displaced] [jmp back]
 *   exit:         [displaced but the exit] [exit count: time the call it ends] [the exit]
 *   entry + exit: [entry count] [displaced but the exit] [exit count] [the exit]
 *
 * Data area (struct jump_data): a 32-bit `alive` word (non-zero low 30 bits while the
 * tracer holds it: a robust futex, cleared by the kernel when the tracer dies), a table
 * of 2^table_bits words `(slot << 48) | fs_base` found by open addressing from
 * jump_hash(fs_base), one row of 64-bit counters per slot, and when calls are timed one
 * call block per slot:
 *
 *   0                 u32 depth: frames in use, of JUMP_CALL_DEPTH
 *   16 + 16 * i       frame i: { u64 rsp at the entry, u64 (tsc << 8) | timed column }
 *   512 + 1024 * c    timed column c: u64 returns (by exit trampolines), u64 max
 *                     ticks, u64 ~min ticks (0: none), then u32 histogram of the calls
 *                     timed, [JUMP_LAT_BUCKETS] by jump_lat_bucket(ticks)
 *
 * An entry drops the frames at or below its rsp (calls a longjmp or an exception left)
 * and pushes one unless the stack is full; an exit drops those below its rsp, and times
 * the top frame if it is this column's at this rsp. Only the thread itself writes its
 * block (or the tracer, the thread stopped: timed.c does the same in C).
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
#define JUMP_TRAMP_MAX 1024

#define JUMP_SLOT_SHARED 0xffffu /* a table word whose slot is this always misses */
#define JUMP_ALIVE_MASK 0x3fffffffu /* the owner's tid in a robust futex word */

enum { /* a slot's call block (above) */
	JUMP_CALL_DEPTH = 31,
	JUMP_CALL_FRAMES = 16,
	JUMP_CALL_STACK_BYTES = 512,
	JUMP_LAT_RETURNS = 0,
	JUMP_LAT_MAX = 8,
	JUMP_LAT_MIN_NOT = 16,
	JUMP_LAT_HIST = 24,
	JUMP_LAT_BUCKETS = 188, /* 4 per power of two, up to 2^48 ticks */
	JUMP_LAT_BYTES = 1024,
	JUMP_LAT_COLS_MAX = 256, /* a column is a byte of the frame */
};

/* The histogram bucket of a duration of `ticks`: exact below 4, then 4 per power of two
 * (the two bits after the leading one); jump_lat_bucket_lo gives back its lower bound. */
unsigned jump_lat_bucket(uint64_t ticks);
uint64_t jump_lat_bucket_lo(unsigned bucket);

/* A part of the probed function's code, scanned for branches into the patched bytes. */
struct jump_code {
	uint64_t addr;
	const uint8_t *bytes;
	size_t len;
};

/* One site's displaced instructions. Made once; read-only afterwards. */
struct jump_plan {
	uint64_t addr;                /* where the jmp goes: the site, or before an exit */
	bool entry;                   /* counts a hit at addr (jump_plan_make) */
	bool exit;                    /* the last instruction is a function exit, timed */
	uint8_t len;                  /* bytes displaced: whole instructions, >= 5 */
	uint8_t ninsns;
	uint8_t off[JUMP_INSNS_MAX];  /* each instruction's offset from addr */
	struct reloc_plan insn[JUMP_INSNS_MAX];
	int32_t disp_at[JUMP_INSNS_MAX]; /* offset of a rip-relative disp32 in it, or -1 */
};

/*
 * Whether the site at addr (code[0, avail): the bytes there) may be patched, displacing
 * at least `cover` bytes (JUMP_PATCH_LEN, or more to take an exit in), its function
 * being parts[0, nparts) (the function from its symbol, and a FUNC.cold part): 0, or
 * -ENOTSUP with a one-line reason. Conservative, as kprobes' jump optimization:
 * the displaced instructions are relocatable (no call, syscall or int; a branch only
 * last), those after the first touch no memory but the stack's (only the first may
 * fault), the function holds no indirect jump and no branch into the patched bytes
 * past their first, and the patch stays inside the function.
 */
int jump_plan_make(struct jump_plan *jp, uint64_t addr, const uint8_t *code, size_t avail,
		   unsigned cover, const struct jump_code *parts, size_t nparts, char *why, size_t why_len);

/*
 * The same for the exit at addr (a ret or an unconditional direct jmp out of the
 * function): the displaced instructions end with it and start at the last instruction
 * boundary that leaves 5 bytes to patch, under the same conditions.
 */
int jump_plan_exit(struct jump_plan *jp, uint64_t addr, const struct jump_code *parts, size_t nparts,
		   char *why, size_t why_len);

/* What the trampoline of one site needs to know of the data area. */
struct jump_data {
	uint64_t base;        /* the data area's address in the target */
	uint32_t alive_off;   /* the 32-bit alive word */
	uint32_t table_off;   /* the table of 2^table_bits 64-bit words */
	uint32_t table_bits;
	uint32_t counts_off;  /* counters: counts_off + slot * row_bytes + col * 8 */
	uint32_t row_bytes;
	uint32_t col;         /* this site's counter (entries) */
	int32_t lat_col;      /* its function's timed column, or -1: calls not timed */
	uint32_t calls_off;   /* the call blocks: calls_off + slot * call_bytes */
	uint32_t call_bytes;
};

/* The table index of fs_base, as the trampoline computes it. */
uint32_t jump_hash(uint64_t fs_base, unsigned table_bits);

enum jump_part { JUMP_PART_ENTRY, JUMP_PART_EXIT, JUMP_PARTS };

struct jump_tramp {
	uint16_t len;                 /* bytes written */
	struct {
		uint16_t start, end;  /* [start, end); start == end: no such part */
		uint16_t trap;        /* its int3 of a miss */
	} part[JUMP_PARTS];
	uint16_t off[JUMP_INSNS_MAX]; /* each displaced instruction */
	uint8_t site_rsp;             /* at the trap, the site's rsp is rsp + site_rsp */
	bool timed;                   /* an entry that pushes a call frame, or an exit */
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
	JUMP_COUNTING,  /* in the count: runs through it without touching the program's state */
	JUMP_AT_FIRST,  /* at the first displaced instruction: at the jmp's address */
	JUMP_DISPLACED, /* past it: the rest runs straight to the end */
};

/* Where rip stands in the trampoline of t written at `at`. */
enum jump_where jump_locate(const struct jump_tramp *t, uint64_t at, uint64_t rip);

/* The part whose miss int3 is at addr, or -1. */
int jump_miss_part(const struct jump_tramp *t, uint64_t at, uint64_t addr);

#endif
