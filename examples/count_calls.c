/*
 * count_calls: the smallest tracer written against libptss-probe. Starts a command,
 * counts every call of one function in it, prints a live total each second and a
 * per-thread table at the end.
 *
 *   count_calls FUNC COMMAND [ARG...]      e.g. count_calls libc:malloc ls -l
 */
#include <ptss/probe.h>

#include <stdio.h>

static void print(enum ptss_tracer_level level, const char *line, void *ctx)
{
	(void)ctx;
	fprintf(stderr, "count_calls: %s%s\n", level == PTSS_TRACER_INFO ? "(info) " : "", line);
}

static void every_second(ptss_tracer *t, void *ctx)
{
	struct ptss_trace_snapshot *s = ptss_tracer_snapshot(t);
	for (size_t i = 0; s && i < s->nprobes; i++)
		fprintf(stderr, "%s: %llu so far\n", s->probes[i].probe, (unsigned long long)s->probes[i].hits);
	ptss_trace_snapshot_free(s);
	(void)ctx;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: count_calls FUNC COMMAND [ARG...]\n");
		return 2;
	}
	ptss_tracer *t = ptss_tracer_new(&PTSS_TRACER_OPTS(.print = print));
	if (!t || ptss_tracer_add_probe(t, argv[1]) || ptss_tracer_start(t, &argv[2])) {
		ptss_tracer_free(t);
		return 1;
	}
	int rc = ptss_tracer_run(t, &PTSS_RUN_OPTS(.interval = 1, .tick = every_second));
	struct ptss_trace_snapshot *s = ptss_tracer_snapshot(t);
	for (size_t i = 0; s && i < s->nprobes; i++) {
		printf("%s in %s: %llu calls\n", s->probes[i].probe, s->command,
		       (unsigned long long)s->probes[i].hits);
		for (size_t k = 0; k < s->probes[i].nthreads; k++)
			printf("  thread %d: %llu\n", (int)s->probes[i].threads[k].tid,
			       (unsigned long long)s->probes[i].threads[k].hits);
	}
	printf("scratch: %llu entries, %llu fallback hits\n", (unsigned long long)(s ? s->entries : 0),
	       (unsigned long long)(s ? s->fallbacks : 0));
	ptss_trace_snapshot_free(s);
	int status = 0;
	ptss_tracer_wait(t, &status); /* the command's end */
	ptss_tracer_free(t);
	return rc ? 1 : 0;
}
