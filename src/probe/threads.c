/* The traced threads: a table by tid (open addressing; no tombstones, the cluster is
 * re-placed on removal). A thread's state type and its transitions: engine.h. */
#include "engine.h"

#include <stdlib.h>

static size_t slot_of(const struct tracer *t, pid_t tid)
{
	return ((size_t)tid * 0x9E3779B1u) & (t->tcap - 1);
}

struct thread *thread_find(struct tracer *t, pid_t tid)
{
	if (!t->tcap)
		return NULL;
	for (size_t i = slot_of(t, tid);; i = (i + 1) & (t->tcap - 1)) {
		if (!t->threads[i])
			return NULL;
		if (t->threads[i]->tid == tid)
			return t->threads[i];
	}
}

static void table_put(struct tracer *t, struct thread *th)
{
	size_t i = slot_of(t, th->tid);
	while (t->threads[i])
		i = (i + 1) & (t->tcap - 1);
	t->threads[i] = th;
}

static void table_grow(struct tracer *t)
{
	size_t old = t->tcap;
	struct thread **prev = t->threads;
	t->tcap = old ? old * 2 : 64;
	t->threads = calloc(t->tcap, sizeof(*t->threads));
	if (!t->threads)
		abort();
	for (size_t i = 0; i < old; i++)
		if (prev[i])
			table_put(t, prev[i]);
	free(prev);
}

struct thread *thread_add(struct tracer *t, struct process *p, pid_t tid)
{
	struct thread *th = thread_find(t, tid);
	if (th)
		return th;
	if ((t->tcount + 1) * 2 > t->tcap)
		table_grow(t);
	th = calloc(1, sizeof(*th));
	if (!th)
		abort();
	th->tid = tid;
	th->proc = p;
	table_put(t, th);
	t->tcount++;
	p->nthreads++;
	return th;
}

/* The thread is gone (or let go): its entry goes back, its counts into the rows. */
void thread_remove(struct tracer *t, struct thread *th)
{
	size_t i = slot_of(t, th->tid);
	while (t->threads[i] != th)
		i = (i + 1) & (t->tcap - 1);
	t->threads[i] = NULL;
	/* Re-place the rest of the cluster so that lookups never stop at the hole. */
	for (size_t j = (i + 1) & (t->tcap - 1); t->threads[j]; j = (j + 1) & (t->tcap - 1)) {
		struct thread *moved = t->threads[j];
		t->threads[j] = NULL;
		table_put(t, moved);
	}
	t->tcount--;
	th->proc->nthreads--;
	if (th->entry && th->proc->scratch)
		ptss_release(th->proc->scratch, th->entry);
	count_fold_thread(t, th);
	calls_thread_gone(th);
	free(th);
}
