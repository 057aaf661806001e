/* The traced processes: one record per address space, with its memory, its scratch, its
 * sites and its jump probes' tracer-side state; a new image after an exec. */
#include "engine.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct process *process_new(struct tracer *t, pid_t pid)
{
	struct process *p = calloc(1, sizeof(*p));
	if (!p)
		abort();
	p->pid = pid;
	p->mem = mem_open(pid);
	p->resolved = calloc((size_t)t->nspecs + 1, sizeof(*p->resolved));
	p->space = ptss_space_ptrace_new(pid, pid);
	p->scratch = scratch_new(t, p->space);
	if (p->mem < 0 || !p->resolved || !p->scratch) {
		process_free(t, p);
		return NULL;
	}
	p->next = t->procs;
	t->procs = p;
	return p;
}

void process_free(struct tracer *t, struct process *p)
{
	for (struct process **pp = &t->procs; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	for (size_t i = 0; i < t->tcap; i++) /* threads still listed: forget them */
		if (t->threads[i] && t->threads[i]->proc == p) {
			thread_remove(t, t->threads[i]);
			i = (size_t)-1; /* the table moved under us: start over */
		}
	process_drop_jumps(t, p);
	if (p->scratch) {
		count_scratch(t, p->scratch);
		ptss_exec_exit(p->scratch); /* gone with its image: nothing to unmap */
		ptss_proc_free(p->scratch);
	}
	ptss_space_free(p->space);
	sites_clear(p);
	free(p->resolved);
	if (p->mem >= 0)
		close(p->mem);
	free(p);
}

/* The process exec'd: the old life's scratch and threads are gone with the old memory. */
int process_new_image(struct tracer *t, struct process *p)
{
	ptss_exec_exit(p->scratch); /* every other thread is gone: their entries with it */
	for (size_t i = 0; i < t->tcap; i++)
		if (t->threads[i] && t->threads[i]->proc == p) {
			thread_remove(t, t->threads[i]);
			i = (size_t)-1;
		}
	process_drop_jumps(t, p);
	count_scratch(t, p->scratch);
	ptss_proc_free(p->scratch);
	ptss_space_ptrace_reset(p->space);
	p->scratch = scratch_new(t, p->space);
	close(p->mem);
	p->mem = mem_open(p->pid);
	sites_clear(p);
	memset(p->resolved, 0, (size_t)t->nspecs * sizeof(*p->resolved));
	p->entry_site = p->notice_site = 0;
	return 0;
}

/* The tracer's side of p's jump probes: the alive word let go, the view unmapped, the
 * areas' handles freed. The target's side is gone (exec, exit) or unmapped (jumps.c). */
void process_drop_jumps(struct tracer *t, struct process *p)
{
	struct jumps *j = p->jumps;
	if (!j)
		return;
	for (size_t i = 0; i < t->tcap; i++)
		if (t->threads[i] && t->threads[i]->proc == p) {
			count_fold_jumps(t, t->threads[i]);
			t->threads[i]->jump_counts = NULL;
			t->threads[i]->call_block = NULL;
			t->threads[i]->keyed = false;
		}
	pthread_mutex_unlock(j->alive);
	pthread_mutex_destroy(j->alive);
	munmap(j->view, j->size);
	for (size_t a = 0; a < j->nareas; a++) {
		if (j->areas[a].code) {
			ptss_exec_exit(j->areas[a].code);
			ptss_proc_free(j->areas[a].code);
		}
		ptss_space_free(j->areas[a].space);
	}
	free(j->areas);
	free(j->rows);
	free(j);
	p->jumps = NULL;
}
