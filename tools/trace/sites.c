/*
 * Probe sites in one process image: resolving PROBE arguments against the image's maps
 * and symbols, deciding how each displaced instruction runs (relocate.c), and writing and
 * restoring the int3 bytes.
 */
#define _GNU_SOURCE
#include "tracer.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
	for (size_t i = 0; i < p->nsites; i++)
		mem_write(p, p->sites[i].addr, &p->sites[i].orig, 1);
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

/* Decodes the instruction at addr and writes int3 over it. */
static int arm(struct tracer *t, struct process *p, uint64_t addr, struct row *row, char *why, size_t len)
{
	if (site_find(p, addr))
		return 0; /* two probes naming one address: one site */
	uint8_t code[RELOC_INSN_MAX];
	size_t n = sizeof(code);
	while (n > 0 && mem_read(p, addr, code, n)) /* the instruction may end a mapping */
		n--;
	if (n == 0) {
		snprintf(why, len, "cannot read the code at 0x%llx", (unsigned long long)addr);
		return -EFAULT;
	}
	struct reloc_plan plan;
	int err = reloc_plan_make(&plan, addr, code, n, why, len);
	if (!err)
		err = reloc_plan_fits(&plan, t->set->entry_size, why, len);
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
	return 0;
}

int sites_arm_internal(struct tracer *t, struct process *p, uint64_t addr)
{
	char why[256];
	return arm(t, p, addr, NULL, why, sizeof(why));
}

static struct row *row_for(struct tracer *t, const char *module, const char *name, uint64_t addr)
{
	for (size_t i = 0; i < t->nrows; i++)
		if (!strcmp(t->rows[i]->module, module) && !strcmp(strchr(t->rows[i]->probe, ':') + 1, name))
			return t->rows[i];
	struct row *r = calloc(1, sizeof(*r));
	t->rows = realloc(t->rows, (t->nrows + 1) * sizeof(*t->rows));
	if (!r || !t->rows)
		abort();
	char *copy = strdup(module);
	if (asprintf(&r->probe, "%s:%s", basename(copy), name) < 0)
		abort();
	free(copy);
	r->module = strdup(module);
	r->addr = addr;
	r->index = t->nrows;
	t->rows[t->nrows++] = r;
	return r;
}

/* A value of /proc/PID/auxv: AT_ENTRY, where the program starts once ld.so is done;
 * AT_BASE, where ld.so was loaded (0: the program has no interpreter). -1 when unknown. */
static int auxv_value(pid_t pid, uint64_t type, uint64_t *value)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/auxv", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	Elf64_auxv_t av;
	int rc = -1;
	while (fd >= 0 && read(fd, &av, sizeof(av)) == sizeof(av) && av.a_type != AT_NULL)
		if (av.a_type == type) {
			*value = av.a_un.a_val;
			rc = 0;
		}
	if (fd >= 0)
		close(fd);
	return rc;
}

static uint64_t program_entry(pid_t pid)
{
	uint64_t entry = 0;
	auxv_value(pid, AT_ENTRY, &entry);
	return entry;
}

/* ld.so calls _dl_debug_state after every change to the list of loaded objects. */
static uint64_t dlopen_notice(const struct maps_snapshot *snap)
{
	struct probe_spec spec = { .module = "ld-linux-x86-64", .func = "_dl_debug_state" };
	struct probe_spec_result res = { 0 };
	uint64_t addr = 0;
	if (probe_spec_resolve(&spec, snap, &res, NULL, 0) == 0 && res.n > 0)
		addr = res.targets[0].addr;
	probe_spec_result_free(&res);
	return addr;
}

