/*
 * entry: the relocator's hit half — writing a thread's entry and its registers for one
 * hit (reloc_hit_*), and mapping a thread stopped inside its entry back to the original
 * code (reloc_unwind). Works from the plan that plan.c made; no decoder here. Entry
 * layouts: layout.h.
 */
#include "layout.h"
#include "relocate.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* ---- hits -------------------------------------------------------------------------- */

static unsigned long long *reg_slot(struct user_regs_struct *r, unsigned n)
{
	switch (n) {
	case 0: return &r->rax;
	case 1: return &r->rcx;
	case 2: return &r->rdx;
	case 3: return &r->rbx;
	case 4: return &r->rsp;
	case 5: return &r->rbp;
	case 6: return &r->rsi;
	case 7: return &r->rdi;
	case 8: return &r->r8;
	case 9: return &r->r9;
	case 10: return &r->r10;
	case 11: return &r->r11;
	case 12: return &r->r12;
	case 13: return &r->r13;
	case 14: return &r->r14;
	default: return &r->r15;
	}
}

static uint64_t reg_get(const struct user_regs_struct *r, unsigned n)
{
	return *reg_slot((struct user_regs_struct *)r, n);
}

enum { CF = 1u << 0, PF = 1u << 2, ZF = 1u << 6, SF = 1u << 7, OF = 1u << 11 };

/* Condition cc of jcc/setcc/cmovcc: pairs of (c, !c). */
static bool cond_holds(unsigned cc, uint64_t fl)
{
	bool cf = fl & CF, pf = fl & PF, zf = fl & ZF, sf = fl & SF, of = fl & OF;
	bool c;
	switch (cc >> 1) {
	case 0: c = of; break;
	case 1: c = cf; break;
	case 2: c = zf; break;
	case 3: c = cf || zf; break;
	case 4: c = sf; break;
	case 5: c = pf; break;
	case 6: c = sf != of; break;
	default: c = zf || sf != of; break;
	}
	return c != (cc & 1);
}

bool reloc_hit_load_addr(const struct reloc_plan *plan, const struct user_regs_struct *regs,
			 uint64_t *addr)
{
	if ((plan->how != RELOC_JMP_IND && plan->how != RELOC_CALL_IND) || plan->reg != REG_NONE)
		return false;
	uint64_t a = (uint64_t)plan->disp;
	if (plan->base == REG_RIP)
		a += plan->addr + plan->len;
	else if (plan->base != REG_NONE)
		a += reg_get(regs, plan->base);
	if (plan->index != REG_NONE)
		a += reg_get(regs, plan->index) * plan->scale;
	if (plan->seg == 'f')
		a += regs->fs_base;
	else if (plan->seg == 'g')
		a += regs->gs_base;
	*addr = a;
	return true;
}

struct emit {
	uint8_t b[RELOC_ENTRY_MAX];
	size_t n;
};

static void put(struct emit *e, const void *p, size_t n)
{
	memcpy(e->b + e->n, p, n);
	e->n += n;
}

static void put_u32(struct emit *e, uint32_t v) { put(e, &v, 4); } /* x86: little-endian */
static void put_u64(struct emit *e, uint64_t v) { put(e, &v, 8); }

static void put_jmp_abs(struct emit *e, uint64_t target)
{
	static const uint8_t jmp[] = { 0xff, 0x25, 0, 0, 0, 0 }; /* jmp [rip+0] */
	put(e, jmp, sizeof(jmp));
	put_u64(e, target);
}

static void put_movabs(struct emit *e, unsigned reg, uint64_t v)
{
	uint8_t op[2] = { (uint8_t)(0x48 | (reg >> 3)), (uint8_t)(0xb8 | (reg & 7)) };
	put(e, op, 2);
	put_u64(e, v);
}

/* What a hit wrote: its layout, the first instruction's length, where the entry ends up. */
static void set_layout(struct reloc_hit *h, enum layout layout, size_t head_len, uint64_t resume)
{
	h->layout = (uint8_t)layout;
	h->head_len = (uint8_t)head_len;
	h->resume = resume;
}

/* The call's push, made of what writes exactly its 8 bytes: push imm32 (sign-extended),
 * then the high half over it. */
static void put_call(struct emit *e, struct reloc_hit *h, uint64_t ret, uint64_t target)
{
	static const uint8_t mov_hi[] = { 0xc7, 0x44, 0x24, 0x04 }; /* mov dword [rsp+4], imm32 */
	uint8_t push = 0x68;
	put(e, &push, 1);
	put_u32(e, (uint32_t)ret);
	put(e, mov_hi, sizeof(mov_hi));
	put_u32(e, (uint32_t)(ret >> 32));
	put_jmp_abs(e, target);
	set_layout(h, LAYOUT_CALL, CALL_PUSH_LEN, target);
}

int reloc_hit_prepare(const struct reloc_plan *plan, uint64_t entry_addr, void *entry,
		      size_t entry_size, struct user_regs_struct *regs, const uint64_t *loaded,
		      struct reloc_hit *hit)
{
	if (!plan || !regs || !hit || regs->rip != plan->addr || !plan->len)
		return -EINVAL;

