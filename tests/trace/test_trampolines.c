/*
 * trampolines: jump probes' plans and trampolines (x86/jump.c), the trampolines executed
 * for real in this process. Small functions are written in a code page, their sites
 * planned and patched with jmps into trampolines next to them, over a data area whose key
 * table holds this thread's fs base; calling the functions then runs the trampolines as a
 * target would: counters, the stack of timed calls and its histograms are checked against
 * the calls made.
 */
#define _GNU_SOURCE
#include "jump.h"
#include "scan.h"

#include <asm/prctl.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#ifndef HWCAP2_FSGSBASE
#define HWCAP2_FSGSBASE (1 << 1)
#endif

/* ---- buckets ------------------------------------------------------------------------ */

static void test_lat_buckets(void **state)
{
	(void)state;
	for (uint64_t t = 0; t < 100000; t++) {
		unsigned b = jump_lat_bucket(t);
		assert_true(jump_lat_bucket_lo(b) <= t && t < jump_lat_bucket_lo(b + 1));
	}
	for (unsigned b = 0; b + 1 < JUMP_LAT_BUCKETS; b++) {
		assert_true(jump_lat_bucket_lo(b) < jump_lat_bucket_lo(b + 1));
		assert_int_equal(jump_lat_bucket(jump_lat_bucket_lo(b)), b);
	}
	assert_int_equal(jump_lat_bucket(UINT64_MAX >> 8), JUMP_LAT_BUCKETS - 1);
}

/* ---- plans -------------------------------------------------------------------------- */

#define BASE 0x401000u

static int plan_exit(const uint8_t *code, size_t len, size_t exit_off, struct jump_plan *jp, char *why)
{
	struct jump_code part = { BASE, code, len };
	return jump_plan_exit(jp, BASE + exit_off, &part, 1, why, 256);
}

static void test_exit_plans(void **state)
{
	(void)state;
	struct jump_plan jp;
	char why[256];
	/* push rbp; push rbx; ...; add rsp, 8; pop rbx; pop rbp; ret: from the add */
	static const uint8_t epilogue[] = { 0x55, 0x53, 0x48, 0x89, 0xf8, 0x48, 0x83, 0xc4, 0x08,
					    0x5b, 0x5d, 0xc3 };
	assert_int_equal(plan_exit(epilogue, sizeof(epilogue), 11, &jp, why), 0);
	assert_true(jp.addr == BASE + 5 && jp.len == 7 && jp.ninsns == 4 && jp.exit && !jp.entry);
	/* a tail call: jmp rel32, five bytes of its own */
	static const uint8_t tail[] = { 0x48, 0x83, 0xc7, 0x01, 0xe9, 0x00, 0x10, 0x00, 0x00 };
	assert_int_equal(plan_exit(tail, sizeof(tail), 4, &jp, why), 0);
	assert_true(jp.addr == BASE + 4 && jp.len == 5 && jp.ninsns == 1);
	/* mov rax, rdi; ret: four bytes in all */
	static const uint8_t tiny[] = { 0x48, 0x89, 0xf8, 0xc3 };
	assert_int_equal(plan_exit(tiny, sizeof(tiny), 3, &jp, why), -ENOTSUP);
	assert_non_null(strstr(why, "less than 5 bytes"));
	/* js to the ret, inside the bytes the jmp would cover */
	static const uint8_t branch_in[] = { 0x48, 0x85, 0xff, 0x78, 0x04, 0x48, 0x83, 0xc0, 0x01, 0xc3 };
	assert_int_equal(plan_exit(branch_in, sizeof(branch_in), 9, &jp, why), -ENOTSUP);
	assert_non_null(strstr(why, "a branch to"));
	/* a memory load before the ret, not first: it could fault with nowhere to go back to */
	static const uint8_t load[] = { 0x48, 0x89, 0xf8, 0x8b, 0x07, 0xc3 };
	assert_int_equal(plan_exit(load, sizeof(load), 5, &jp, why), -ENOTSUP);
	assert_non_null(strstr(why, "memory access"));
	/* an address inside an instruction */
	assert_int_equal(plan_exit(epilogue, sizeof(epilogue), 7, &jp, why), -ENOTSUP);
}

/* ---- trampolines, executed ---------------------------------------------------------- */

enum {
	SLOT = 3,
	TABLE_BITS = 4,
	ROW_BYTES = 64,
	COUNTS_OFF = 4096,
	CALLS_OFF = COUNTS_OFF + 8 * ROW_BYTES,
	CALL_BYTES = JUMP_CALL_STACK_BYTES + 2 * JUMP_LAT_BYTES,
	DATA_SIZE = CALLS_OFF + 8 * CALL_BYTES,
	TRAMP_AT = 4096, /* in the code page's mapping: trampolines after the functions */
};

