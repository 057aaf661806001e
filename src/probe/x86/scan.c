/* scan: functions decoded from their start (see scan.h). */
#include "decode.h"
#include "scan.h"

typedef bool scan_fn(void *ctx, uint64_t addr, const ZydisDecodedInstruction *in,
		     const ZydisDecodedOperand *ops);

/* Decodes part from its start, calling fn for each instruction until it says stop:
 * true when the whole part was walked (or fn stopped), false at bytes that decode to
 * nothing. */
static bool walk(const struct jump_code *part, scan_fn *fn, void *ctx)
{
	ZydisDecodedInstruction in;
	ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
	for (size_t at = 0; at < part->len; at += in.length) {
		if (!x86_decode(&in, ops, part->bytes + at, part->len - at))
			return false;
		if (!fn(ctx, part->addr + at, &in, ops))
			return true;
	}
	return true;
}

struct boundary { uint64_t want; bool found; };

static bool at_boundary(void *ctx, uint64_t addr, const ZydisDecodedInstruction *in,
			const ZydisDecodedOperand *ops)
{
	struct boundary *b = ctx;
	(void)in;
	(void)ops;
	b->found = addr == b->want;
	return addr < b->want;
}

bool scan_boundary(const struct jump_code *part, uint64_t addr)
{
	struct boundary b = { addr, false };
	return walk(part, at_boundary, &b) && b.found;
}

struct cover {
	uint64_t want, start, end, recent[JUMP_PATCH_LEN]; /* the last boundaries, a ring */
	unsigned n;
	bool found;
};

static bool cover_walk(void *ctx, uint64_t addr, const ZydisDecodedInstruction *in,
		       const ZydisDecodedOperand *ops)
{
	struct cover *c = ctx;
	(void)ops;
	c->recent[c->n++ % JUMP_PATCH_LEN] = addr;
	if (addr < c->want)
		return true;
	c->found = addr == c->want;
	c->end = addr + in->length;
	return false;
}

bool scan_cover_start(const struct jump_code *part, uint64_t addr, unsigned min_len, uint64_t *start,
		      uint64_t *end)
{
	struct cover c = { .want = addr };
	if (!walk(part, cover_walk, &c) || !c.found)
		return false;
	/* Each instruction has a byte at least: the start is among the last min_len. */
	for (unsigned i = 0; i < min_len && i < c.n; i++) {
		uint64_t b = c.recent[(c.n - 1 - i) % JUMP_PATCH_LEN];
		if (c.end - b >= min_len) {
			*start = b;
			*end = c.end;
			return true;
		}
	}
	return false;
}

struct exits {
	const struct jump_code *parts;
	size_t nparts, cap;
	uint64_t *out;
	long n;
};

static bool inside(const struct exits *e, uint64_t addr)
{
	for (size_t i = 0; i < e->nparts; i++)
		if (addr >= e->parts[i].addr && addr < e->parts[i].addr + e->parts[i].len)
			return true;
	return false;
}

static bool add_exit(void *ctx, uint64_t addr, const ZydisDecodedInstruction *in,
		     const ZydisDecodedOperand *ops)
{
	struct exits *e = ctx;
	bool leaves = in->mnemonic == ZYDIS_MNEMONIC_RET || in->mnemonic == ZYDIS_MNEMONIC_IRETQ;
	if (in->meta.category == ZYDIS_CATEGORY_UNCOND_BR || in->meta.category == ZYDIS_CATEGORY_COND_BR) {
		if (ops[0].type == ZYDIS_OPERAND_TYPE_IMMEDIATE && ops[0].imm.is_relative)
			leaves = !inside(e, addr + in->length + (uint64_t)ops[0].imm.value.s);
		else
			leaves = in->meta.category == ZYDIS_CATEGORY_UNCOND_BR; /* indirect */
	}
	if (leaves && (size_t)e->n < e->cap)
		e->out[e->n] = addr;
	e->n += leaves;
	return true;
}

long scan_exits(const struct jump_code *parts, size_t nparts, uint64_t *out, size_t cap)
{
	struct exits e = { parts, nparts, cap, out, 0 };
	for (size_t i = 0; i < nparts; i++)
		if (!walk(&parts[i], add_exit, &e))
			return -1;
	return e.n;
}

struct hazard {
	uint64_t site, at, target;
	unsigned len;
	enum scan_hazard found;
};

static bool check_hazard(void *ctx, uint64_t addr, const ZydisDecodedInstruction *in,
			 const ZydisDecodedOperand *ops)
{
	struct hazard *h = ctx;
	h->at = addr;
	if (in->meta.category == ZYDIS_CATEGORY_UNCOND_BR && ops[0].type != ZYDIS_OPERAND_TYPE_IMMEDIATE) {
		h->found = SCAN_INDIRECT_JUMP;
		return false;
	}
	for (unsigned i = 0; i < in->operand_count; i++) {
		if (ops[i].type != ZYDIS_OPERAND_TYPE_IMMEDIATE || !ops[i].imm.is_relative)
			continue;
		uint64_t target = addr + in->length + (uint64_t)ops[i].imm.value.s;
		if (target > h->site && target < h->site + h->len) {
			h->target = target;
			h->found = SCAN_BRANCH_INTO;
			return false;
		}
	}
	return true;
}

enum scan_hazard scan_patch_hazard(const struct jump_code *parts, size_t nparts, uint64_t site,
				   unsigned len, uint64_t *at, uint64_t *target)
{
	for (size_t i = 0; i < nparts; i++) {
		struct hazard h = { .site = site, .len = len, .at = parts[i].addr };
		bool walked = walk(&parts[i], check_hazard, &h);
		*at = h.at;
		*target = h.target;
		if (!walked)
			return SCAN_UNDECODABLE;
		if (h.found)
			return h.found;
	}
	return SCAN_CLEAR;
}
