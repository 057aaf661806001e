/*
 * Optimized sites: where a site allows it (x86/jump.c decides), the int3 gives way to a
 * jmp into a trampoline that counts the hit in the target's own memory and runs the
 * displaced instructions: no signal, no stop, no system call per hit. Counts live in a
 * data area that the tracer's view maps too: it reads them live, without stopping the
 * target. Which row a thread counts in: keys.c.
 *
 * A miss (a thread not keyed yet) traps to the tracer only while the tracer lives: the
 * alive word is a robust futex the tracer holds, cleared by the kernel when the tracer
 * dies, even of SIGKILL. Then misses count nothing and the target runs on, its
 * trampolines still mapped.
 *
 * Patching happens with every thread of the process stopped, none of them inside the
 * bytes to replace (past their first): a thread there keeps the site an int3 until the
 * next placement. No thread is ever left inside a trampoline: before a signal is
 * delivered, and at detach, it is single-stepped out or put back at the site
 * (unwind.c), so no signal frame holds a trampoline's address and the trampolines are
 * unmapped at detach.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <elf.h>
#include <sys/ptrace.h>

#ifndef HWCAP2_FSGSBASE
#define HWCAP2_FSGSBASE (1 << 1)
#endif

enum {
	TRAMP_SIZE = JUMP_TRAMP_MAX, /* bytes per trampoline: a ptss entry of the area */
	AREA_SIZE = 1 << 20, /* an area's reservation */
};
/* How far from a site its trampoline's area may start: the whole area within rel32. */
#define REACH ((1ull << 31) - 2 * AREA_SIZE)

/* ---- optimizing -------------------------------------------------------------------- */

/* Why s is an int3 for now, kept in its row (an exit's: its function's) from the first
 * site that gave a reason. */
static void say_trap(struct site *s, const char *why)
{
	struct row *r = s->row ? s->row : s->exit_row;
	if (r && !r->trap_why)
		r->trap_why = strdup(why);
}

/* s stays an int3 for good. */
static void keep_trap(struct site *s, const char *why)
{
	s->jump_tried = true;
	say_trap(s, why);
}

static struct jumps *jumps_create(struct process *p, struct thread *by, bool timed, char *why, size_t len)
{
	struct jumps *j = calloc(1, sizeof(*j));
	if (!j)
		abort();
	ptss_space_ptrace_use_thread(p->space, by->tid);
	void *view;
	j->timed = timed;
	j->size = timed ? JUMPS_TIMED_DATA_SIZE : JUMPS_DATA_SIZE; /* pages come as touched */
	int err = ptss_space_ptrace_map_data(p->space, j->size, &j->data, &view);
	if (err) {
		const char *refusal = ptss_space_ptrace_refusal(p->space);
		snprintf(why, len, "cannot map the counters: %s", refusal ? refusal : strerror(-err));
		free(j);
		return NULL;
	}
	j->view = view;
	/* The alive word: held by this thread for the tracer's life, let go by the kernel if
	 * the tracer dies (a robust mutex whose owner died: its tid bits cleared). */
	pthread_mutex_t *m = (pthread_mutex_t *)(j->view + JUMPS_ALIVE_OFF);
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(m, &a);
	pthread_mutexattr_destroy(&a);
	pthread_mutex_lock(m);
	j->alive = m;
	return j;
}

/* A new area of trampolines placed within reach of addr. */
static struct jump_area *area_new(struct process *p, struct thread *by, uint64_t addr, char *why, size_t len)
{
	struct jumps *j = p->jumps;
	struct ptss_opts o = PTSS_OPTS(.entry_size = TRAMP_SIZE, .reserve_size = AREA_SIZE);
	ptss_space *space = ptss_space_ptrace_new(p->pid, by->tid);
	ptss_proc *code = space ? ptss_proc_new(space, &o) : NULL;
	if (!code) {
		snprintf(why, len, "cannot make a trampoline area: %s", strerror(errno));
		ptss_space_free(space);
		return NULL;
	}
	ptss_space_ptrace_near(space, addr > REACH + 0x10000 ? addr - REACH : 0x10000, addr + REACH);
	j->areas = realloc(j->areas, (j->nareas + 1) * sizeof(*j->areas));
	if (!j->areas)
		abort();
	j->areas[j->nareas] = (struct jump_area){ space, code };
	return &j->areas[j->nareas++];
}

/* s's trampoline in an area (an existing one within reach, else a new one): written in
 * the area, not yet jumped to. 0, or -errno with why. */