	struct user_regs_struct r = *regs;
	struct reloc_hit h = { .layout = LAYOUT_NONE };
	struct emit e = { .n = 0 };
	uint64_t next = plan->addr + plan->len;
	uint64_t call_target = plan->target;
	bool through_mem = plan->reg == REG_NONE;

	switch ((enum reloc_how)plan->how) {
	case RELOC_NOP:
		r.rip = next;
		break;
	case RELOC_JMP:
		r.rip = plan->target;
		break;
	case RELOC_JCC:
		r.rip = cond_holds(plan->cond, r.eflags) ? plan->target : next;
		break;
	case RELOC_JRCXZ: {
		uint64_t count = plan->cond ? (uint32_t)r.rcx : r.rcx;
		r.rip = count == 0 ? plan->target : next;
		break;
	}
	case RELOC_LOOP: {
		bool zf = r.eflags & ZF;
		r.rcx -= 1; /* flags untouched */
		bool take = r.rcx != 0 && (plan->cond == 0 || (plan->cond == 1) == zf);
		r.rip = take ? plan->target : next;
		break;
	}
	case RELOC_COPY:
		put(&e, plan->orig, plan->len);
		put_jmp_abs(&e, next);
		set_layout(&h, LAYOUT_COPY, plan->len, next);
		break;
	case RELOC_COPY_END:
		put(&e, plan->orig, plan->len);
		set_layout(&h, LAYOUT_COPY_END, plan->len, 0);
		break;
	case RELOC_RIPREL:
		h.saved = reg_get(&r, plan->scratch);
		put(&e, plan->code, plan->code_len);
		put_movabs(&e, plan->scratch, h.saved);
		put_jmp_abs(&e, next);
		*reg_slot(&r, plan->scratch) = next; /* scratch + disp = the original target */
		set_layout(&h, LAYOUT_RIPREL, plan->code_len, next);
		break;
	case RELOC_JMP_IND:
	case RELOC_CALL_IND:
		if (!through_mem) {
			call_target = reg_get(&r, plan->reg);
		} else if (loaded) {
			call_target = *loaded;
		} else {
			/* The tracer could not read the pointer: let the thread read it. */
			h.saved = reg_get(&r, plan->scratch);
			put(&e, plan->code, plan->code_len);
			put_movabs(&e, plan->scratch, h.saved);
			put_jmp_abs(&e, plan->addr);
			if (plan->base == REG_RIP)
				*reg_slot(&r, plan->scratch) = next;
			set_layout(&h, LAYOUT_RETRY, plan->code_len, plan->addr);
			break;
		}
		if (plan->how == RELOC_JMP_IND)
			r.rip = call_target;
		else
			put_call(&e, &h, next, call_target);
		break;
	case RELOC_CALL:
		put_call(&e, &h, next, call_target);
		break;
	default:
		return -EINVAL;
	}

	if (e.n) {
		if (e.n > entry_size)
			return -ENOSPC;
		if (!entry)
			return -EINVAL;
		memcpy(entry, e.b, e.n);
		r.rip = entry_addr;
	}
	h.entry_len = (uint8_t)e.n;
	*regs = r;
	*hit = h;
	return 0;
}

bool reloc_hit_returns_to_probe(const struct reloc_hit *hit)
{
	return hit->layout == LAYOUT_RETRY;
}

int reloc_unwind(const struct reloc_plan *plan, uint64_t entry_addr, const struct reloc_hit *hit,
		 struct user_regs_struct *regs, bool *rerun)
{
	if (!plan || !hit || !regs || !rerun)
		return -EINVAL;
	if (!hit->entry_len || regs->rip < entry_addr || regs->rip - entry_addr >= hit->entry_len)
		return -ENOENT;

	uint64_t off = regs->rip - entry_addr;
	uint64_t L = hit->head_len;
	bool before, scratch = false;

	switch ((enum layout)hit->layout) {
	case LAYOUT_COPY:
	case LAYOUT_COPY_END:
		if (off != 0 && (hit->layout == LAYOUT_COPY_END || off != L))
			return -EINVAL;
		before = off == 0;
		break;
	case LAYOUT_RIPREL:
		if (off != 0 && off != L && off != L + MOVABS_LEN)
			return -EINVAL;
		before = off == 0;
		scratch = true;
		break;
	case LAYOUT_RETRY:
		/* Only a load has run: always back to the probe, which reads again. */
		if (off != 0 && off != L && off != L + MOVABS_LEN)
			return -EINVAL;
		before = true;
		scratch = true;
		break;
	case LAYOUT_CALL:
		if (off != 0 && off != CALL_PUSH_LEN && off != CALL_JMP_OFF)
			return -EINVAL;
		/* Half a push is undone; the slot it wrote is the one the call writes anyway. */
		if (off == CALL_PUSH_LEN)
			regs->rsp += 8;
		before = off != CALL_JMP_OFF;
		break;
	default:
		return -EINVAL;
	}
	if (scratch)
		*reg_slot(regs, plan->scratch) = hit->saved;
	regs->rip = before ? plan->addr : hit->resume;
	*rerun = before;
	return 0;
}
