/*
 * Calls of probed functions, entry to return (opts.latency, opts.on_call): a stack of
 * open calls per thread, each frame keyed by the stack pointer at the entry, which is
 * where the return address lies — and where it still lies when the function returns
 * (ret) or leaves by a tail jump. A return pops the frame of that stack pointer; frames
 * below it (deeper) are calls that never returned — a longjmp or an exception unwound
 * past them — and are dropped, neither timed nor attributed to anyone. An entry drops
 * the frames at or below its own stack pointer for the same reason. So recursion nests,
 * and nothing leaks: a thread's stack holds at most its live probed calls.
 *
 * Functions timed in the target (timed.c) keep that stack in the thread's call block
 * instead; their trampolines' times are folded in here, in ns.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SUBS 16 /* linear sub-buckets per power of two: percentiles within 1/16 */

struct latency {
	uint64_t count, min, max;
	uint64_t sub[PTSS_LATENCY_BUCKETS][SUBS];
};

struct call_frame {
	struct row *row;
	uint64_t rsp, t_ns, ts_ns;
	uint64_t argv[6];
	char *args;            /* formatted at entry: strings may change before the return */
};

static uint64_t now_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static unsigned log2_of(uint64_t v)
{
	return v < 2 ? 0 : 63 - (unsigned)__builtin_clzll(v);
}

static struct latency *latency_of(struct latency **l)
{
	if (!*l && !(*l = calloc(1, sizeof(**l))))
		abort();
	return *l;
}

/* Before the count grows: the extremes of what is there and [min, max]. */
static void latency_extremes(struct latency *l, uint64_t min, uint64_t max)
{
	l->min = l->count && l->min < min ? l->min : min;
	l->max = l->max > max ? l->max : max;
}

static void latency_bucket_add(struct latency *l, uint64_t ns, uint64_t n)
{
	unsigned k = log2_of(ns);
	uint64_t lo = k ? 1ull << k : 0, width = k ? 1ull << k : 2;
	l->sub[k][(ns - lo) * SUBS / width] += n;
	l->count += n;
}

static void latency_add(struct row *r, uint64_t ns)
{
	struct latency *l = latency_of(&r->lat);
	latency_extremes(l, ns, ns);
	latency_bucket_add(l, ns, 1);
}

/* A timed column of a call block (x86/jump.h) into *l, in ns: each bucket's calls at its
 * middle, the extremes exact. Its returns are added to *returns. false: it is empty. */
static bool latency_add_block(struct latency **l, const uint8_t *lat, double ns_per_tick, uint64_t *returns)
{
	uint64_t ret, max, min_not;
	memcpy(&ret, lat + JUMP_LAT_RETURNS, 8);
	memcpy(&max, lat + JUMP_LAT_MAX, 8);
	memcpy(&min_not, lat + JUMP_LAT_MIN_NOT, 8);
	*returns += ret;
	if (!min_not)
		return ret != 0; /* none timed */
	struct latency *to = latency_of(l);
	latency_extremes(to, (uint64_t)((double)~min_not * ns_per_tick), (uint64_t)((double)max * ns_per_tick));
	for (unsigned b = 0; b < JUMP_LAT_BUCKETS; b++) {
		uint32_t n;
		memcpy(&n, lat + JUMP_LAT_HIST + 4 * b, 4);
		if (!n)
			continue;
		uint64_t lo = jump_lat_bucket_lo(b);
		uint64_t hi = b + 1 < JUMP_LAT_BUCKETS ? jump_lat_bucket_lo(b + 1) : lo + lo / 4;
		latency_bucket_add(to, (uint64_t)((double)(lo + hi - 1) / 2 * ns_per_tick), n);
	}
	return true;
}

static uint8_t *lat_column(uint8_t *call_block, uint32_t col)
{
	return call_block + JUMP_CALL_STACK_BYTES + (size_t)col * JUMP_LAT_BYTES;
}

/* The slot's next thread starts empty. Only what was written is cleared: a page of the
 * data area that no one wrote takes no memory, and a write of zeros would give it some. */
void calls_fold_timed(struct tracer *t, struct thread *th)
{
	const struct jumps *j = th->proc->jumps;
	if (!th->call_block || !j)
		return;
	double npt = j->nlat ? timed_ns_per_tick(t) : 0;
	for (uint32_t c = 0; c < j->nlat; c++) {
		struct row *r = j->lat_rows[c];
		uint8_t *lat = lat_column(th->call_block, c);
		uint64_t returns = 0;
		bool written = latency_add_block(&r->lat, lat, npt, &returns);
		r->returns += returns;
		r->jump_returns += returns;
		if (written)
			memset(lat, 0, JUMP_LAT_BYTES);
	}
	uint32_t depth;
	memcpy(&depth, th->call_block, 4);
	if (depth)
		memset(th->call_block, 0, 4);
}