static int tramp_place(struct process *p, struct thread *by, struct site *s, const struct jump_data *d,
		       char *why, size_t len)
{
	struct jumps *j = p->jumps;
	for (size_t a = 0;; a++) {
		bool fresh = a == j->nareas;
		if (fresh && !area_new(p, by, s->addr, why, len))
			return -ENOMEM;
		struct jump_area *area = &j->areas[a];
		ptss_space_ptrace_use_thread(area->space, by->tid);
		ptss_entry *e = ptss_claim(area->code);
		if (!e && !fresh)
			continue;
		if (!e) {
			const char *refusal = ptss_space_ptrace_refusal(area->space);
			snprintf(why, len, "no room for a trampoline within 2 GiB of the site: %s",
				 refusal ? refusal : strerror(errno));
			return -ENOMEM;
		}
		uint64_t at = ptss_entry_addr(area->code, e);
		uint8_t patch[JUMP_COVER_MAX];
		int err = jump_patch_bytes(&s->jump, at, patch);
		if (!err)
			err = jump_tramp_write(&s->jump, d, at, ptss_entry_view(area->code, e), TRAMP_SIZE,
					       &s->tramp, why, len);
		else
			snprintf(why, len, "its trampoline is out of reach of a jump");
		if (!err) {
			s->tramp_addr = at;
			return 0;
		}
		ptss_release(area->code, e);
		if (fresh)
			return err;
	}
}

/* The function's code around s, read from the target, planned by jump_plan_make (an
 * entry or offset) or jump_plan_exit (a ret or tail jump of it). */
static int plan_site(struct process *p, struct site *s, unsigned cover, char *why, size_t len)
{
	const struct site_fn *fn = s->exit_row ? &s->exit_fn : &s->fn;
	struct jump_code parts[2];
	uint8_t *bytes;
	size_t n = sites_read_function(p, fn, parts, &bytes);
	int err = -ENOTSUP;
	if (!n || s->addr < fn->addr || s->addr >= fn->addr + fn->size) {
		snprintf(why, len, "the function's size is unknown, or its code cannot be read");
	} else if (s->exit_row) {
		err = jump_plan_exit(&s->jump, s->addr, parts, n, why, len);
	} else {
		const uint8_t *code = parts[0].bytes + (s->addr - fn->addr);
		err = jump_plan_make(&s->jump, s->addr, code, fn->addr + fn->size - s->addr, cover, parts, n,
				     why, len);
	}
	if (!err)
		memcpy(s->saved, parts[0].bytes + (s->jump.addr - fn->addr), s->jump.len);
	free(bytes);
	return err;
}

/* Where p's threads are, or resume when their entry is done: none may be inside a patch. */
static uint64_t *thread_places(const struct tracer *t, const struct process *p, size_t *n)
{
	uint64_t *at = malloc(2 * ((size_t)p->nthreads + 1) * sizeof(*at));
	if (!at)
		abort();
	*n = 0;
	for (size_t i = 0; i < t->tcap; i++) {
		const struct thread *th = t->threads[i];
		struct user_regs_struct regs;
		if (!th || th->proc != p || *n + 2 > 2 * ((size_t)p->nthreads + 1) ||
		    ptrace(PTRACE_GETREGS, th->tid, 0, &regs))
			continue;
		at[(*n)++] = regs.rip;
		if (th->in_entry)
			at[(*n)++] = th->hit.resume;
	}
	return at;
}

/*
 * A timed entry planned (s->jump) close before an exit of its function, so close that the
 * exit's own jmp would overlap it (a small function, a thunk): the plan stretched over
 * that exit, which the trampoline's exit part then times. That exit's site, or NULL.
 */
static struct site *stretch_over_exit(struct process *p, struct site *s, int lat_col)
{
	uint64_t end = s->jump.addr + s->jump.len;
	struct site *o = NULL;
	for (size_t i = 0; lat_col >= 0 && s->row && !o && i < p->nsites; i++)
		if (p->sites[i].exit_row == s->row && !p->sites[i].row && !p->sites[i].jumped &&
		    p->sites[i].addr > s->addr && p->sites[i].addr < end + JUMP_PATCH_LEN - 1)
			o = &p->sites[i];
	if (!o || o->addr + o->plan.len - s->addr > JUMP_COVER_MAX)
		return NULL;
	struct jump_plan planned = s->jump;
	uint8_t saved[JUMP_COVER_MAX];
	memcpy(saved, s->saved, sizeof(saved));
	char why[256];
	if (plan_site(p, s, (unsigned)(o->addr + o->plan.len - s->addr), why, sizeof(why)) ||
	    s->jump.insn[s->jump.ninsns - 1].addr != o->addr) {
		s->jump = planned; /* the exit stays an int3 */
		memcpy(s->saved, saved, sizeof(saved));
		return NULL;
	}
	s->jump.exit = true;
	return o;
}

