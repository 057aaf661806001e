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
#include <stdlib.h>
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

/* The instructions from addr on, until they cover `cover` bytes (>= 5): relocatable,
 * a branch only last, memory only through rsp or rip past the first; then no hazard in
 * the function for a jmp over them. */
static int plan_run(struct jump_plan *jp, uint64_t addr, const uint8_t *code, size_t avail,
		    unsigned cover, const struct jump_code *parts, size_t nparts, char *why, size_t why_len)
{
	unsigned len = 0;
	bool ends = false; /* the last instruction never falls through */
	while (len < cover) {
		if (ends || len >= avail || jp->ninsns == JUMP_INSNS_MAX)
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

static const struct jump_code *part_of(const struct jump_code *parts, size_t nparts, uint64_t addr)
{
	for (size_t i = 0; i < nparts; i++)
		if (addr >= parts[i].addr && addr < parts[i].addr + parts[i].len)
			return &parts[i];
	return NULL;
}

int jump_plan_make(struct jump_plan *jp, uint64_t addr, const uint8_t *code, size_t avail,
		   unsigned cover, const struct jump_code *parts, size_t nparts, char *why, size_t why_len)
{
	memset(jp, 0, sizeof(*jp));
	jp->addr = addr;
	jp->entry = true;
	const struct jump_code *fn = part_of(parts, nparts, addr);
	if (!fn)
		return refuse(why, why_len, addr, "the function's size is unknown");
	size_t room = fn->addr + fn->len - addr; /* the patch stays inside the function */
	return plan_run(jp, addr, code, avail < room ? avail : room, cover < JUMP_PATCH_LEN ? JUMP_PATCH_LEN : cover,
			parts, nparts, why, why_len);
}

int jump_plan_exit(struct jump_plan *jp, uint64_t addr, const struct jump_code *parts, size_t nparts,
		   char *why, size_t why_len)
{
	memset(jp, 0, sizeof(*jp));
	const struct jump_code *fn = part_of(parts, nparts, addr);
	uint64_t start, end;
	if (!fn || !scan_cover_start(fn, addr, JUMP_PATCH_LEN, &start, &end))
		return refuse(why, why_len, addr, "less than %d bytes of whole instructions end with "
			      "this exit", JUMP_PATCH_LEN);
	jp->addr = start;
	jp->exit = true;
	const uint8_t *code = fn->bytes + (start - fn->addr);
	int err = plan_run(jp, start, code, end - start, (unsigned)(end - start), parts, nparts, why, why_len);
	if (err)
		return err;
	enum reloc_how how = jp->insn[jp->ninsns - 1].how;
	if (how != RELOC_COPY_END && how != RELOC_JMP)
		return refuse(why, why_len, addr, "an exit that is not a ret or a direct jmp");
	return 0;
}

/* ---- timed calls --------------------------------------------------------------------- */

unsigned jump_lat_bucket(uint64_t ticks)
{
	if (ticks < 4)
		return (unsigned)ticks;
	unsigned k = 63 - (unsigned)__builtin_clzll(ticks);
	unsigned b = ((unsigned)(ticks >> (k - 2)) & 3) + (k - 1) * 4;
	return b < JUMP_LAT_BUCKETS ? b : JUMP_LAT_BUCKETS - 1;
}

uint64_t jump_lat_bucket_lo(unsigned bucket)
{
	if (bucket < 4)
		return bucket;
	unsigned k = bucket / 4 + 1;
	return (uint64_t)(4 + bucket % 4) << (k - 2);
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
	if (o->len - from > INT8_MAX)
		abort(); /* a layout error of this file: a rel8 must reach */
	if (!o->full)
		o->buf[from - 1] = (uint8_t)(o->len - from);
}

/* The same with a rel32: jmp (e9) or jcc (0f 8x), for jumps over a long part. */
static size_t jump32(struct out *o, uint8_t op0, uint8_t op1)
{
	put_u8(o, op0);
	if (op0 == 0x0f)
		put_u8(o, op1);
	put_u32(o, 0);
	return o->len;
}

static void land32(struct out *o, size_t from)
{
	uint32_t rel = (uint32_t)(o->len - from);
	if (!o->full)
		memcpy(o->buf + from - 4, &rel, 4);
}

/* A backward short jump (opcode: jmp eb, jcc 7x) to `to`. */
static void back8(struct out *o, uint8_t opcode, size_t to)
{
	if (o->len + 2 - to > 128)
		abort(); /* as in land8 */
	PUT(o, opcode, (uint8_t)(to - (o->len + 2)));
}

enum { RED_ZONE = 128 };

/*
 * The count part up to the thread's slot: red zone skipped, registers and flags saved,
 * the slot looked up. Falls through with the slot in esi and the data area in rdx; a
 * miss (no key, or a shared one) goes to the int3 while the tracer lives. Returns where
 * the miss path's jump to the restore is to land (land32).
 */
static size_t put_lookup(struct out *o, const struct jump_data *d, bool timed, struct jump_tramp *t,
			 enum jump_part part)
{
	uint32_t mask = (1u << d->table_bits) - 1;
	PUT(o, 0x48, 0x8d, 0x64, 0x24, (uint8_t)-RED_ZONE); /* lea rsp, [rsp-128] */
	PUT(o, 0x50, 0x51, 0x52, 0x56);                 /* push rax, rcx, rdx, rsi */
	if (timed)
		PUT(o, 0x57);                           /* push rdi */
	PUT(o, 0x9f, 0x0f, 0x90, 0xc0, 0x50);           /* lahf; seto al; push rax */
	t->site_rsp = (uint8_t)(RED_ZONE + 8 * (timed ? 6 : 5));
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
	back8(o, 0xeb, loop);                           /* jmp loop */
	size_t miss = o->len;
	land8(o, empty);
	PUT(o, 0xf7, 0x82); put_u32(o, d->alive_off);   /* test dword [rdx+alive], mask */
	put_u32(o, JUMP_ALIVE_MASK);
	size_t dead = jump8(o, 0x74);                   /* jz restore: nobody to tell */
	t->part[part].trap = (uint16_t)o->len;
	put_u8(o, 0xcc);                                /* int3: the tracer takes the hit */
	land8(o, dead);
	size_t restore = jump32(o, 0xe9, 0);            /* jmp restore */
	land8(o, found);
	PUT(o, 0x81, 0xfe, 0xff, 0xff, 0, 0);           /* cmp esi, JUMP_SLOT_SHARED */
	back8(o, 0x74, miss);                           /* je miss */
	return restore;
}

static void put_restore(struct out *o, bool timed)
{
	PUT(o, 0x58, 0x04, 0x7f, 0x9e);                 /* pop rax; add al, 0x7f; sahf */
	if (timed)
		PUT(o, 0x5f);                           /* pop rdi */
	PUT(o, 0x5e, 0x5a, 0x59, 0x58);                 /* pop rsi, rdx, rcx, rax */
	PUT(o, 0x48, 0x8d, 0xa4, 0x24, RED_ZONE, 0, 0, 0); /* lea rsp, [rsp+128] */
}

/* rdi = the slot's call block - calls_off, from the slot in esi and the data in rdx. */
static void put_call_block(struct out *o, const struct jump_data *d, bool slot_in_edi)
{
	if (slot_in_edi)
		PUT(o, 0x69, 0xff);                     /* imul edi, edi, call_bytes */
	else
		PUT(o, 0x69, 0xfe);                     /* imul edi, esi, call_bytes */
	put_u32(o, d->call_bytes);
	PUT(o, 0x48, 0x01, 0xd7);                       /* add rdi, rdx */
}

/* rsi = the rsp at the site; ecx = the depth of the stack; ecx, rax changed. */
static void put_depth(struct out *o, const struct jump_data *d, const struct jump_tramp *t)
{
	PUT(o, 0x48, 0x8d, 0xb4, 0x24); put_u32(o, t->site_rsp); /* lea rsi, [rsp+site_rsp] */
	PUT(o, 0x8b, 0x8f); put_u32(o, d->calls_off);   /* mov ecx, [rdi+calls_off] */
}

/* rax = the tsc, 56 bits (edx changed). rdtsc, not rdtscp or lfence: half the cost
 * (9 against 17 ns on the bench machine), for an order within a few cycles. */
static void put_tsc56(struct out *o)
{
	PUT(o, 0x0f, 0x31);                             /* rdtsc */
	PUT(o, 0x48, 0xc1, 0xe2, 0x20);                 /* shl rdx, 32 */
	PUT(o, 0x48, 0x09, 0xd0);                       /* or rax, rdx */
	PUT(o, 0x48, 0xc1, 0xe0, 0x08);                 /* shl rax, 8 */
	PUT(o, 0x48, 0xc1, 0xe8, 0x08);                 /* shr rax, 8 */
}

/* An entry: its counter + 1 (timed: the slot kept in edi). */
static void put_entry(struct out *o, const struct jump_data *d, bool timed)
{
	if (timed)
		PUT(o, 0x89, 0xf7);                     /* mov edi, esi: the slot */
	PUT(o, 0x69, 0xf6); put_u32(o, d->row_bytes);   /* imul esi, esi, row_bytes */
	PUT(o, 0x48, 0x83, 0x84, 0x32);                 /* add qword [rdx+rsi+counter], 1 */
	put_u32(o, d->counts_off + d->col * 8);
	put_u8(o, 1);
}

/* A timed entry: a frame pushed for the call (see jump.h). */
static void put_push_frame(struct out *o, const struct jump_data *d, const struct jump_tramp *t)
{
	uint32_t frames = d->calls_off + JUMP_CALL_FRAMES;
	put_call_block(o, d, true);
	put_depth(o, d, t);
	size_t drop = o->len;
	PUT(o, 0x85, 0xc9);                             /* test ecx, ecx */
	size_t empty = jump8(o, 0x74);                  /* jz push */
	PUT(o, 0x89, 0xc8, 0xc1, 0xe0, 0x04);           /* mov eax, ecx; shl eax, 4 */
	PUT(o, 0x48, 0x39, 0xb4, 0x07); put_u32(o, frames - 16); /* cmp [rdi+rax+top], rsi */
	size_t caller = jump8(o, 0x77);                 /* ja push: a caller's frame stays */
	PUT(o, 0xff, 0xc9);                             /* dec ecx: a frame left behind */
	back8(o, 0xeb, drop);                           /* jmp drop */
	land8(o, empty);
	land8(o, caller);
	PUT(o, 0x83, 0xf9, JUMP_CALL_DEPTH);            /* cmp ecx, DEPTH */
	size_t full = jump8(o, 0x73);                   /* jae store: full, not timed */
	PUT(o, 0x89, 0xc8, 0xc1, 0xe0, 0x04);           /* mov eax, ecx; shl eax, 4 */
	PUT(o, 0x48, 0x8d, 0x84, 0x07); put_u32(o, frames); /* lea rax, [rdi+rax+frames] */
	PUT(o, 0x48, 0x89, 0x30);                       /* mov [rax], rsi */
	PUT(o, 0x48, 0x89, 0xc6);                       /* mov rsi, rax */
	put_tsc56(o);
	PUT(o, 0x48, 0xc1, 0xe0, 0x08);                 /* shl rax, 8 */
	PUT(o, 0x0c, (uint8_t)d->lat_col);              /* or al, column */
	PUT(o, 0x48, 0x89, 0x46, 0x08);                 /* mov [rsi+8], rax */
	PUT(o, 0xff, 0xc1);                             /* inc ecx */
	land8(o, full);
	PUT(o, 0x89, 0x8f); put_u32(o, d->calls_off);   /* mov [rdi+calls_off], ecx */
}

/* An exit: the call it ends timed if its frame is on top (see jump.h). */
static void put_exit(struct out *o, const struct jump_data *d, const struct jump_tramp *t)
{
	uint32_t frames = d->calls_off + JUMP_CALL_FRAMES;
	uint32_t lat = d->calls_off + JUMP_CALL_STACK_BYTES + (uint32_t)d->lat_col * JUMP_LAT_BYTES;
	put_call_block(o, d, false);
	PUT(o, 0x48, 0x83, 0x87); put_u32(o, lat + JUMP_LAT_RETURNS); put_u8(o, 1); /* add [rdi+returns], 1 */
	put_depth(o, d, t);
	size_t drop = o->len;
	PUT(o, 0x85, 0xc9);                             /* test ecx, ecx */
	size_t empty = jump32(o, 0x0f, 0x84);           /* jz store: not timed */
	PUT(o, 0x89, 0xc8, 0xc1, 0xe0, 0x04);           /* mov eax, ecx; shl eax, 4 */
	PUT(o, 0x48, 0x8d, 0x84, 0x07); put_u32(o, frames - 16); /* lea rax, [rdi+rax+top] */
	PUT(o, 0x48, 0x39, 0x30);                       /* cmp [rax], rsi */
	size_t at_or_above = jump8(o, 0x73);            /* jae check */
	PUT(o, 0xff, 0xc9);                             /* dec ecx: a frame left behind */
	back8(o, 0xeb, drop);                           /* jmp drop */
	land8(o, at_or_above);
	size_t other = jump32(o, 0x0f, 0x85);           /* jne store: a caller's frame */
	PUT(o, 0x80, 0x78, 0x08, (uint8_t)d->lat_col);  /* cmp byte [rax+8], column */
	size_t not_ours = jump32(o, 0x0f, 0x85);        /* jne store */
	PUT(o, 0xff, 0xc9);                             /* dec ecx: popped */
	PUT(o, 0x89, 0x8f); put_u32(o, d->calls_off);   /* mov [rdi+calls_off], ecx */
	PUT(o, 0x48, 0x8b, 0x70, 0x08);                 /* mov rsi, [rax+8] */
	PUT(o, 0x48, 0xc1, 0xee, 0x08);                 /* shr rsi, 8: the entry's tsc */
	put_tsc56(o);
	PUT(o, 0x48, 0x29, 0xf0);                       /* sub rax, rsi */
	PUT(o, 0x48, 0xc1, 0xe0, 0x08, 0x48, 0xc1, 0xe8, 0x08); /* shl rax, 8; shr rax, 8 */
	PUT(o, 0x48, 0x3b, 0x87); put_u32(o, lat + JUMP_LAT_MAX); /* cmp rax, [rdi+max] */
	size_t not_max = jump8(o, 0x76);                /* jbe */
	PUT(o, 0x48, 0x89, 0x87); put_u32(o, lat + JUMP_LAT_MAX); /* mov [rdi+max], rax */
	land8(o, not_max);
	PUT(o, 0x48, 0x89, 0xc6, 0x48, 0xf7, 0xd6);     /* mov rsi, rax; not rsi */
	PUT(o, 0x48, 0x3b, 0xb7); put_u32(o, lat + JUMP_LAT_MIN_NOT); /* cmp rsi, [rdi+~min] */
	size_t not_min = jump8(o, 0x76);                /* jbe */
	PUT(o, 0x48, 0x89, 0xb7); put_u32(o, lat + JUMP_LAT_MIN_NOT); /* mov [rdi+~min], rsi */
	land8(o, not_min);
	/* the bucket (jump_lat_bucket) */
	PUT(o, 0x89, 0xc2);                             /* mov edx, eax */
	PUT(o, 0x48, 0x83, 0xf8, 0x04);                 /* cmp rax, 4 */
	size_t small = jump8(o, 0x72);                  /* jb add */
	PUT(o, 0x48, 0x0f, 0xbd, 0xc8);                 /* bsr rcx, rax */
	PUT(o, 0x48, 0x89, 0xc2);                       /* mov rdx, rax */
	PUT(o, 0x83, 0xe9, 0x02);                       /* sub ecx, 2 */
	PUT(o, 0x48, 0xd3, 0xea);                       /* shr rdx, cl */
	PUT(o, 0x83, 0xe2, 0x03);                       /* and edx, 3 */
	PUT(o, 0x8d, 0x54, 0x8a, 0x04);                 /* lea edx, [rdx+rcx*4+4] */
	PUT(o, 0x81, 0xfa); put_u32(o, JUMP_LAT_BUCKETS - 1); /* cmp edx, last */
	size_t in_range = jump8(o, 0x76);               /* jbe add */
	PUT(o, 0xba); put_u32(o, JUMP_LAT_BUCKETS - 1); /* mov edx, last */
	land8(o, small);
	land8(o, in_range);
	PUT(o, 0x83, 0x84, 0x97); put_u32(o, lat + JUMP_LAT_HIST); put_u8(o, 1); /* add dword [rdi+rdx*4+hist], 1 */
	size_t timed = jump8(o, 0xeb);                  /* jmp out: depth stored, ecx changed */
	land32(o, empty);
	land32(o, other);
	land32(o, not_ours);
	PUT(o, 0x89, 0x8f); put_u32(o, d->calls_off);   /* mov [rdi+calls_off], ecx */
	land8(o, timed);
}

/* A count part: an entry's or an exit's. */
static void put_count(struct out *o, enum jump_part part, const struct jump_data *d, struct jump_tramp *t)
{
	bool timed = d->lat_col >= 0;
	t->part[part].start = (uint16_t)o->len;
	size_t restore = put_lookup(o, d, timed, t, part);
	if (part == JUMP_PART_EXIT) {
		put_exit(o, d, t);
	} else {
		put_entry(o, d, timed);
		if (timed)
			put_push_frame(o, d, t);
	}
	land32(o, restore);
	put_restore(o, timed);
	t->part[part].end = (uint16_t)o->len;
}

/* Displaced instruction k of jp, relocated to run at `at` + o->len. */
static int put_displaced(struct out *o, const struct jump_plan *jp, unsigned k, uint64_t at,
			 struct jump_tramp *t, bool *falls_through, char *why, size_t why_len)
{
	const struct reloc_plan *p = &jp->insn[k];
	int32_t rel;
	t->off[k] = (uint16_t)o->len;
	switch (p->how) {
	case RELOC_JMP:
		if (!rel32(at + o->len + 5, p->target, &rel))
			return refuse(why, why_len, p->addr, "its jump target is too far from the trampoline");
		put_u8(o, 0xe9);
		put_u32(o, (uint32_t)rel);
		*falls_through = false;
		return 0;
	case RELOC_JCC:
		if (!rel32(at + o->len + 6, p->target, &rel))
			return refuse(why, why_len, p->addr, "its branch target is too far from the trampoline");
		PUT(o, 0x0f, (uint8_t)(0x80 | (p->cond & 0xf)));
		put_u32(o, (uint32_t)rel);
		return 0;
	default: {
		uint8_t insn[RELOC_INSN_MAX];
		memcpy(insn, p->orig, p->len);
		if (jp->disp_at[k] >= 0) {
			int32_t disp;
			memcpy(&disp, insn + jp->disp_at[k], 4);
			uint64_t target = p->addr + p->len + (uint64_t)(int64_t)disp;
			if (!rel32(at + o->len + p->len, target, &rel))
				return refuse(why, why_len, p->addr, "its rip-relative operand is too far "
					      "from the trampoline");
			memcpy(insn + jp->disp_at[k], &rel, 4);
		}
		put(o, insn, p->len);
		*falls_through = p->how != RELOC_JMP_IND && p->how != RELOC_COPY_END;
		return 0;
	}
	}
}

int jump_tramp_write(const struct jump_plan *jp, const struct jump_data *d, uint64_t at,
		     uint8_t *buf, size_t cap, struct jump_tramp *t, char *why, size_t why_len)
{
	struct out o = { .buf = buf, .cap = cap };
	memset(t, 0, sizeof(*t));
	if (jp->exit && d->lat_col < 0)
		return refuse(why, why_len, jp->addr, "an exit whose calls are not timed");
	t->timed = d->lat_col >= 0;
	bool falls_through = true;
	unsigned before = jp->exit ? jp->ninsns - 1u : jp->ninsns; /* displaced before the exit */
	if (jp->entry)
		put_count(&o, JUMP_PART_ENTRY, d, t);
	for (unsigned k = 0; k < before; k++)
		if (put_displaced(&o, jp, k, at, t, &falls_through, why, why_len))
			return -ENOTSUP;
	if (jp->exit)
		put_count(&o, JUMP_PART_EXIT, d, t);
	for (unsigned k = before; k < jp->ninsns; k++)
		if (put_displaced(&o, jp, k, at, t, &falls_through, why, why_len))
			return -ENOTSUP;
	if (falls_through) {
		int32_t rel;
		if (!rel32(at + o.len + 5, jp->addr + jp->len, &rel))
			return refuse(why, why_len, jp->addr, "the site is too far from the trampoline");
		put_u8(&o, 0xe9);
		put_u32(&o, (uint32_t)rel);
	}
	if (o.full) {
		refuse(why, why_len, jp->addr, "its trampoline needs more than %zu bytes", cap);
		return -ENOSPC;
	}
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
	if (off == t->off[0])
		return JUMP_AT_FIRST;
	for (int i = 0; i < JUMP_PARTS; i++)
		if (off >= t->part[i].start && off < t->part[i].end)
			return JUMP_COUNTING;
	return JUMP_DISPLACED;
}

int jump_miss_part(const struct jump_tramp *t, uint64_t at, uint64_t addr)
{
	for (int i = 0; i < JUMP_PARTS; i++)
		if (t->part[i].start < t->part[i].end && addr == at + t->part[i].trap)
			return i;
	return -1;
}
