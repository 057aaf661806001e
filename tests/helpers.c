#include "helpers.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <inttypes.h>

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define VALGRIND_DISCARD_TRANSLATIONS(addr, len) ((void)(addr), (void)(len))
#endif

struct ptss_opts test_opts(unsigned per_page, unsigned max_pages)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	return PTSS_OPTS(.entry_size = page / per_page, .page_size = page,
			 .reserve_size = page * max_pages);
}

int test_run_entry(ptss_proc *p, ptss_entry *e, int value)
{
	unsigned char *code = ptss_entry_view(p, e);
	code[0] = 0xb8; /* mov $imm32, %eax */
	memcpy(code + 1, &value, 4);
	code[5] = 0xc3; /* ret */
	uint64_t addr = ptss_entry_addr(p, e);
	/* Written through another mapping: tell valgrind its translation of addr is stale. */
	VALGRIND_DISCARD_TRANSLATIONS(addr, 6);
	int (*fn)(void) = (int (*)(void))(uintptr_t)addr;
	return fn();
}

/* Calls visit(lo, hi, perms, name) for each line of /proc/self/maps until it returns false. */
static void maps_each(bool (*visit)(uint64_t, uint64_t, const char *, const char *, void *), void *arg)
{
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		return;
	char line[512];
	while (fgets(line, sizeof(line), f)) {
		uint64_t lo, hi;
		char perms[8] = "", name[256] = "";
		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %7s %*s %*s %*s %255[^\n]", &lo, &hi, perms, name) < 3)
			continue;
		if (!visit(lo, hi, perms, name, arg))
			break;
	}
	fclose(f);
}

struct perms_query { uint64_t addr; char *out; };
static bool perms_visit(uint64_t lo, uint64_t hi, const char *perms, const char *name, void *arg)
{
	(void)name;
	struct perms_query *q = arg;
	if (q->addr >= lo && q->addr < hi) {
		snprintf(q->out, 8, "%s", perms);
		return false;
	}
	return true;
}

const char *test_maps_perms(uint64_t addr, char out[8])
{
	out[0] = 0;
	struct perms_query q = { addr, out };
	maps_each(perms_visit, &q);
	return out;
}

struct overlap_query { uint64_t lo, hi; int n; };
static bool overlap_visit(uint64_t lo, uint64_t hi, const char *perms, const char *name, void *arg)
{
	(void)perms, (void)name;
	struct overlap_query *q = arg;
	q->n += lo < q->hi && hi > q->lo;
	return true;
}

int test_maps_overlapping(uint64_t addr, size_t len)
{
	struct overlap_query q = { addr, addr + len, 0 };
	maps_each(overlap_visit, &q);
	return q.n;
}

static bool ptss_visit(uint64_t lo, uint64_t hi, const char *perms, const char *name, void *arg)
{
	(void)lo, (void)hi, (void)perms;
	*(int *)arg += strstr(name, "memfd:ptss") != NULL;
	return true;
}

int test_maps_ptss_count(void)
{
	int n = 0;
	maps_each(ptss_visit, &n);
	return n;
}

static bool wx_visit(uint64_t lo, uint64_t hi, const char *perms, const char *name, void *arg)
{
	(void)lo, (void)hi;
	if (strstr(name, "memfd:ptss") && perms[1] == 'w' && perms[2] == 'x')
		*(bool *)arg = true;
	return true;
}

bool test_maps_ptss_any_wx(void)
{
	bool any = false;
	maps_each(wx_visit, &any);
	return any;
}

int test_fixture_setup(void **state)
{
	static struct test_fixture f;
	struct ptss_opts o = test_opts(64, 16);
	f.space = ptss_space_self_new();
	f.p = ptss_proc_new(f.space, &o);
	*state = &f;
	return f.space && f.p ? 0 : -1;
}

int test_fixture_teardown(void **state)
{
	struct test_fixture *f = *state;
	ptss_proc_free(f->p);
	ptss_space_free(f->space);
	return 0;
}