/* The value below which a fraction q of the samples lie: the middle of its sub-bucket. */
static uint64_t percentile(const struct latency *l, double q)
{
	uint64_t want = (uint64_t)(q * (double)l->count), seen = 0;
	for (unsigned k = 0; k < PTSS_LATENCY_BUCKETS; k++) {
		uint64_t lo = k ? 1ull << k : 0, width = k ? 1ull << k : 2;
		for (unsigned s = 0; s < SUBS; s++) {
			seen += l->sub[k][s];
			if (seen > want) {
				uint64_t v = lo + (width * (2 * s + 1)) / (2 * SUBS);
				return v < l->min ? l->min : v > l->max ? l->max : v;
			}
		}
	}
	return l->max;
}

bool calls_summary(const struct tracer *t, const struct row *r, struct ptss_trace_latency *out,
		   uint64_t *returns, uint64_t *jump_returns)
{
	struct latency *l = NULL;
	if (r->lat)
		*latency_of(&l) = *r->lat;
	*returns = r->returns;
	*jump_returns = r->jump_returns;
	double npt = 0;
	for (size_t i = 0; i < t->tcap; i++) { /* the live threads' blocks, read as they are */
		const struct thread *th = t->threads[i];
		int col = th && th->call_block ? timed_col(th->proc->jumps, (struct row *)r, false) : -1;
		if (col < 0)
			continue;
		uint64_t more = 0;
		npt = npt ? npt : timed_ns_per_tick(t);
		latency_add_block(&l, lat_column(th->call_block, (uint32_t)col), npt, &more);
		*returns += more;
		*jump_returns += more;
	}
	if (!l)
		return false;
	*out = (struct ptss_trace_latency){ .count = l->count, .min_ns = l->min, .max_ns = l->max };
	for (unsigned k = 0; k < PTSS_LATENCY_BUCKETS; k++)
		for (unsigned s = 0; s < SUBS; s++)
			out->hist[k] += l->sub[k][s];
	if (l->count) {
		out->p50_ns = percentile(l, 0.50);
		out->p99_ns = percentile(l, 0.99);
	}
	free(l);
	return true;
}

/* The argument registers as the signature reads them: int and uint are C's 32-bit ones
 * (sign- or zero-extended), char and bool one byte; the others whole. */
static void narrow(const struct probe_spec *sig, uint64_t argv[6])
{
	for (unsigned i = 0; sig && sig->has_sig && i < sig->nargs; i++)
		switch (sig->args[i]) {
		case ARG_INT: argv[i] = (uint64_t)(int64_t)(int32_t)argv[i]; break;
		case ARG_UINT: argv[i] = (uint32_t)argv[i]; break;
		case ARG_CHAR: argv[i] = (uint64_t)(int64_t)(int8_t)argv[i]; break;
		case ARG_BOOL: argv[i] = (uint8_t)argv[i] != 0; break;
		default: break;
		}
}

/* A string argument: up to 64 bytes read from the target, C-escaped and quoted. */
static void put_str(struct process *p, uint64_t addr, char *out, size_t len)
{
	char raw[65];
	size_t n = 0;
	if (!addr) {
		snprintf(out, len, "NULL");
		return;
	}
	while (n < 64 && !mem_read(p, addr + n, &raw[n], 1) && raw[n])
		n++;
	bool cut = n == 64;
	size_t o = 0;
	out[o++] = '"';
	for (size_t i = 0; i < n && o + 6 < len; i++) {
		unsigned char c = (unsigned char)raw[i];
		if (c == '"' || c == '\\')
			o += (size_t)snprintf(out + o, len - o, "\\%c", c);
		else if (c == '\n')
			o += (size_t)snprintf(out + o, len - o, "\\n");
		else if (c < 0x20 || c >= 0x7f)
			o += (size_t)snprintf(out + o, len - o, "\\x%02x", c);
		else
			out[o++] = (char)c;
	}
	snprintf(out + o, len - o, "\"%s", cut ? "..." : "");
}

