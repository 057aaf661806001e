/*
 * Driver of insn_classes.S (insn_target, insn_target_nopie): calls every function N times,
 * round by round in table order, and checks each result and side effect against a
 * reference computed here.
 *
 *   usage: insn_target [--rounds N]     (default 3)
 *
 * stdout: one line per function, `NAME SUM` (the sum of its results, mod 2^64): identical
 * traced or not, and across PIE and non-PIE.
 * stderr: what a tracer must count, for every function this process enters:
 *   insn_target: expect pid=P insn_endbr64=N ... insn_helper_read_canary=N
 * plus one `insn_target: NAME: ...` line per mismatch. Exit status 1 if any mismatch.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

long insn_endbr64(long x);
long insn_push_rbp(long x);
long insn_push_r15(long x);
long insn_sub_rsp_imm8(long x);
long insn_sub_rsp_imm32(long x);
long insn_load_rip(long x);
long insn_store_rip(long x);
long insn_store_rip_imm(long x);
long insn_cmp_rip_imm8(long x);
long insn_cmp_rip_imm32(long x);
long insn_lea_rip(long x);
long insn_sse_rip(long x);
long insn_jmp_mem(long x);
long insn_call_mem(long x);
long insn_call_rel32(long x);
long insn_lock_xadd(long x);
long insn_jmp_rel32(long x);
long insn_jmp_rel8(long x);
long insn_flags_jcc8(long x);
long insn_flags_jcc32(long x);
long insn_jrcxz(long x, long unused1, long unused2, long c);
long insn_fs_canary(long x, long canary);
long insn_nopl5(long x);
long insn_nopw10(long x);
long insn_xor_eax(long x);
long insn_helper_read_canary(void);

extern long insn_data_store;
extern int insn_data_store32, insn_data_cmp, insn_data_cmp32, insn_data_counter;

static int failures;

static void check(const char *name, const char *what, long x, long got, long want)
{
	if (got == want)
		return;
	fprintf(stderr, "insn_target: %s: %s for x=%ld: got %ld, want %ld\n", name, what, x, got,
		want);
	failures++;
}

/* Runners: call one function with x, check its side effects, set *want to its reference
 * result, return its result. */

static long run_push_rbp(long x, long *want)
{
	*want = 2 * x + 202;
	return insn_push_rbp(x);
}

static long run_store_rip(long x, long *want)
{
	insn_data_store = -1;
	long r = insn_store_rip(x);
	check("insn_store_rip", "memory", x, insn_data_store, x);
	*want = 3 * x;
	return r;
}

static long run_store_rip_imm(long x, long *want)
{
	insn_data_store32 = 0;
	long r = insn_store_rip_imm(x);
	check("insn_store_rip_imm", "memory", x, insn_data_store32, 0x5eed1234);
	*want = 0x5eed1234 + x;
	return r;
}

/* x % 3 picks below, equal, above: results 1, 2, 3. */
static long run_cmp_rip_imm8(long x, long *want)
{
	insn_data_cmp = 0x50 + 5 * (int)(x % 3);
	*want = x + 1 + x % 3;
	return insn_cmp_rip_imm8(x);
}

static long run_cmp_rip_imm32(long x, long *want)
{
	insn_data_cmp32 = 0x12345678 + (int)(x % 3) - 1;
	*want = x + 1 + x % 3;
	return insn_cmp_rip_imm32(x);
}

static long run_lea_rip(long x, long *want)
{
	static const long table[] = { 11, 2222, 333333, 44444444 };
	*want = table[x & 3];
	return insn_lea_rip(x);
}

static long run_lock_xadd(long x, long *want)
{
	/* 32-bit counter: compare modulo 2^32; the result is the old value zero-extended. */
	uint32_t before = (uint32_t)insn_data_counter;
	long r = insn_lock_xadd(x);
	check("insn_lock_xadd", "counter", x, (uint32_t)insn_data_counter,
	      (uint32_t)(before + (uint32_t)x));
	*want = before;
	return r;
}

static long run_jcc_rel8(long x, long *want)
{
	*want = x + (x < 2 ? 1350 : 1300);
	return insn_flags_jcc8(x);
}

static long run_jcc_rel32(long x, long *want)
{
	*want = x + (x >= 3 ? 1450 : 1400);
	return insn_flags_jcc32(x);
}

/* c alternates between zero and not. */
static long run_jrcxz(long x, long *want)
{
	long c = x & 1;
	*want = x + (c ? 1500 : 1550);
	return insn_jrcxz(x, 0, 0, c);
}

