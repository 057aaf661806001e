/*
 * Placing probes in one process image: each probe argument not yet resolved in it is
 * resolved against the image's maps and symbols and armed at every address it names;
 * a probe whose module is not mapped yet waits for ld.so (the program's entry) or a
 * dlopen (ld.so's _dl_debug_state), both watched through sites of ptss's own.
 */
#define _GNU_SOURCE
#include "engine.h"
#include "x86/scan.h"

#include <elf.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int arm_internal(struct tracer *t, struct process *p, uint64_t addr)
{
	char why[256];
	return site_arm(t, p, addr, NULL, NULL, why, sizeof(why));
}

/* A value of /proc/PID/auxv: AT_ENTRY, where the program starts once ld.so is done;
 * AT_BASE, where ld.so was loaded (0: the program has no interpreter); AT_HWCAP2. -1
 * when unknown. */
int auxv_value(pid_t pid, uint64_t type, uint64_t *value)
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
	say_error(t, "probe %s: %s", t->specs[i].arg, text);
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
 * per run; at the end of the run a probe never armed is an error (api.c). */
static void say_waiting(struct tracer *t, int i)
{
	struct spec *sp = &t->specs[i];
	if (sp->warned)
		return;
	sp->warned = true;
	char what[320];
	module_words(&sp->parsed, what, sizeof(what), "no library named");
	say_info(t, "probe %s: %s%s; armed if the program loads it with dlopen, an error at the end "
	     "if it never does", sp->arg, what, sp->parsed.module_is_path ? " is not loaded" : " is loaded");
}

/* The function a probe names, and its FUNC.cold part (what gcc splits off) if any. */
static struct site_fn function_of(const struct probe_spec_target *tg, const struct maps_snapshot *snap)
{
	struct site_fn fn = { .addr = tg->addr - tg->offset, .size = tg->size };
	char cold[512];
	snprintf(cold, sizeof(cold), "%s.cold", tg->name);
	struct probe_spec spec = { .module = tg->module, .func = cold, .module_is_path = true };
	struct probe_spec_result res = { 0 };
	if (probe_spec_resolve(&spec, snap, &res, NULL, 0) == 0 && res.n > 0) {
		fn.cold_addr = res.targets[0].addr;
		fn.cold_size = res.targets[0].size;
	}
	probe_spec_result_free(&res);
	return fn;
}

/* FUNC+OFF must start an instruction of FUNC. */
static int check_boundary(struct process *p, const struct probe_spec_target *tg, const struct site_fn *fn,
			  char *why, size_t len)
{
	struct jump_code parts[2];
	uint8_t *bytes;
	size_t n = sites_read_function(p, fn, parts, &bytes);
	bool ok = n && scan_boundary(&parts[0], tg->addr);
	free(bytes);
	if (!ok)
		snprintf(why, len, "%s+%#llx is not where an instruction of %s starts", tg->name,
			 (unsigned long long)tg->offset, tg->name);
	return ok ? 0 : -EINVAL;
}

/* With opts.latency: every place where FUNC may leave, armed to end its calls. */
static int arm_exits(struct tracer *t, struct process *p, struct row *row, const struct site_fn *fn,
		     char *why, size_t len)
{
	struct jump_code parts[2];
	uint8_t *bytes;
	size_t n = sites_read_function(p, fn, parts, &bytes);
	uint64_t exits[256];
	long m = n ? scan_exits(parts, n, exits, 256) : -1;
	int err = 0;
	if (m < 0 || m > 256)
		err = -ENOTSUP;
	for (long i = 0; i < m && !err; i++)
		err = site_arm_exit(t, p, exits[i], row, fn, why, len);
	free(bytes);
	if (m < 0 || m > 256)
		snprintf(why, len, "%s: cannot find its returns (%s)", row->probe,
			 m < 0 ? "its size is unknown or its code does not decode" : "more than 256");
	return err;
}

int place_probes(struct tracer *t, struct process *p, bool fatal)
{
	char err[512];
	struct maps_snapshot *snap;
	if (maps_read(p->pid, &snap, err, sizeof(err))) {
		say_error(t, "cannot read the memory map of %d: %s", (int)p->pid, err);
		return OUT_PROBE;
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
				rc = OUT_PROBE;
		} else {
			p->resolved[i] = true;
			for (size_t k = 0; k < res.n && !rc; k++) {
				struct probe_spec_target *tg = &res.targets[k];
				char name[300], why[256];
				snprintf(name, sizeof(name), tg->offset ? "%s+%#llx" : "%s", tg->name,
					 (unsigned long long)tg->offset);
				struct row *row = count_row(t, tg->module, name, tg->addr);
				if (!row->sig)
					row->sig = &t->specs[i].parsed;
				struct site_fn fn = function_of(tg, snap);
				int fail = tg->offset ? check_boundary(p, tg, &fn, why, sizeof(why)) : 0;
				if (!fail)
					fail = site_arm(t, p, tg->addr, row, &fn, why, sizeof(why));
				if (!fail && t->opts.latency && !tg->offset)
					fail = arm_exits(t, p, row, &fn, why, sizeof(why));
				if (fail) {
					probe_error(t, p, i, "%s", why);
					if (!t->specs[i].parsed.glob)
						rc = OUT_PROBE; /* a glob skips what it cannot place */
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
		if (entry && linked && !arm_internal(t, p, entry))
			p->entry_site = entry;
	}
	if (!rc && deferred && !p->notice_site) {
		uint64_t notice = dlopen_notice(snap);
		if (notice && !site_find(p, notice) && !arm_internal(t, p, notice))
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
			rc = OUT_PROBE;
	}
	free(waiting);
	maps_free(snap);
	return rc;
}
