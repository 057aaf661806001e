/*
 * A tour of libptss in this process: threads come and go, each claims its own scratch
 * entry, writes a small function into it through the writable view, runs it through the
 * executable address, and releases the entry when it ends.
 *
 *   usage: scratch_demo [THREADS [WAVES]]     (default 8 threads, 4 waves)
 */
#include <ptss/ptss.h>
#include <ptss/space.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ptss_proc *proc;

/* `mov $value, %eax; ret`: what a tracer would write is a relocated instruction and a jump. */
static int run_in_entry(ptss_entry *e, int value)
{
	unsigned char *code = ptss_entry_view(proc, e);
	code[0] = 0xb8;
	memcpy(code + 1, &value, sizeof(value));
	code[5] = 0xc3;
	int (*fn)(void) = (int (*)(void))(uintptr_t)ptss_entry_addr(proc, e);
	return fn();
}

static void *thread_main(void *arg)
{
	int id = (int)(intptr_t)arg;
	ptss_entry *e = ptss_claim(proc);
	if (!e) {
		fprintf(stderr, "scratch_demo: thread %d: no entry: %s\n", id, strerror(errno));
		return (void *)1;
	}
	int got = run_in_entry(e, id * 10);
	ptss_release(proc, e);
	return (void *)(intptr_t)(got != id * 10);
}

int main(int argc, char **argv)
{
	int threads = argc > 1 ? atoi(argv[1]) : 8, waves = argc > 2 ? atoi(argv[2]) : 4;
	if (threads < 1 || threads > 4096 || waves < 1) {
		fprintf(stderr, "usage: scratch_demo [THREADS (1-4096) [WAVES]]\n");
		return 2;
	}
	ptss_space *space = ptss_space_self_new();
	proc = space ? ptss_proc_new(space, NULL) : NULL;
	if (!proc) {
		fprintf(stderr, "scratch_demo: %s\n", strerror(errno));
		return 1;
	}
	pthread_t *t = calloc((size_t)threads, sizeof(*t));
	int bad = 0;
	for (int w = 0; w < waves; w++) {
		for (int i = 0; i < threads; i++)
			pthread_create(&t[i], NULL, thread_main, (void *)(intptr_t)(w * threads + i));
		for (int i = 0; i < threads; i++) {
			void *ret;
			pthread_join(t[i], &ret);
			bad += ret != NULL;
		}
	}
	struct ptss_stats st;
	ptss_stats_get(proc, &st);
	printf("%d threads in %d waves ran code in their own scratch entries; %d wrong results\n",
	       threads * waves, waves, bad);
	printf("pages %llu  entries %llu  claimed high water %llu  grows %llu  free %llu  tracer bytes/entry %.1f\n",
	       (unsigned long long)st.pages, (unsigned long long)st.entries,
	       (unsigned long long)st.claimed_high_water, (unsigned long long)st.grows,
	       (unsigned long long)st.free, st.entries ? (double)st.tracer_bytes / (double)st.entries : 0.0);
	free(t);
	ptss_proc_free(proc);
	ptss_space_free(space);
	return bad ? 1 : 0;
}
