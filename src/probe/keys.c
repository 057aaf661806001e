/*
 * The keys of jump probes: which row of counters a thread's trampoline hits count in.
 * A thread's counters are the row of the data area that its ptss entry's index names:
 * the entry is its per-thread state, claimed when the thread appears, released when it
 * exits. A trampoline finds the row from the thread's fs base (rdfsbase) through a table
 * that only the tracer writes, one atomic word per key: (slot << 48) | fs_base. The
 * tracer keys a thread whenever it sees it stopped (setup, clone, a miss), so the table
 * follows fs bases that change (Go sets its own after clone). Threads that share an fs
 * base get a word that always misses; a miss traps to the tracer (the int3 of the
 * trampoline), which keys the thread and counts that hit itself (jumps_miss). Only the
 * thread itself writes its row: no cache line bounces between CPUs.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <stdint.h>

#define KEY_MASK ((1ull << 48) - 1)
#define TOMBSTONE (((uint64_t)JUMP_SLOT_SHARED << 48) | 1) /* matches no key, never empty */
#define NO_SLOT UINT32_MAX

static uint64_t *table(const struct jumps *j)
{
	return (uint64_t *)(j->view + JUMPS_TABLE_OFF);
}

static void word_set(uint64_t *w, uint64_t v)
{
	__atomic_store_n(w, v, __ATOMIC_RELEASE); /* one store: a reader sees old or new */
}

static long table_find(const struct jumps *j, uint64_t key)
{
	const uint32_t mask = (1u << JUMPS_TABLE_BITS) - 1;
	uint32_t i = jump_hash(key, JUMPS_TABLE_BITS);
	for (uint32_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
		uint64_t w = table(j)[i];
		if (!w)
			return -1;
		if ((w & KEY_MASK) == key)
			return i;
	}
	return -1;
}

/* Sets key's word (slot, or JUMP_SLOT_SHARED); false when the table is too full. */
static bool table_put(struct jumps *j, uint64_t key, uint32_t slot)
{
	const uint32_t mask = (1u << JUMPS_TABLE_BITS) - 1;
	uint64_t word = key | (uint64_t)slot << 48;
	long at = table_find(j, key);
	if (at >= 0) {
		word_set(&table(j)[at], word);
		return true;
	}
	for (uint32_t i = jump_hash(key, JUMPS_TABLE_BITS), n = 0; n <= mask; n++, i = (i + 1) & mask) {
		uint64_t w = table(j)[i];
		if (w == TOMBSTONE || (!w && j->words < (3u << JUMPS_TABLE_BITS) / 4)) {
			j->words += !w;
			word_set(&table(j)[i], word);
			return true;
		}
		if (!w)
			return false;
	}
	return false;
}

static void table_remove(struct jumps *j, uint64_t key)
{
	const uint32_t mask = (1u << JUMPS_TABLE_BITS) - 1;
	long at = table_find(j, key);
	if (at < 0)
		return;
	uint64_t *w = table(j);
	word_set(&w[at], TOMBSTONE);
	/* Tombstones just before an empty word end no one's search: empty them. */
	for (uint32_t i = (uint32_t)at; w[i] == TOMBSTONE && !w[(i + 1) & mask]; i = (i - 1) & mask) {
		word_set(&w[i], 0);
		j->words--;
	}
}

/* ---- threads ----------------------------------------------------------------------- */

static uint32_t slot_of(const struct thread *th)
{
	if (!th->entry || !th->proc->scratch)
		return NO_SLOT;
	uint32_t i = ptss_entry_index(th->proc->scratch, th->entry);
	return i < JUMPS_MAX_SLOTS ? i : NO_SLOT;
}

static bool usable_key(uint64_t fs_base)
{
	return fs_base >= 4096 && fs_base <= KEY_MASK;
}

/* The keyed threads of th's process with th's fs base, th left out: how many, and one. */
static size_t sharers(const struct tracer *t, const struct thread *th, struct thread **one)
{
	size_t n = 0;
	for (size_t i = 0; i < t->tcap; i++) {
		struct thread *u = t->threads[i];
		if (u && u != th && u->proc == th->proc && u->keyed && u->fs_base == th->fs_base) {
			n++;
			*one = u;
		}
	}
	return n;
}

/* th's key is no longer th's: the word goes, or to the one thread left with it. */
static void unkey(struct tracer *t, struct thread *th)
{
	struct jumps *j = th->proc->jumps;
	struct thread *u = NULL;
	size_t n = sharers(t, th, &u);
	th->keyed = false;
	if (n == 0)
		table_remove(j, th->fs_base);
	else if (n == 1)
		table_put(j, u->fs_base, slot_of(u) == NO_SLOT ? JUMP_SLOT_SHARED : slot_of(u));
}

static void key(struct tracer *t, struct thread *th)
{
	struct jumps *j = th->proc->jumps;
	struct thread *u = NULL;
	uint32_t slot = slot_of(th);
	if (!usable_key(th->fs_base))
		return;
	if (sharers(t, th, &u) || slot == NO_SLOT)
		slot = JUMP_SLOT_SHARED;
	th->keyed = table_put(j, th->fs_base, slot);
}

void jumps_thread_seen(struct tracer *t, struct thread *th, uint64_t fs_base)
{
	struct jumps *j = th->proc->jumps;
	if (j && !th->jump_counts && slot_of(th) != NO_SLOT) {
		th->jump_counts = (uint64_t *)(j->view + JUMPS_COUNTS_OFF + (size_t)slot_of(th) * JUMPS_ROW_BYTES);
		if (j->timed)
			th->call_block = j->view + JUMPS_CALLS_OFF + (size_t)slot_of(th) * JUMPS_CALL_BYTES;
	}
	if (j && th->keyed && th->fs_base == fs_base)
		return;
	if (j && th->keyed)
		unkey(t, th);
	th->fs_base = fs_base;
	if (j)
		key(t, th);
}

void jumps_thread_gone(struct tracer *t, struct thread *th)
{
	if (th->proc->jumps && th->keyed)
		unkey(t, th);
}

void jumps_miss(struct tracer *t, struct thread *th, struct user_regs_struct *regs, struct site *s)
{
	jumps_thread_seen(t, th, regs->fs_base);
	uint64_t rsp = regs->rsp + s->tramp.site_rsp; /* the trampoline saved registers below it */
	if (jump_miss_part(&s->tramp, s->tramp_addr, regs->rip - 1) == JUMP_PART_EXIT) {
		const struct reloc_plan *exit = &s->jump.insn[s->jump.ninsns - 1];
		calls_return(t, th, s->exit_row ? s->exit_row : s->row, rsp, 0, exit->how == RELOC_JMP);
		return;
	}
	count_hit(t, th, s->row, 1);
	if (s->tramp.timed)
		calls_enter(t, th, s->row, &(struct user_regs_struct){ .rsp = rsp });
}