static char *format_args(struct process *p, const struct probe_spec *sig, const uint64_t argv[6])
{
	char buf[1024] = "", one[300];
	unsigned n = sig && sig->has_sig ? sig->nargs : 6;
	size_t o = 0;
	for (unsigned i = 0; i < n; i++) {
		uint64_t v = argv[i];
		switch (sig && sig->has_sig ? sig->args[i] : ARG_HEX) {
		case ARG_INT: snprintf(one, sizeof(one), "%" PRId32, (int32_t)v); break;
		case ARG_UINT: snprintf(one, sizeof(one), "%" PRIu32, (uint32_t)v); break;
		case ARG_PTR: snprintf(one, sizeof(one), v ? "0x%" PRIx64 : "NULL", v); break;
		case ARG_STR: put_str(p, v, one, sizeof(one)); break;
		case ARG_CHAR:
			snprintf(one, sizeof(one), (v & 0xff) >= 0x20 && (v & 0xff) < 0x7f && (v & 0xff) != '\''
				 ? "'%c'" : "'\\x%02x'", (unsigned)(v & 0xff));
			break;
		case ARG_BOOL: snprintf(one, sizeof(one), "%s", (v & 0xff) ? "true" : "false"); break;
		default: snprintf(one, sizeof(one), "0x%" PRIx64, v); break;
		}
		o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s", i ? ", " : "", one);
		if (o >= sizeof(buf))
			break;
	}
	char *s = strdup(buf);
	if (!s)
		abort();
	return s;
}

static void drop_above(struct thread *th, uint64_t rsp, bool inclusive)
{
	while (th->ncalls && (th->calls[th->ncalls - 1].rsp < rsp ||
			      (inclusive && th->calls[th->ncalls - 1].rsp == rsp)))
		free(th->calls[--th->ncalls].args);
}

void calls_enter(struct tracer *t, struct thread *th, struct row *r, const struct user_regs_struct *regs)
{
	int col;
	uint8_t *block = timed_block(th, r, &col);
	if (block) {
		timed_push(block, regs->rsp, col);
		return;
	}
	drop_above(th, regs->rsp, true);
	if (th->ncalls == th->capcalls) {
		th->capcalls = th->capcalls ? th->capcalls * 2 : 16;
		if (!(th->calls = realloc(th->calls, th->capcalls * sizeof(*th->calls))))
			abort();
	}
	struct call_frame *f = &th->calls[th->ncalls++];
	*f = (struct call_frame){ .row = r, .rsp = regs->rsp };
	if (t->opts.on_call) { /* what an event shows, taken at the entry */
		const uint64_t argv[6] = { regs->rdi, regs->rsi, regs->rdx, regs->rcx, regs->r8, regs->r9 };
		memcpy(f->argv, argv, sizeof(argv));
		f->args = format_args(th->proc, r->sig, argv);
		narrow(r->sig, f->argv);
		f->ts_ns = now_ns(CLOCK_REALTIME);
	}
	f->t_ns = now_ns(CLOCK_MONOTONIC);
}

void calls_return(struct tracer *t, struct thread *th, struct row *r, uint64_t rsp, uint64_t rax, bool tail)
{
	uint64_t end = now_ns(CLOCK_MONOTONIC);
	r->returns++;
	int col;
	uint64_t ticks;
	uint8_t *block = timed_block(th, r, &col);
	if (block) {
		if (timed_pop(block, rsp, col, &ticks))
			latency_add(r, (uint64_t)((double)ticks * timed_ns_per_tick(t)));
		return;
	}
	drop_above(th, rsp, false);
	if (!th->ncalls || th->calls[th->ncalls - 1].rsp != rsp || th->calls[th->ncalls - 1].row != r)
		return; /* its entry was not seen (the call began before ptss came) */
	struct call_frame *f = &th->calls[--th->ncalls];
	latency_add(r, end - f->t_ns);
	if (t->opts.on_call) {
		const struct probe_spec *sig = r->sig;
		struct ptss_trace_call c = {
			.tid = th->tid, .probe = r->probe, .args = f->args, .ret = rax, .tail = tail,
			.nargs = sig && sig->has_sig ? sig->nargs : 6, .ts_ns = f->ts_ns,
			.duration_ns = end - f->t_ns };
		memcpy(c.argv, f->argv, sizeof(c.argv));
		t->opts.on_call(&c, t->opts.call_ctx);
	}
	free(f->args);
}

void calls_thread_gone(struct thread *th)
{
	drop_above(th, UINT64_MAX, true);
	free(th->calls);
	th->calls = NULL;
	th->ncalls = th->capcalls = 0;
}

void calls_free(struct row *r)
{
	free(r->lat);
	r->lat = NULL;
}