struct fixture {
	uint8_t *code;     /* RWX: functions at 0, trampolines from TRAMP_AT */
	uint8_t *data;
	size_t ntramps;
};

static uint64_t fs_base(void)
{
	uint64_t fs = 0;
	syscall(SYS_arch_prctl, ARCH_GET_FS, &fs);
	return fs;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->code = mmap(NULL, 65536, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	f->data = mmap(NULL, DATA_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(f->code != MAP_FAILED && f->data != MAP_FAILED);
	uint64_t fs = fs_base();
	uint64_t *table = (uint64_t *)(f->data + 64);
	table[jump_hash(fs, TABLE_BITS)] = (uint64_t)SLOT << 48 | fs;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	munmap(f->code, 65536);
	munmap(f->data, DATA_SIZE);
	free(f);
	return 0;
}

static struct jump_data data_of(const struct fixture *f, uint32_t col, int32_t lat_col)
{
	return (struct jump_data){ .base = (uint64_t)(uintptr_t)f->data, .alive_off = 0, .table_off = 64,
				   .table_bits = TABLE_BITS, .counts_off = COUNTS_OFF, .row_bytes = ROW_BYTES,
				   .col = col, .lat_col = lat_col, .calls_off = CALLS_OFF,
				   .call_bytes = CALL_BYTES };
}

/* The plan jp's trampoline written in f and its jmp patched over the code. */
static void patch(struct fixture *f, const struct jump_plan *jp, const struct jump_data *d)
{
	uint8_t *at = f->code + TRAMP_AT + f->ntramps++ * JUMP_TRAMP_MAX;
	struct jump_tramp t;
	char why[256] = "";
	assert_int_equal(jump_tramp_write(jp, d, (uint64_t)(uintptr_t)at, at, JUMP_TRAMP_MAX, &t, why,
					  sizeof(why)), 0);
	uint8_t bytes[JUMP_COVER_MAX];
	assert_int_equal(jump_patch_bytes(jp, (uint64_t)(uintptr_t)at, bytes), 0);
	memcpy((uint8_t *)(uintptr_t)jp->addr, bytes, jp->len);
}

static uint64_t counter(const struct fixture *f, uint32_t col)
{
	return *(const uint64_t *)(f->data + COUNTS_OFF + SLOT * ROW_BYTES + 8 * col);
}

static const uint8_t *call_block(const struct fixture *f)
{
	return f->data + CALLS_OFF + SLOT * CALL_BYTES;
}

static uint64_t lat_word(const struct fixture *f, int col, unsigned off)
{
	uint64_t v;
	memcpy(&v, call_block(f) + JUMP_CALL_STACK_BYTES + col * JUMP_LAT_BYTES + off, 8);
	return v;
}

static uint64_t lat_timed(const struct fixture *f, int col)
{
	uint64_t n = 0;
	for (unsigned b = 0; b < JUMP_LAT_BUCKETS; b++) {
		uint32_t c;
		memcpy(&c, call_block(f) + JUMP_CALL_STACK_BYTES + col * JUMP_LAT_BYTES + JUMP_LAT_HIST + 4 * b, 4);
		n += c;
	}
	return n;
}

static uint32_t depth(const struct fixture *f)
{
	uint32_t d;
	memcpy(&d, call_block(f), 4);
	return d;
}

/* long fn(long x) = 3x + 1, in two shapes. */
static const uint8_t SPLIT[] = {
	0x53,                         /* 0:  push rbx */
	0x48, 0x89, 0xfb,             /* 1:  mov rbx, rdi */
	0x48, 0x83, 0xc3, 0x00,       /* 4:  add rbx, 0 */
	0x48, 0x6b, 0xc3, 0x03,       /* 8:  imul rax, rbx, 3 */
	0x48, 0x83, 0xc0, 0x01,       /* 12: add rax, 1 */
	0x48, 0x89, 0xc1,             /* 16: mov rcx, rax */
	0x5b,                         /* 19: pop rbx */
	0xc3,                         /* 20: ret */
};
static const uint8_t TINY[] = {
	0x48, 0x8d, 0x44, 0x7f, 0x01, /* 0: lea rax, [rdi+rdi*2+1] */
	0xc3,                         /* 5: ret */
};

typedef long fn_t(long);

static void test_entry_and_exit_trampolines_execute(void **state)
{
	struct fixture *f = *state;
	if (!(getauxval(AT_HWCAP2) & HWCAP2_FSGSBASE)) {
		skip();
		return;
	}
	memcpy(f->code, SPLIT, sizeof(SPLIT));
	struct jump_code part = { (uint64_t)(uintptr_t)f->code, f->code, sizeof(SPLIT) };
	struct jump_plan entry, exit;
	char why[256] = "";
	assert_int_equal(jump_plan_make(&entry, part.addr, f->code, sizeof(SPLIT), JUMP_PATCH_LEN, &part, 1,
					why, sizeof(why)), 0);
	assert_int_equal(jump_plan_exit(&exit, part.addr + 20, &part, 1, why, sizeof(why)), 0);
	assert_true(entry.len == 8 && exit.addr == part.addr + 16 && exit.len == 5);
	struct jump_data d = data_of(f, 1, 0);
	patch(f, &entry, &d);
	patch(f, &exit, &d);
	fn_t *fn = (fn_t *)(uintptr_t)f->code;
	for (long i = 0; i < 1000; i++)
		assert_int_equal(fn(i), 3 * i + 1);
	assert_int_equal(counter(f, 1), 1000);
	assert_int_equal(lat_word(f, 0, JUMP_LAT_RETURNS), 1000);
	assert_int_equal(lat_timed(f, 0), 1000);
	assert_int_equal(depth(f), 0);
	assert_true(lat_word(f, 0, JUMP_LAT_MIN_NOT) != 0 && ~lat_word(f, 0, JUMP_LAT_MIN_NOT) <= lat_word(f, 0, JUMP_LAT_MAX));
}

static void test_small_function_one_trampoline(void **state)
{
	struct fixture *f = *state;
	if (!(getauxval(AT_HWCAP2) & HWCAP2_FSGSBASE)) {
		skip();
		return;
	}
	memcpy(f->code + 64, TINY, sizeof(TINY));
	uint8_t *code = f->code + 64;
	struct jump_code part = { (uint64_t)(uintptr_t)code, code, sizeof(TINY) };
	struct jump_plan jp;
	char why[256] = "";
	/* stretched over the ret, as jumps.c does for a timed entry just before an exit */
	assert_int_equal(jump_plan_make(&jp, part.addr, code, sizeof(TINY), sizeof(TINY), &part, 1, why,
					sizeof(why)), 0);
	jp.exit = true;
	struct jump_data d = data_of(f, 2, 1);
	patch(f, &jp, &d);
	fn_t *fn = (fn_t *)(uintptr_t)code;
	for (long i = -500; i < 500; i++)
		assert_int_equal(fn(i), 3 * i + 1);
	assert_int_equal(counter(f, 2), 1000);
	assert_int_equal(lat_word(f, 1, JUMP_LAT_RETURNS), 1000);
	assert_int_equal(lat_timed(f, 1), 1000);
	assert_int_equal(depth(f), 0);
}

/* Entries whose exits never come (a longjmp out of the function): the frames left are
 * dropped by the next entry at or above them, and nothing is timed wrongly. */
static jmp_buf out;
static void leave(void) { longjmp(out, 1); }

static void test_frames_left_by_a_longjmp_are_dropped(void **state)
{
	struct fixture *f = *state;
	if (!(getauxval(AT_HWCAP2) & HWCAP2_FSGSBASE)) {
		skip();
		return;
	}
	/* caller(fn): calls fn, which never returns here */
	static const uint8_t CALLER[] = {
		0x48, 0x89, 0xf8,             /* 0: mov rax, rdi */
		0x48, 0x83, 0xec, 0x08,       /* 3: sub rsp, 8 */
		0xff, 0xd0,                   /* 7: call rax */
		0x48, 0x83, 0xc4, 0x08,       /* 9: add rsp, 8 */
		0xc3,                         /* 13: ret */
	};
	uint8_t *code = f->code + 128;
	memcpy(code, CALLER, sizeof(CALLER));
	struct jump_code part = { (uint64_t)(uintptr_t)code, code, sizeof(CALLER) };
	struct jump_plan entry, exit;
	char why[256] = "";
	assert_int_equal(jump_plan_make(&entry, part.addr, code, sizeof(CALLER), JUMP_PATCH_LEN, &part, 1,
					why, sizeof(why)), 0);
	assert_int_equal(jump_plan_exit(&exit, part.addr + 13, &part, 1, why, sizeof(why)), 0);
	struct jump_data d = data_of(f, 3, 1);
	patch(f, &entry, &d);
	patch(f, &exit, &d);
	void (*caller)(void (*)(void)) = (void (*)(void (*)(void)))(uintptr_t)code;
	uint32_t before = depth(f);
	for (int i = 0; i < 100; i++)
		if (!setjmp(out))
			caller(leave);
	assert_int_equal(counter(f, 3), 100);
	assert_int_equal(depth(f), before + 1); /* the last one's frame, the others dropped */
	assert_int_equal(lat_word(f, 1, JUMP_LAT_RETURNS), 0);
	assert_int_equal(lat_timed(f, 1), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lat_buckets),
		cmocka_unit_test(test_exit_plans),
		cmocka_unit_test_setup_teardown(test_entry_and_exit_trampolines_execute, setup, teardown),
		cmocka_unit_test_setup_teardown(test_small_function_one_trampoline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_frames_left_by_a_longjmp_are_dropped, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
