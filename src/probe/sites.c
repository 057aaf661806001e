/*
 * The probe sites of one process image, sorted by address: deciding how each displaced
 * instruction runs (x86/plan.c), and writing and restoring the int3 bytes (and the jmps
 * that jumps.c writes over some of them).
 */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INT3 0xcc

struct site *site_find(struct process *p, uint64_t addr)
{
	size_t lo = 0, hi = p->nsites;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (p->sites[mid].addr < addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < p->nsites && p->sites[lo].addr == addr ? &p->sites[lo] : NULL;
}

/* The jumped site whose trampoline holds rip, or NULL. */
struct site *site_of_tramp(struct process *p, uint64_t rip)
{
	if (!p->jumps)
		return NULL;
	for (size_t i = 0; i < p->nsites; i++) {
		struct site *s = &p->sites[i];
		if (s->jumped && rip >= s->tramp_addr && rip < s->tramp_addr + s->tramp.len)
			return s;
	}
	return NULL;
}

static struct site *site_insert(struct process *p, uint64_t addr)
{
	if (p->nsites == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 16;
		p->sites = realloc(p->sites, p->cap * sizeof(*p->sites));
		if (!p->sites)
			abort();
	}
	size_t at = 0;
	while (at < p->nsites && p->sites[at].addr < addr)
		at++;
	memmove(&p->sites[at + 1], &p->sites[at], (p->nsites - at) * sizeof(*p->sites));
	p->nsites++;
	memset(&p->sites[at], 0, sizeof(p->sites[at]));
	p->sites[at].addr = addr;
	return &p->sites[at];
}

void sites_remove(struct process *p, uint64_t addr)
{
	struct site *s = site_find(p, addr);
	if (!s)
		return;
	mem_write(p, addr, &s->orig, 1);
	size_t at = (size_t)(s - p->sites);
	memmove(s, s + 1, (p->nsites - at - 1) * sizeof(*s));
	p->nsites--;
}

void sites_disarm_all(struct process *p)
{
	for (size_t i = 0; i < p->nsites; i++) {
		const struct site *s = &p->sites[i];
		if (s->jumped)
			mem_write(p, s->jump.addr, s->saved, s->jump.len);
		else
			mem_write(p, s->addr, &s->orig, 1);
	}
}

void sites_clear(struct process *p)
{
	free(p->sites);
	p->sites = NULL;
	p->nsites = p->cap = 0;
}

int sites_copy(struct process *child, const struct process *parent)
{
	child->sites = malloc((parent->cap ? parent->cap : 1) * sizeof(*child->sites));
	if (!child->sites)
		return -ENOMEM;
	if (parent->nsites)
		memcpy(child->sites, parent->sites, parent->nsites * sizeof(*child->sites));
	child->nsites = parent->nsites;
	child->cap = parent->cap ? parent->cap : 1;
	child->entry_site = parent->entry_site;
	child->notice_site = parent->notice_site;
	return 0;
}

/* The target's code at [addr, addr + len) as it was before ptss: our bytes taken out. */
int sites_read_code(struct process *p, uint64_t addr, uint8_t *buf, size_t len)
{
	if (mem_read(p, addr, buf, len))
		return -EFAULT;
	for (size_t i = 0; i < p->nsites; i++) {
		const struct site *s = &p->sites[i];
		uint64_t at = s->jumped ? s->jump.addr : s->addr;
		size_t n = s->jumped ? s->jump.len : 1;
		for (size_t k = 0; k < n; k++)
			if (at + k >= addr && at + k < addr + len)
				buf[at + k - addr] = s->jumped ? s->saved[k] : s->orig;
	}
	return 0;
}

/* fn's code as it was before ptss: parts[0] the function, parts[1] its FUNC.cold part if
 * it has one that can be read. How many parts, 0 if the function itself cannot be read
 * (its size unknown or above 1 MiB); *bytes (to free) holds them. */
size_t sites_read_function(struct process *p, const struct site_fn *fn, struct jump_code parts[2],
			   uint8_t **bytes)
{
	const uint64_t max = 1u << 20;
	const uint64_t addr[2] = { fn->addr, fn->cold_addr };
	const uint64_t size[2] = { fn->size, fn->cold_size <= max ? fn->cold_size : 0 };
	*bytes = NULL;
	if (!size[0] || size[0] > max)
		return 0;
	if (!(*bytes = malloc(size[0] + size[1])))
		abort();
	size_t n = 0;
	for (int k = 0; k < 2; k++) {
		uint8_t *at = *bytes + (k ? size[0] : 0);
		if (size[k] && !sites_read_code(p, addr[k], at, size[k]))
			parts[n++] = (struct jump_code){ addr[k], at, size[k] };
		else if (k == 0)
			return 0;
	}
	return n;
}

/* An exit of fn (a ret or a branch that may leave it) where its calls of row end: a site
 * of its own, or one more duty of a site already there. jumps.c may make it a jmp whose
 * trampoline times the call (a ret or a direct jmp, calls timed in the target). */
int site_arm_exit(struct tracer *t, struct process *p, uint64_t addr, struct row *row,
		  const struct site_fn *fn, char *why, size_t len)
{
	struct site *s = site_find(p, addr);
	if (!s) {
		int err = site_arm(t, p, addr, NULL, NULL, why, len);
		if (err)
			return err;
		s = site_find(p, addr);
		s->internal = s->jump_tried = false;
	}
	s->exit_row = row;
	s->exit_fn = *fn;
	return 0;
}

/* Decodes the instruction at addr and writes int3 over it; row NULL: a site of ptss's own.
 * fn (may be NULL): the function around it, for jumps.c. */
int site_arm(struct tracer *t, struct process *p, uint64_t addr, struct row *row,
	     const struct site_fn *fn, char *why, size_t len)
{
	if (site_find(p, addr))
		return 0; /* two probes naming one address: one site */
	for (size_t i = 0; i < p->nsites; i++)
		if (p->sites[i].jumped && addr >= p->sites[i].jump.addr &&
		    addr < p->sites[i].jump.addr + p->sites[i].jump.len) {
			snprintf(why, len, "0x%llx is inside the jump of the probe at 0x%llx",
				 (unsigned long long)addr, (unsigned long long)p->sites[i].addr);
			return -EBUSY;
		}
	uint8_t code[RELOC_INSN_MAX];
	size_t n = sizeof(code);
	while (n > 0 && sites_read_code(p, addr, code, n)) /* the instruction may end a mapping */
		n--;
	if (n == 0) {
		snprintf(why, len, "cannot read the code at 0x%llx", (unsigned long long)addr);
		return -EFAULT;
	}
	struct reloc_plan plan;
	int err = reloc_plan_make(&plan, addr, code, n, why, len);
	if (!err)
		err = reloc_plan_fits(&plan, t->opts.entry_size, why, len);
	if (err)
		return err;
	uint8_t int3 = INT3;
	if (mem_write(p, addr, &int3, 1)) {
		snprintf(why, len, "cannot write the breakpoint at 0x%llx", (unsigned long long)addr);
		return -EFAULT;
	}
	struct site *s = site_insert(p, addr);
	s->orig = code[0];
	s->plan = plan;
	s->row = row;
	s->internal = row == NULL;
	s->jump_tried = s->internal;
	if (fn)
		s->fn = *fn;
	return 0;
}
