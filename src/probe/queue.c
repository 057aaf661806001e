/*
 * The stop queue: stops taken from waitpid by someone other than the loop and left for
 * it — stops deferred while a fallback held the process (oldest first), and first stops
 * of new tasks that came before their parent's clone/fork event. Tracer state, so that
 * two tracers never share one.
 */
#include "engine.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

static void push(struct pending **list, size_t *n, pid_t tid, int status)
{
	*list = realloc(*list, (*n + 1) * sizeof(**list));
	if (!*list)
		abort();
	(*list)[(*n)++] = (struct pending){ tid, status };
}

void queue_defer(struct tracer *t, pid_t tid, int status)
{
	push(&t->deferred, &t->ndeferred, tid, status);
}

bool queue_take(struct tracer *t, pid_t *tid, int *status)
{
	if (!t->ndeferred)
		return false;
	*tid = t->deferred[0].tid;
	*status = t->deferred[0].status;
	memmove(t->deferred, t->deferred + 1, --t->ndeferred * sizeof(*t->deferred));
	struct thread *th = thread_find(t, *tid);
	if (th && th->state.stop == TS_QUEUED)
		th->state.stop = TS_RUNNING;
	return true;
}

void queue_early(struct tracer *t, pid_t tid, int status)
{
	push(&t->early, &t->nearly, tid, status);
}

static bool take_early(struct tracer *t, pid_t tid)
{
	for (size_t i = 0; i < t->nearly; i++)
		if (t->early[i].tid == tid) {
			t->early[i] = t->early[--t->nearly];
			return true;
		}
	return false;
}

/* Waits for a new task's first stop. False if it died first. */
bool queue_wait_first_stop(struct tracer *t, pid_t tid)
{
	if (take_early(t, tid))
		return true;
	for (;;) {
		int status;
		if (waitpid(tid, &status, __WALL) < 0 || !WIFSTOPPED(status))
			return false;
		if ((status >> 16) == PTRACE_EVENT_STOP)
			return true;
		ptrace(PTRACE_CONT, tid, 0, 0);
	}
}

void queue_detach_early(struct tracer *t)
{
	while (t->nearly)
		ptrace(PTRACE_DETACH, t->early[--t->nearly].tid, 0, 0);
}

void queue_free(struct tracer *t)
{
	free(t->deferred);
	free(t->early);
	t->deferred = t->early = NULL;
	t->ndeferred = t->nearly = 0;
}