/* Another site inside the bytes s's jmp would cover (but `covered`), or a jmp over them:
 * or NULL. */
static const struct site *site_in_the_way(const struct process *p, const struct site *s,
					  const struct site *covered)
{
	uint64_t lo = s->jump.addr, hi = lo + s->jump.len;
	for (size_t i = 0; i < p->nsites; i++) {
		const struct site *o = &p->sites[i];
		if (o != s && o != covered && ((o->addr >= lo && o->addr < hi) ||
			       (o->jumped && o->jump.addr < hi && lo < o->jump.addr + o->jump.len)))
			return o;
	}
	return NULL;
}

/* The function whose calls s's trampoline would time: an exit's, or a timed entry's. */
static struct row *timed_row(const struct tracer *t, const struct site *s)
{
	if (s->exit_row)
		return s->exit_row;
	return t->opts.latency && s->row && s->addr == s->fn.addr ? s->row : NULL;
}

static void optimize_site(struct tracer *t, struct process *p, struct thread *by, struct site *s,
			  const uint64_t *places, size_t nplaces)
{
	char why[256];
	struct jumps *j = p->jumps;
	/* Calls timed: an entry pushes a frame, an exit times the call (timed.c). */
	struct row *timed = timed_row(t, s);
	int lat_col = timed ? timed_col(j, timed, false) : -1;
	if (s->exit_row && s->row) {
		keep_trap(s, "an entry that is also an exit of its function (a thunk)");
		return;
	}
	if (timed && lat_col < 0) {
		snprintf(why, sizeof(why), "calls are timed by the tracer: more than %d functions timed "
			 "in one process", JUMPS_LAT_COLS);
		keep_trap(s, why);
		return;
	}
	if (plan_site(p, s, JUMP_PATCH_LEN, why, sizeof(why))) {
		keep_trap(s, why);
		return;
	}
	struct site *covered = stretch_over_exit(p, s, lat_col);
	const struct site *o = site_in_the_way(p, s, covered);
	if (o) {
		snprintf(why, sizeof(why), "0x%llx: another probe at 0x%llx, inside the %u bytes a jump "
			 "would replace", (unsigned long long)s->addr, (unsigned long long)o->addr, s->jump.len);
		keep_trap(s, why);
		return;
	}
	for (size_t i = 0; i < nplaces; i++)
		if (places[i] > s->jump.addr && places[i] < s->jump.addr + s->jump.len) {
			/* Not now: tried again at the next placement (a dlopen, the entry). */
			snprintf(why, sizeof(why), "0x%llx: a thread was inside the %u bytes a jump would "
				 "replace", (unsigned long long)s->jump.addr, s->jump.len);
			say_trap(s, why);
			return;
		}
	if (!s->exit_row && j->ncols == JUMPS_MAX_COLS) {
		snprintf(why, sizeof(why), "more than %d jump probes in one process", JUMPS_MAX_COLS);
		keep_trap(s, why);
		return;
	}
	struct jump_data d = { .base = j->data, .alive_off = JUMPS_ALIVE_OFF,
			       .table_off = JUMPS_TABLE_OFF, .table_bits = JUMPS_TABLE_BITS,
			       .counts_off = JUMPS_COUNTS_OFF, .row_bytes = JUMPS_ROW_BYTES,
			       .col = j->ncols, .lat_col = lat_col, .calls_off = JUMPS_CALLS_OFF,
			       .call_bytes = JUMPS_CALL_BYTES };
	uint8_t patch[JUMP_COVER_MAX];
	if (tramp_place(p, by, s, &d, why, sizeof(why))) {
		keep_trap(s, why);
		return;
	}
	jump_patch_bytes(&s->jump, s->tramp_addr, patch);
	if (mem_write(p, s->jump.addr, patch, s->jump.len)) {
		keep_trap(s, "cannot write the jump");
		return;
	}
	s->jumped = s->jump_tried = true;
	if (covered)
		covered->covered = covered->jump_tried = true;
	if (s->exit_row)
		return; /* no counter: an exit counts its function's returns in the call block */
	j->rows = realloc(j->rows, (j->ncols + 1) * sizeof(*j->rows));
	if (!j->rows)
		abort();
	j->rows[j->ncols] = s->row;
	s->col = j->ncols++;
	s->row->jumped = true;
}

