/*
 * --events: one line per call as it returns, ltrace-like, or one JSON object per line.
 * Lines go through a ring buffer to a writer thread of their own: a slow reader of the
 * output never holds the tracer, hence never the traced program. When the buffer is
 * full, events are dropped and counted; the report says how many.
 */
#include "cli.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define RING (8u << 20)

struct events {
	FILE *out;
	enum trace_format format;
	pthread_t writer;
	pthread_mutex_t lock;
	pthread_cond_t more;
	char *ring;
	size_t head, tail;     /* bytes written in, bytes taken out (both growing) */
	bool done;
	uint64_t dropped;
};

static void *writer(void *arg)
{
	struct events *e = arg;
	char chunk[65536];
	pthread_mutex_lock(&e->lock);
	for (;;) {
		while (e->head == e->tail && !e->done)
			pthread_cond_wait(&e->more, &e->lock);
		if (e->head == e->tail)
			break;
		size_t n = e->head - e->tail;
		if (n > sizeof(chunk))
			n = sizeof(chunk);
		for (size_t i = 0; i < n; i++)
			chunk[i] = e->ring[(e->tail + i) % RING];
		e->tail += n;
		pthread_mutex_unlock(&e->lock);
		fwrite(chunk, 1, n, e->out); /* may block: only this thread waits */
		fflush(e->out);
		pthread_mutex_lock(&e->lock);
	}
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

struct events *events_start(FILE *out, enum trace_format format)
{
	struct events *e = calloc(1, sizeof(*e));
	if (!e || !(e->ring = malloc(RING))) {
		free(e);
		return NULL;
	}
	e->out = out;
	e->format = format;
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->more, NULL);
	if (pthread_create(&e->writer, NULL, writer, e)) {
		free(e->ring);
		free(e);
		return NULL;
	}
	return e;
}

/* "12.3us": a duration as people read it. */
const char *events_duration(uint64_t ns, char *buf, size_t len)
{
	if (ns < 1000)
		snprintf(buf, len, "%" PRIu64 "ns", ns);
	else if (ns < 1000000)
		snprintf(buf, len, "%.3gus", (double)ns / 1e3);
	else if (ns < 1000000000)
		snprintf(buf, len, "%.3gms", (double)ns / 1e6);
	else
		snprintf(buf, len, "%.3gs", (double)ns / 1e9);
	return buf;
}

static int format_line(const struct events *e, const struct ptss_trace_call *c, char *buf, size_t len)
{
	char d[32];
	if (e->format == FORMAT_JSON) {
		int n = snprintf(buf, len, "{\"tid\": %d, \"probe\": \"%s\", \"args\": [", (int)c->tid, c->probe);
		for (unsigned i = 0; i < c->nargs && n > 0 && (size_t)n < len; i++)
			n += snprintf(buf + n, len - (size_t)n, "%s%" PRId64, i ? ", " : "", (int64_t)c->argv[i]);
		if (n > 0 && (size_t)n < len)
			n += snprintf(buf + n, len - (size_t)n, "], \"ret\": %" PRIu64 ", \"tail\": %s, "
				      "\"duration_ns\": %" PRIu64 ", \"ts_ns\": %" PRIu64 "}\n", c->ret,
				      c->tail ? "true" : "false", c->duration_ns, c->ts_ns);
		return n;
	}
	char ret[32];
	int64_t v = (int64_t)c->ret;
	if (c->tail)
		snprintf(ret, sizeof(ret), "<tail call>");
	else if (v >= -4096 && v < 1000000)
		snprintf(ret, sizeof(ret), "%" PRId64, v);
	else
		snprintf(ret, sizeof(ret), "0x%" PRIx64, c->ret);
	return snprintf(buf, len, "%d %s(%s) = %s <%s>\n", (int)c->tid, c->probe, c->args, ret,
			events_duration(c->duration_ns, d, sizeof(d)));
}

void events_call(const struct ptss_trace_call *c, void *ctx)
{
	struct events *e = ctx;
	char line[2048];
	int n = format_line(e, c, line, sizeof(line));
	if (n <= 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1, line[n - 1] = '\n';
	pthread_mutex_lock(&e->lock);
	if (RING - (e->head - e->tail) < (size_t)n) {
		e->dropped++;
	} else {
		for (int i = 0; i < n; i++)
			e->ring[(e->head + (size_t)i) % RING] = line[i];
		e->head += (size_t)n;
		pthread_cond_signal(&e->more);
	}
	pthread_mutex_unlock(&e->lock);
}

uint64_t events_stop(struct events *e)
{
	if (!e)
		return 0;
	pthread_mutex_lock(&e->lock);
	e->done = true;
	pthread_cond_signal(&e->more);
	pthread_mutex_unlock(&e->lock);
	pthread_join(e->writer, NULL);
	uint64_t dropped = e->dropped;
	pthread_mutex_destroy(&e->lock);
	pthread_cond_destroy(&e->more);
	free(e->ring);
	free(e);
	return dropped;
}
