/*
 * jump: optimized sites — which sites may be patched with a jmp (jump_plan_make, from
 * the decoded code of the whole function), their trampolines (jump_tramp_write), and
 * where a stopped thread stands in one (jump_locate). Layout: jump.h.
 */
#include "decode.h"
#include "jump.h"
#include "layout.h"
#include "scan.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define HASH_MUL 0x9e3779b97f4a7c15ull

__attribute__((format(printf, 4, 5)))
static int refuse(char *why, size_t len, uint64_t addr, const char *fmt, ...)
{
	if (why && len) {
		int n = snprintf(why, len, "0x%" PRIx64 ": ", addr);
		if (n >= 0 && (size_t)n < len) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(why + n, len - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return -ENOTSUP;
}

/* Only the first displaced instruction may fault (a thread stopped there is at the site):
 * the others may touch the stack, or module data through rip, nothing else. */
static bool touches_only_stack(const ZydisDecodedInstruction *in, const ZydisDecodedOperand *ops)
{
	for (unsigned i = 0; i < in->operand_count; i++) {
		const ZydisDecodedOperand *op = &ops[i];
		if (op->type != ZYDIS_OPERAND_TYPE_MEMORY || op->mem.type == ZYDIS_MEMOP_TYPE_AGEN)
			continue;
		bool stack = op->mem.base == ZYDIS_REGISTER_RSP && op->mem.index == ZYDIS_REGISTER_NONE;
		bool rip = op->mem.base == ZYDIS_REGISTER_RIP;
		if ((!stack && !rip) || op->mem.segment == ZYDIS_REGISTER_FS ||
		    op->mem.segment == ZYDIS_REGISTER_GS)
			return false;
	}
	return true;
}

int jump_plan_make(struct jump_plan *jp, uint64_t addr, const uint8_t *code, size_t avail,
		   const struct jump_code *parts, size_t nparts, char *why, size_t why_len)
{
	memset(jp, 0, sizeof(*jp));
	jp->addr = addr;
	const struct jump_code *fn = NULL;
	for (size_t i = 0; i < nparts; i++)
		if (addr >= parts[i].addr && addr < parts[i].addr + parts[i].len)
			fn = &parts[i];
	if (!fn)
		return refuse(why, why_len, addr, "the function's size is unknown");
	size_t room = fn->addr + fn->len - addr; /* the patch stays inside the function */
	if (avail > room)
		avail = room;

	unsigned len = 0;
	bool ends = false; /* the last instruction never falls through */
	while (len < JUMP_PATCH_LEN) {
		if (ends || len >= avail)
			return refuse(why, why_len, addr, "the function is too short for a %d-byte jump",
				      JUMP_PATCH_LEN);
		unsigned k = jp->ninsns;
		struct reloc_plan *p = &jp->insn[k];
		char reason[200];
		if (reloc_plan_make(p, addr + len, code + len, avail - len, reason, sizeof(reason)))
			return refuse(why, why_len, addr, "%s", reason);
		ZydisDecodedInstruction in;
		ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
		if (!x86_decode(&in, ops, code + len, avail - len))
			return refuse(why, why_len, addr + len, "cannot decode");
		jp->disp_at[k] = -1;
		switch (p->how) {
		case RELOC_COPY:
		case RELOC_NOP:
			break;
		case RELOC_RIPREL:
			jp->disp_at[k] = in.raw.disp.offset;
			break;
		case RELOC_JMP_IND:
			if (p->base == REG_RIP)
				jp->disp_at[k] = in.raw.disp.offset;
			/* fall through */
		case RELOC_JMP:
		case RELOC_COPY_END:
			ends = true;
			break;
		case RELOC_JCC:
			break;
		default:
			return refuse(why, why_len, addr + len, "%s among the displaced instructions",
				      p->how == RELOC_CALL || p->how == RELOC_CALL_IND ? "a call" :
				      p->how == RELOC_JRCXZ ? "a jrcxz" : "a loop");
		}
		if (k > 0 && !touches_only_stack(&in, ops))
			return refuse(why, why_len, addr + len, "a memory access after the first "
				      "displaced instruction (only the first may fault)");
		jp->off[k] = (uint8_t)len;
		jp->ninsns++;
		len += p->len;
	}
	jp->len = (uint8_t)len;
	uint64_t at, target;
	switch (scan_patch_hazard(parts, nparts, addr, len, &at, &target)) {
	case SCAN_CLEAR:
		return 0;
	case SCAN_UNDECODABLE:
		return refuse(why, why_len, at, "the function does not decode past this instruction");
	case SCAN_INDIRECT_JUMP:
		return refuse(why, why_len, at, "an indirect jump in the function (a jump table?)");
	default:
		return refuse(why, why_len, at, "a branch to 0x%" PRIx64 ", inside the %u bytes a jump "
			      "would replace", target, len);
	}
}

uint32_t jump_hash(uint64_t fs_base, unsigned table_bits)
{
	return (uint32_t)((fs_base * HASH_MUL) >> (64 - table_bits));
}

/* ---- writing ----------------------------------------------------------------------- */

struct out {
	uint8_t *buf;
	size_t cap, len;
	bool full;
};

static void put(struct out *o, const void *bytes, size_t n)
{
	if (o->len + n > o->cap) {
		o->full = true;
		return;
	}
	memcpy(o->buf + o->len, bytes, n);
	o->len += n;
}

static void put_u8(struct out *o, uint8_t v) { put(o, &v, 1); }
static void put_u32(struct out *o, uint32_t v) { put(o, &v, 4); }
static void put_u64(struct out *o, uint64_t v) { put(o, &v, 8); }

#define PUT(o, ...) put((o), (const uint8_t[]){ __VA_ARGS__ }, sizeof((const uint8_t[]){ __VA_ARGS__ }))

static bool rel32(uint64_t from_end, uint64_t target, int32_t *rel)
{
	int64_t d = (int64_t)(target - from_end);
	if (d < INT32_MIN || d > INT32_MAX)
		return false;
	*rel = (int32_t)d;
	return true;
}

/* A short forward jump whose rel8 is filled in later. */
static size_t jump8(struct out *o, uint8_t opcode)
{
	PUT(o, opcode, 0);
	return o->len;
}

static void land8(struct out *o, size_t from)
{
	if (!o->full)
		o->buf[from - 1] = (uint8_t)(o->len - from);
}

static void put_count(struct out *o, const struct jump_data *d, struct jump_tramp *t)
{
	uint32_t mask = (1u << d->table_bits) - 1;
	PUT(o, 0x48, 0x8d, 0x64, 0x24, 0x80);           /* lea rsp, [rsp-128]: the red zone */
	PUT(o, 0x50, 0x51, 0x52, 0x56);                 /* push rax, rcx, rdx, rsi */
	PUT(o, 0x9f, 0x0f, 0x90, 0xc0, 0x50);           /* lahf; seto al; push rax */
	PUT(o, 0xf3, 0x48, 0x0f, 0xae, 0xc1);           /* rdfsbase rcx */
	PUT(o, 0x48, 0xba); put_u64(o, d->base);        /* mov rdx, data */
	PUT(o, 0x48, 0xb8); put_u64(o, HASH_MUL);       /* mov rax, HASH_MUL */
	PUT(o, 0x48, 0x0f, 0xaf, 0xc1);                 /* imul rax, rcx */
	PUT(o, 0x48, 0xc1, 0xe8, (uint8_t)(64 - d->table_bits)); /* shr rax, 64 - bits */
	size_t loop = o->len;
	PUT(o, 0x48, 0x8b, 0xb4, 0xc2); put_u32(o, d->table_off); /* mov rsi, [rdx+rax*8+table] */
	PUT(o, 0x48, 0x85, 0xf6);                       /* test rsi, rsi */
	size_t empty = jump8(o, 0x74);                  /* jz miss */
	PUT(o, 0x48, 0x31, 0xce);                       /* xor rsi, rcx: the slot if it is ours */
	PUT(o, 0x48, 0xc1, 0xc6, 0x10);                 /* rol rsi, 16 */
	PUT(o, 0x48, 0x81, 0xfe, 0xff, 0xff, 0, 0);     /* cmp rsi, 0xffff */
	size_t found = jump8(o, 0x76);                  /* jbe found */
	PUT(o, 0xff, 0xc0);                             /* inc eax */
	PUT(o, 0x25); put_u32(o, mask);                 /* and eax, mask */
	PUT(o, 0xeb, (uint8_t)(loop - (o->len + 2)));   /* jmp loop */
	land8(o, found);
	PUT(o, 0x81, 0xfe, 0xff, 0xff, 0, 0);           /* cmp esi, JUMP_SLOT_SHARED */
	size_t shared = jump8(o, 0x74);                 /* je miss */
	PUT(o, 0x69, 0xf6); put_u32(o, d->row_bytes);   /* imul esi, esi, row_bytes */
	PUT(o, 0x48, 0x83, 0x84, 0x32);                 /* add qword [rdx+rsi+counter], 1 */
	put_u32(o, d->counts_off + d->col * 8);
	put_u8(o, 1);
	size_t counted = jump8(o, 0xeb);                /* jmp done */
	land8(o, empty);
	land8(o, shared);
	PUT(o, 0xf7, 0x82); put_u32(o, d->alive_off);   /* test dword [rdx+alive], mask */
	put_u32(o, JUMP_ALIVE_MASK);
	size_t dead = jump8(o, 0x74);                   /* jz done: nobody to tell */
	t->trap = (uint16_t)o->len;
	put_u8(o, 0xcc);                                /* int3: the tracer counts it */
	land8(o, counted);
	land8(o, dead);
	PUT(o, 0x58, 0x04, 0x7f, 0x9e);                 /* pop rax; add al, 0x7f; sahf */
	PUT(o, 0x5e, 0x5a, 0x59, 0x58);                 /* pop rsi, rdx, rcx, rax */
	PUT(o, 0x48, 0x8d, 0xa4, 0x24, 0x80, 0, 0, 0);  /* lea rsp, [rsp+128] */
}

int jump_tramp_write(const struct jump_plan *jp, const struct jump_data *d, uint64_t at,
		     uint8_t *buf, size_t cap, struct jump_tramp *t, char *why, size_t why_len)
{
	struct out o = { .buf = buf, .cap = cap };
	memset(t, 0, sizeof(*t));
	put_count(&o, d, t);
	t->reloc = (uint16_t)o.len;
	bool falls_through = true;
	for (unsigned k = 0; k < jp->ninsns; k++) {
		const struct reloc_plan *p = &jp->insn[k];
		int32_t rel;
		t->off[k] = (uint16_t)o.len;
		switch (p->how) {
		case RELOC_JMP:
			if (!rel32(at + o.len + 5, p->target, &rel))
				return refuse(why, why_len, p->addr, "its jump target is too far from the trampoline");
			put_u8(&o, 0xe9);
			put_u32(&o, (uint32_t)rel);
			falls_through = false;
			break;
		case RELOC_JCC:
			if (!rel32(at + o.len + 6, p->target, &rel))
				return refuse(why, why_len, p->addr, "its branch target is too far from the trampoline");
			PUT(&o, 0x0f, (uint8_t)(0x80 | (p->cond & 0xf)));
			put_u32(&o, (uint32_t)rel);
			break;
		default: {
			uint8_t insn[RELOC_INSN_MAX];
			memcpy(insn, p->orig, p->len);
			if (jp->disp_at[k] >= 0) {
				int32_t disp;
				memcpy(&disp, insn + jp->disp_at[k], 4);
				uint64_t target = p->addr + p->len + (uint64_t)(int64_t)disp;
				if (!rel32(at + o.len + p->len, target, &rel))
					return refuse(why, why_len, p->addr, "its rip-relative operand is too far "
						      "from the trampoline");
				memcpy(insn + jp->disp_at[k], &rel, 4);
			}
			put(&o, insn, p->len);
			falls_through = p->how != RELOC_JMP_IND && p->how != RELOC_COPY_END;
		}
		}
	}
	if (falls_through) {
		int32_t rel;
		if (!rel32(at + o.len + 5, jp->addr + jp->len, &rel))
			return refuse(why, why_len, jp->addr, "the site is too far from the trampoline");
		put_u8(&o, 0xe9);
		put_u32(&o, (uint32_t)rel);
	}
	if (o.full)
		return -ENOSPC;
	t->len = (uint16_t)o.len;
	return 0;
}

int jump_patch_bytes(const struct jump_plan *jp, uint64_t tramp, uint8_t *patch)
{
	int32_t rel;
	if (!rel32(jp->addr + JUMP_PATCH_LEN, tramp, &rel))
		return -ERANGE;
	patch[0] = 0xe9;
	memcpy(patch + 1, &rel, 4);
	memset(patch + JUMP_PATCH_LEN, 0xcc, jp->len - JUMP_PATCH_LEN);
	return 0;
}

enum jump_where jump_locate(const struct jump_tramp *t, uint64_t at, uint64_t rip)
{
	if (rip < at || rip >= at + t->len)
		return JUMP_OUTSIDE;
	uint64_t off = rip - at;
	if (off < t->reloc)
		return JUMP_COUNTING;
	return off == t->reloc ? JUMP_AT_FIRST : JUMP_DISPLACED;
}
