/*
 * Calls timed in the target (opts.latency without events): a function's entry and exit
 * trampolines keep, per thread, a stack of open calls and per function a histogram of
 * durations in TSC ticks, in the thread's call block of the data area (x86/jump.h gives
 * the layout; jumps.c writes the trampolines). No stop per call.
 *
 * The tracer keeps the same stack when a hit of the function comes its way: an entry or
 * an exit left an int3 (a site that allows no jmp), or a miss (a thread not keyed yet).
 * timed_push and timed_pop do in C what the trampolines do, on the thread's block while
 * the thread is stopped, so one stack holds every open call whatever path it took.
 *
 * Ticks become ns by the rate between the TSC and CLOCK_MONOTONIC measured over the
 * tracer's life (both read at its start and at each conversion): the TSC must be
 * invariant (constant_tsc and nonstop_tsc), as on every x86-64 of the last decade.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

enum { CALIBRATE_NS = 20 * 1000 * 1000 }; /* the least interval to take the rate over */

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Does /proc/cpuinfo list the flags of an invariant TSC? */
static bool tsc_invariant(void)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[8192];
	bool flags = false;
	while (f && !flags && fgets(line, sizeof(line), f))
		flags = !strncmp(line, "flags", 5);
	if (f)
		fclose(f);
	return flags && strstr(line, " constant_tsc") && strstr(line, " nonstop_tsc");
}

int timed_possible(struct tracer *t, char *why, size_t len)
{
	if (!t->opts.latency || t->opts.on_call) {
		snprintf(why, len, "%s", t->opts.on_call ? "events are made by the tracer: every call stops"
							 : "calls are not timed");
		return -ENOTSUP;
	}
	if (!tsc_invariant()) {
		snprintf(why, len, "calls are timed by the tracer: this CPU's TSC is not invariant");
		return -ENOTSUP;
	}
	if (!t->tsc0) {
		t->ns0 = mono_ns();
		t->tsc0 = __rdtsc();
	}
	return 0;
}

double timed_ns_per_tick(const struct tracer *t)
{
	uint64_t ns = mono_ns(), elapsed = ns - t->ns0;
	if (elapsed < CALIBRATE_NS) { /* once per tracer at most: too short a base */
		struct timespec wait = { 0, (long)(CALIBRATE_NS - elapsed) };
		nanosleep(&wait, NULL);
		ns = mono_ns();
	}
	uint64_t ticks = __rdtsc() - t->tsc0;
	return ticks ? (double)(ns - t->ns0) / (double)ticks : 0;
}

int timed_col(struct jumps *j, struct row *r, bool assign)
{
	if (!j || !j->timed || !r)
		return -1;
	for (uint32_t c = 0; c < j->nlat; c++)
		if (j->lat_rows[c] == r)
			return (int)c;
	if (!assign || j->nlat == JUMPS_LAT_COLS)
		return -1;
	j->lat_rows[j->nlat] = r;
	return (int)j->nlat++;
}

uint8_t *timed_block(const struct thread *th, struct row *r, int *col)
{
	*col = th->call_block ? timed_col(th->proc->jumps, r, false) : -1;
	return *col >= 0 ? th->call_block : NULL;
}

static uint32_t *depth_of(uint8_t *block)
{
	return (uint32_t *)block;
}

static uint64_t *frame(uint8_t *block, uint32_t i)
{
	return (uint64_t *)(block + JUMP_CALL_FRAMES + 16 * (size_t)i);
}

#define TSC56(v) ((v) & ((1ull << 56) - 1))

void timed_push(uint8_t *block, uint64_t rsp, int col)
{
	uint32_t d = *depth_of(block);
	while (d && frame(block, d - 1)[0] <= rsp) /* calls left by a longjmp or an exception */
		d--;
	if (d < JUMP_CALL_DEPTH) {
		frame(block, d)[0] = rsp;
		frame(block, d)[1] = TSC56(__rdtsc()) << 8 | (uint8_t)col;
		d++;
	}
	*depth_of(block) = d;
}

bool timed_pop(uint8_t *block, uint64_t rsp, int col, uint64_t *ticks)
{
	uint64_t now = TSC56(__rdtsc());
	uint32_t d = *depth_of(block);
	while (d && frame(block, d - 1)[0] < rsp)
		d--;
	bool ours = d && frame(block, d - 1)[0] == rsp && (uint8_t)frame(block, d - 1)[1] == (uint8_t)col;
	if (ours) {
		d--;
		*ticks = TSC56(now - (frame(block, d)[1] >> 8));
	}
	*depth_of(block) = d;
	return ours;
}