void jumps_optimize(struct tracer *t, struct process *p, struct thread *by, bool all_stopped)
{
	bool any = false;
	for (size_t i = 0; i < p->nsites; i++)
		any |= !p->sites[i].internal && !p->sites[i].jump_tried;
	if (!any)
		return;
	char why[256] = "";
	uint64_t hwcap2 = 0; /* the target's: what its kernel lets it run */
	if (t->opts.no_optimize)
		snprintf(why, sizeof(why), "jump probes are off (no_optimize)");
	else if (t->opts.no_scratch)
		snprintf(why, sizeof(why), "no scratch at all (no_scratch)");
	else if (t->opts.latency && timed_possible(t, why, sizeof(why)))
		; /* why is said: every call stops, and the tracer times it */
	else if (auxv_value(p->pid, AT_HWCAP2, &hwcap2) || !(hwcap2 & HWCAP2_FSGSBASE))
		snprintf(why, sizeof(why), "this CPU or kernel has no rdfsbase (FSGSBASE)");
	else if (!p->jumps)
		p->jumps = jumps_create(p, by, t->opts.latency, why, sizeof(why));
	if (why[0]) {
		for (size_t i = 0; i < p->nsites; i++)
			if (!p->sites[i].internal && !p->sites[i].jump_tried)
				keep_trap(&p->sites[i], why);
		return;
	}
	bool held = !all_stopped && p->nthreads > 1;
	if (held)
		hold_others(t, by);
	/* Each timed function its column before any of its sites moves to a jmp: from then
	 * on its calls are on the thread's call block, whatever path they take. */
	for (size_t i = 0; i < p->nsites; i++)
		if (!p->sites[i].internal && !p->sites[i].jump_tried)
			timed_col(p->jumps, timed_row(t, &p->sites[i]), true);
	size_t nplaces;
	uint64_t *places = thread_places(t, p, &nplaces);
	for (size_t i = 0; i < p->nsites; i++)
		if (!p->sites[i].internal && !p->sites[i].jump_tried)
			optimize_site(t, p, by, &p->sites[i], places, nplaces);
	free(places);
	/* Every thread keyed while it is stopped. */
	for (size_t i = 0; i < t->tcap; i++) {
		struct thread *th = t->threads[i];
		struct user_regs_struct regs;
		if (th && th->proc == p && !ptrace(PTRACE_GETREGS, th->tid, 0, &regs))
			jumps_thread_seen(t, th, regs.fs_base);
	}
	if (held)
		release_others(t, by);
}

/* ---- letting go -------------------------------------------------------------------- */

void jumps_disarm(struct tracer *t, struct process *p, struct thread *by)
{
	struct jumps *j = p->jumps;
	if (!j)
		return;
	for (size_t i = 0; i < p->nsites; i++) { /* the bytes back first: no hit after this */
		struct site *s = &p->sites[i];
		if (s->jumped)
			mem_write(p, s->jump.addr, s->saved, s->jump.len);
		s->jumped = false;
	}
	ptss_space_ptrace_use_thread(p->space, by->tid);
	if (ptss_space_ptrace_unmap_data(p->space, j->data, j->size, NULL))
		scratch_pages_left(t, p->pid, ptss_space_ptrace_refusal(p->space));
	for (size_t a = 0; a < j->nareas; a++) {
		ptss_space_ptrace_use_thread(j->areas[a].space, by->tid);
		ptss_proc_free(j->areas[a].code); /* unmaps the area: one injection */
		j->areas[a].code = NULL;
	}
	process_drop_jumps(t, p); /* folds the counts from the tracer's view, then drops it */
}

void jumps_fork(struct tracer *t, struct process *p, pid_t tid, struct process *child)
{
	struct jumps *j = p->jumps;
	if (!j)
		return;
	if (child) { /* followed: its sites int3s again, optimized anew in an area of its own */
		uint8_t int3 = 0xcc;
		for (size_t i = 0; i < child->nsites; i++) {
			struct site *s = &child->sites[i];
			if ((s->jumped && mem_write(child, s->jump.addr, s->saved, s->jump.len)) ||
			    ((s->jumped || s->covered) && mem_write(child, s->addr, &int3, 1)))
				say_error(t, "child %d: cannot restore the probe at 0x%llx", (int)tid,
					  (unsigned long long)s->addr);
			s->jumped = s->jump_tried = s->covered = false;
		}
	}
	ptss_space *cs = ptss_space_ptrace_new(tid, tid);
	bool left = !cs || ptss_space_ptrace_unmap_data(cs, j->data, j->size, NULL);
	for (size_t a = 0; cs && a < j->nareas; a++)
		left |= ptss_fork(j->areas[a].code, cs) != 0;
	if (left)
		scratch_pages_left(t, tid, cs ? ptss_space_ptrace_refusal(cs) : NULL);
	ptss_space_free(cs);
}
