/*
 * scan: whole functions decoded from their start — where instructions begin (offset
 * probes), where a function leaves (return probes: its `ret`s, and the branches that may
 * take it out of its own code, tail calls), and what keeps a jmp from covering a site's
 * bytes (jump probes: branches into them, indirect jumps). With plan.c and jump.c, the
 * only users of the decoder.
 */
#ifndef PTSS_PROBE_X86_SCAN_H
#define PTSS_PROBE_X86_SCAN_H

#include "jump.h" /* struct jump_code: a part of a function */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Does an instruction of part start at addr, decoding from the part's start? */
bool scan_boundary(const struct jump_code *part, uint64_t addr);

/* The last instruction boundary *start of part from which whole instructions cover at
 * least min_len (<= JUMP_PATCH_LEN) bytes and end with the instruction at addr, which ends
 * at *end; false if addr is no boundary or there is no such start. */
bool scan_cover_start(const struct jump_code *part, uint64_t addr, unsigned min_len, uint64_t *start,
		      uint64_t *end);

/*
 * The places where a function made of parts[0, nparts) may leave: every ret (or iret),
 * every direct jmp or jcc whose target is outside all its parts, every indirect jmp (a
 * jump table or a tail call: told apart at run time, by where it goes). Up to cap
 * addresses into out; returns how many there are (more than cap: only cap written), or
 * -1 if a part cannot be decoded.
 */
long scan_exits(const struct jump_code *parts, size_t nparts, uint64_t *out, size_t cap);

/* What keeps a jmp from covering [site, site + len) of a function made of parts. */
enum scan_hazard {
	SCAN_CLEAR,
	SCAN_UNDECODABLE,   /* *at: bytes that decode to nothing */
	SCAN_INDIRECT_JUMP, /* *at: an indirect jmp (a jump table?): its targets are unknown */
	SCAN_BRANCH_INTO,   /* *at: a direct branch to *target, inside (site, site + len) */
};
enum scan_hazard scan_patch_hazard(const struct jump_code *parts, size_t nparts, uint64_t site,
				   unsigned len, uint64_t *at, uint64_t *target);

#endif