static long run_fs_canary(long x, long *want)
{
	*want = x + 1600;
	return insn_fs_canary(x, insn_helper_read_canary());
}

/* Functions whose only effect is the result, x * mul + add. */
struct simple {
	long (*fn)(long x);
	long mul, add;
};

struct insn_test {
	const char *name;
	long (*run)(long x, long *want);	/* NULL: a simple one */
	struct simple simple;
};

static const struct insn_test tests[] = {
	{ "insn_endbr64", NULL, { insn_endbr64, 1, 101 } },
	{ "insn_push_rbp", run_push_rbp, { 0 } },
	{ "insn_push_r15", NULL, { insn_push_r15, 1, 250 } },
	{ "insn_sub_rsp_imm8", NULL, { insn_sub_rsp_imm8, 1, 303 } },
	{ "insn_sub_rsp_imm32", NULL, { insn_sub_rsp_imm32, 1, 313 } },
	{ "insn_load_rip", NULL, { insn_load_rip, 1, 0x5a5a1234 } },
	{ "insn_store_rip", run_store_rip, { 0 } },
	{ "insn_store_rip_imm", run_store_rip_imm, { 0 } },
	{ "insn_cmp_rip_imm8", run_cmp_rip_imm8, { 0 } },
	{ "insn_cmp_rip_imm32", run_cmp_rip_imm32, { 0 } },
	{ "insn_lea_rip", run_lea_rip, { 0 } },
	{ "insn_sse_rip", NULL, { insn_sse_rip, 1, 1900 } },
	{ "insn_jmp_mem", NULL, { insn_jmp_mem, 7, 1000 } },
	{ "insn_call_mem", NULL, { insn_call_mem, 5, 9 } },
	{ "insn_call_rel32", NULL, { insn_call_rel32, 11, 3 } },
	{ "insn_lock_xadd", run_lock_xadd, { 0 } },
	{ "insn_jmp_rel32", NULL, { insn_jmp_rel32, 1, 1100 } },
	{ "insn_jmp_rel8", NULL, { insn_jmp_rel8, 1, 1200 } },
	{ "insn_jcc_rel8", run_jcc_rel8, { 0 } },
	{ "insn_jcc_rel32", run_jcc_rel32, { 0 } },
	{ "insn_jrcxz", run_jrcxz, { 0 } },
	{ "insn_fs_canary", run_fs_canary, { 0 } },
	{ "insn_nopl5", NULL, { insn_nopl5, 1, 1700 } },
	{ "insn_nopw10", NULL, { insn_nopw10, 1, 1750 } },
	{ "insn_xor_eax", NULL, { insn_xor_eax, 1, 1800 } },
};
enum { NTESTS = sizeof(tests) / sizeof(tests[0]) };

/* Functions entered besides the tests' own, once per round each. */
static const char *const also_entered[] = {
	"insn_flags_jcc8", "insn_flags_jcc32", "insn_helper_jmp_target",
	"insn_helper_call_mem", "insn_helper_call_rel32", "insn_helper_read_canary",
};

int main(int argc, char **argv)
{
	long rounds = 3;
	if (argc == 3 && !strcmp(argv[1], "--rounds")) {
		char *end;
		rounds = strtol(argv[2], &end, 10);
		if (*end || end == argv[2] || rounds < 1 || rounds > 1000000)
			rounds = -1;
	} else if (argc != 1) {
		rounds = -1;
	}
	if (rounds < 0) {
		fprintf(stderr, "usage: insn_target [--rounds N (1-1000000)]\n");
		return 2;
	}

	uint64_t sums[NTESTS] = { 0 };
	for (long round = 0; round < rounds; round++) {
		long x = round + 1;
		for (int i = 0; i < NTESTS; i++) {
			const struct insn_test *t = &tests[i];
			long got, want;
			if (t->run) {
				got = t->run(x, &want);
			} else {
				got = t->simple.fn(x);
				want = x * t->simple.mul + t->simple.add;
			}
			check(t->name, "result", x, got, want);
			sums[i] += (uint64_t)got;
		}
	}

	for (int i = 0; i < NTESTS; i++)
		printf("%s %" PRIu64 "\n", tests[i].name, sums[i]);
	fprintf(stderr, "insn_target: expect pid=%d", (int)getpid());
	for (int i = 0; i < NTESTS; i++)
		fprintf(stderr, " %s=%ld", tests[i].name, rounds);
	for (size_t i = 0; i < sizeof(also_entered) / sizeof(also_entered[0]); i++)
		fprintf(stderr, " %s=%ld", also_entered[i], rounds);
	fprintf(stderr, "\n");
	return failures ? 1 : 0;
}