/* An error about a probe: said once, on one line; the probe is settled in this image. */
__attribute__((format(printf, 4, 5)))
static void probe_error(struct tracer *t, struct process *p, int i, const char *fmt, ...)
{
	char text[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	msg("probe %s: %s", t->specs[i].arg, text);
	t->specs[i].said = true;
	p->resolved[i] = true;
}

/* "no library named 'libc'" or "/path/lib.so" */
static void module_words(const struct probe_spec *ps, char *buf, size_t len, const char *named)
{
	if (ps->module_is_path)
		snprintf(buf, len, "%s", ps->module);
	else
		snprintf(buf, len, "%s '%s'", named, ps->module);
}

/* Probe I names a module that is not mapped, and ptss cannot see one being loaded in this
 * image: no ld.so notice to watch (a static program, or a dynamic linker other than glibc's). */
static void say_unloadable(struct tracer *t, struct process *p, int i, const struct maps_snapshot *snap)
{
	const struct probe_spec *ps = &t->specs[i].parsed;
	const char *exe = snap->exe ? snap->exe : "the program";
	uint64_t base = 1;
	if (auxv_value(p->pid, AT_BASE, &base) == 0 && base == 0) {
		/* The program's own copy of the function, if it has one, is the one it runs. */
		struct probe_spec own = { .func = ps->func, .glob = ps->glob };
		struct probe_spec_result res = { 0 };
		bool has_own = probe_spec_resolve(&own, snap, &res, NULL, 0) == 0 && res.n > 0;
		probe_spec_result_free(&res);
		char own_hint[300] = "";
		if (has_own)
			snprintf(own_hint, sizeof(own_hint), "; its own copy is probed as '%s'", ps->func);
		if (ps->module_is_path)
			probe_error(t, p, i, "%s is statically linked: it loads no library, %s included%s",
				    exe, ps->module, own_hint);
		else
			probe_error(t, p, i, "%s is statically linked: it loads no library, so none "
				    "named '%s'%s", exe, ps->module, own_hint);
	} else {
		char what[320];
		module_words(ps, what, sizeof(what), "no library named");
		probe_error(t, p, i, "%s%s, and ptss cannot see libraries loaded later in %s "
			    "(its dynamic linker has no _dl_debug_state)",
			    what, ps->module_is_path ? " is not loaded" : " is loaded", exe);
	}
}

/* Probe I waits for its module, which only a dlopen (or an exec) can still bring: said once
 * per run; at the end of the run a probe never armed is an error (ptss.c). */
static void say_waiting(struct tracer *t, int i)
{
	struct spec *sp = &t->specs[i];
	if (sp->warned)
		return;
	sp->warned = true;
	char what[320];
	module_words(&sp->parsed, what, sizeof(what), "no library named");
	info(t, "probe %s: %s%s; armed if the program loads it with dlopen, an error at the end "
	     "if it never does", sp->arg, what, sp->parsed.module_is_path ? " is not loaded" : " is loaded");
}

int sites_place(struct tracer *t, struct process *p, bool fatal)
{
	char err[512];
	struct maps_snapshot *snap;
	if (maps_read(p->pid, &snap, err, sizeof(err))) {
		msg("cannot read the memory map of %d: %s", (int)p->pid, err);
		return PTSS_EXIT_PROBE;
	}
	bool *waiting = calloc((size_t)t->nspecs + 1, sizeof(*waiting));
	if (!waiting)
		abort();
	bool deferred = false;
	int rc = 0;
	for (int i = 0; i < t->nspecs && !rc; i++) {
		if (p->resolved[i])
			continue;
		struct probe_spec_result res = { 0 };
		int e = probe_spec_resolve(&t->specs[i].parsed, snap, &res, err, sizeof(err));
		if (e == PROBE_SPEC_ENOTMAPPED) {
			deferred = waiting[i] = true;
		} else if (e) {
			probe_error(t, p, i, "%s", err);
			if (fatal)
				rc = PTSS_EXIT_PROBE;
		} else {
			p->resolved[i] = true;
			for (size_t k = 0; k < res.n && !rc; k++) {
				struct probe_spec_target *tg = &res.targets[k];
				struct row *row = row_for(t, tg->module, tg->name, tg->addr);
				char why[256];
				if (arm(t, p, tg->addr, row, why, sizeof(why))) {
					probe_error(t, p, i, "%s", why);
					if (!t->specs[i].parsed.glob)
						rc = PTSS_EXIT_PROBE; /* a glob skips what it cannot place */
				} else {
					t->specs[i].armed = true;
				}
			}
			if (!fatal && rc) /* later images: one probe's failure ends nothing */
				rc = 0;
		}
		probe_spec_result_free(&res);
	}
	/* Libraries load before the program's entry (ld.so) or later (dlopen): watch both. */
	if (!rc && deferred && p->before_entry && !p->entry_site) {
		uint64_t entry = program_entry(p->pid);
		bool linked = false;
		for (size_t m = 0; m < snap->n_modules; m++)
			linked |= !snap->modules[m].is_main && strstr(snap->modules[m].path, "/ld-linux");
		if (entry && linked && !sites_arm_internal(t, p, entry))
			p->entry_site = entry;
	}
	if (!rc && deferred && !p->notice_site) {
		uint64_t notice = dlopen_notice(snap);
		if (notice && !site_find(p, notice) && !sites_arm_internal(t, p, notice))
			p->notice_site = notice;
	}
	/* What the probes still waiting for their module can expect. */
	for (int i = 0; i < t->nspecs && !rc; i++) {
		if (!waiting[i] || p->entry_site) /* ld.so loads the needed libraries first */
			continue;
		if (p->notice_site) {
			say_waiting(t, i);
			continue;
		}
		say_unloadable(t, p, i, snap);
		if (fatal)
			rc = PTSS_EXIT_PROBE;
	}
	free(waiting);
	maps_free(snap);
	return rc;
}
