/*
 * scan: whole functions decoded from their start — where instructions begin (offset
 * probes) and where a function leaves (return probes: its `ret`s, and the branches that
 * may take it out of its own code, tail calls). The relocator's third user of the
 * decoder, with plan.c and jump.c.
 */
#ifndef PTSS_PROBE_X86_SCAN_H
#define PTSS_PROBE_X86_SCAN_H

#include "jump.h" /* struct jump_code: a part of a function */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Does an instruction of part start at addr, decoding from the part's start? */
bool scan_boundary(const struct jump_code *part, uint64_t addr);

/*
 * The places where a function made of parts[0, nparts) may leave: every ret (or iret),
 * every direct jmp or jcc whose target is outside all its parts, every indirect jmp (a
 * jump table or a tail call: told apart at run time, by where it goes). Up to cap
 * addresses into out; returns how many there are (more than cap: only cap written), or
 * -1 if a part cannot be decoded.
 */
long scan_exits(const struct jump_code *parts, size_t nparts, uint64_t *out, size_t cap);

#endif
