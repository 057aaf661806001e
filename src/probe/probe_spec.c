/* probe_spec: parse "MODULE:FUNC" and resolve it in a maps snapshot.  See probe_spec.h. */
#include "err.h"
#include "probe_spec.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static int parse_names(const char *arg, struct probe_spec *out, char *err, size_t errlen);

/* "(str, int)": the argument types into out; 0 or -EINVAL with err. */
static int parse_sig(const char *arg, const char *open, struct probe_spec *out, char *err, size_t errlen)
{
	static const char *const names[] = { [ARG_INT] = "int", [ARG_UINT] = "uint", [ARG_HEX] = "hex",
					     [ARG_PTR] = "ptr", [ARG_STR] = "str", [ARG_CHAR] = "char",
					     [ARG_BOOL] = "bool" };
	out->has_sig = true;
	const char *p = open + 1, *end = arg + strlen(arg) - 1; /* at ')' */
	while (p < end) {
		while (p < end && (*p == ' ' || *p == ','))
			p++;
		size_t n = 0;
		while (p + n < end && p[n] != ',' && p[n] != ' ')
			n++;
		if (!n)
			break;
		unsigned t = 0;
		while (t < sizeof(names) / sizeof(names[0]) && (strlen(names[t]) != n || strncmp(p, names[t], n)))
			t++;
		if (t == sizeof(names) / sizeof(names[0]))
			return err_set(err, errlen, -EINVAL, "'%s': unknown argument type '%.*s' (int, uint, "
				       "hex, ptr, str, char, bool)", arg, (int)n, p);
		if (out->nargs == PROBE_ARGS_MAX)
			return err_set(err, errlen, -EINVAL, "'%s': at most %d arguments", arg, PROBE_ARGS_MAX);
		out->args[out->nargs++] = (uint8_t)t;
		p += n;
	}
	return 0;
}

/* "+OFF" at the end of func: cut off, into out; 0 or -EINVAL with err. */
static int parse_offset(const char *arg, char *func, struct probe_spec *out, char *err, size_t errlen)
{
	char *plus = strrchr(func, '+');
	if (!plus)
		return 0;
	char *end;
	errno = 0;
	unsigned long long off = strtoull(plus + 1, &end, 0);
	if (plus == func || !plus[1] || *end || errno || plus[1] == '-')
		return err_set(err, errlen, -EINVAL, "'%s': not an offset: '%s' (decimal or 0x)", arg, plus + 1);
	*plus = '\0';
	out->has_offset = true;
	out->offset = off;
	return 0;
}

int probe_spec_parse(const char *full, struct probe_spec *out, char *err, size_t errlen)
{
	if (!full || !out)
		return err_set(err, errlen, -EINVAL, "probe_spec_parse: NULL argument");
	*out = (struct probe_spec){ 0 };
	/* The signature first: a module path may hold ':', a signature never does. */
	const char *open = strchr(full, '(');
	char *arg = open ? strndup(full, (size_t)(open - full)) : strdup(full);
	if (!arg)
		return err_set(err, errlen, -ENOMEM, "out of memory");
	int rc = 0;
	if (open && full[strlen(full) - 1] != ')')
		rc = err_set(err, errlen, -EINVAL, "'%s': the argument types end with ')'", full);
	else if (open)
		rc = parse_sig(full, open, out, err, errlen);
	if (!rc)
		rc = parse_names(arg, out, err, errlen);
	free(arg);
	if (rc)
		probe_spec_free(out);
	return rc;
}

static int parse_names(const char *arg, struct probe_spec *out, char *err, size_t errlen)
{
	const char *colon = strrchr(arg, ':');
	const char *func = colon ? colon + 1 : arg;
	if (!*func)
		return err_set(err, errlen, -EINVAL, "'%s': no function name", arg);
	if (*func == '@')
		return err_set(err, errlen, -EINVAL, "'%s': no function name before '@'", arg);
	if (colon && colon > arg) {
		size_t n = (size_t)(colon - arg);
		if (!memchr(arg, '/', n) && strcspn(arg, "*?[") < n)
			return err_set(err, errlen, -EINVAL,
				      "'%s': a module name cannot be a glob; name one module", arg);
		if (!(out->module = strndup(arg, n)))
			return err_set(err, errlen, -ENOMEM, "out of memory");
		out->module_is_path = memchr(arg, '/', n) != NULL;
	}
	if (!(out->func = strdup(func)))
		return err_set(err, errlen, -ENOMEM, "out of memory");
	int rc = parse_offset(arg, out->func, out, err, errlen);
	if (rc)
		return rc;
	out->glob = strcspn(out->func, "*?[") < strcspn(out->func, "@");
	if (out->glob && out->has_offset)
		return err_set(err, errlen, -EINVAL, "'%s': an offset names one function, not a glob", arg);
	return 0;
}

void probe_spec_free(struct probe_spec *spec)
{
	if (!spec)
		return;
	free(spec->module);
	free(spec->func);
	*spec = (struct probe_spec){ 0 };
}

bool probe_spec_name_matches(const char *name, const char *path)
{
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	size_t n = strlen(name);
	if (n == 0 || strncmp(base, name, n) != 0)
		return false;
	return base[n] == '\0' || base[n] == '-' || strncmp(base + n, ".so", 3) == 0;
}

bool probe_spec_is_vdso(const struct probe_spec *spec)
{
	static const char *const names[] = { "vdso", "linux-vdso", "linux-vdso.so",
					     "linux-vdso.so.1" };
	if (!spec || !spec->module || spec->module_is_path)
		return false;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(spec->module, names[i]))
			return true;
	return false;
}

void probe_spec_result_free(struct probe_spec_result *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++) {
		free(r->targets[i].module);
		free(r->targets[i].name);
		free(r->targets[i].version);
	}
	free(r->targets);
	*r = (struct probe_spec_result){ 0 };
}

/* ---- finding the modules ---- */

static bool path_exists(const char *path, pid_t pid)
{
	char buf[PATH_MAX + 32];
	if (access(path, F_OK) == 0)
		return true;
	snprintf(buf, sizeof buf, "/proc/%d/root%s", (int)pid, path);
	return pid > 0 && path[0] == '/' && access(buf, F_OK) == 0;
}

/* Marks in SEL the modules SPEC names; all of them are instances of one file. */
static int select_modules(const struct probe_spec *spec, const struct maps_snapshot *s,
			  bool *sel, char *err, size_t errlen)
{
	size_t n = 0;
	if (!spec->module) {
		for (size_t i = 0; i < s->n_modules; i++)
			n += sel[i] = s->modules[i].is_main;
		if (n == 0)
			return err_set(err, errlen, PROBE_SPEC_ENOTMAPPED,
				      "the main executable is not among the mappings");
		return 0;
	}
	if (spec->module_is_path) {
		char rp[PATH_MAX];
		const char *want = realpath(spec->module, rp) ? rp : spec->module;
		for (size_t i = 0; i < s->n_modules; i++)
			n += sel[i] = strcmp(s->modules[i].path, want) == 0 ||
				      strcmp(s->modules[i].path, spec->module) == 0;
		if (n)
			return 0;
		if (!path_exists(spec->module, s->pid))
			return err_set(err, errlen, PROBE_SPEC_ENOFILE, "%s: no such file",
				      spec->module);
		return err_set(err, errlen, PROBE_SPEC_ENOTMAPPED, "%s is not mapped (yet)",
			      spec->module);
	}
	const char *first = NULL;
	for (size_t i = 0; i < s->n_modules; i++) {
		const char *p = s->modules[i].path;
		if (!probe_spec_name_matches(spec->module, p))
			continue;
		if (first && strcmp(first, p) != 0)
			return err_set(err, errlen, PROBE_SPEC_EAMBIGUOUS,
				      "'%s' matches both %s and %s: give a path", spec->module,
				      first, p);
		first = p;
		sel[i] = true;
		n++;
	}
	if (n == 0)
		return err_set(err, errlen, PROBE_SPEC_ENOTMAPPED,
			      "no mapped file is named '%s' (not loaded yet?)", spec->module);
	return 0;
}

/* ---- resolving ---- */

static bool in_exec_mapping(const struct maps_snapshot *s, const struct maps_module *mod,
			    uint64_t addr)
{
	const struct maps_mapping *m = maps_find(s, addr);
	return m && m->kind == MAPS_FILE && m->inode == mod->inode && m->perms[2] == 'x' &&
	       strcmp(m->path, mod->path) == 0;
}

static int add_target(struct probe_spec_result *r, size_t *cap,
		      const struct probe_spec_target *t)
{
	if (r->n == *cap) {
		size_t c = *cap ? *cap * 2 : 16;
		struct probe_spec_target *v = realloc(r->targets, c * sizeof *v);
		if (!v)
			return -ENOMEM;
		r->targets = v;
		*cap = c;
	}
	struct probe_spec_target *d = &r->targets[r->n];
	*d = *t;
	d->module = strdup(t->module);
	d->name = strdup(t->name);
	d->version = t->version ? strdup(t->version) : NULL;
	r->n++; /* counted before the check, so that free() sees what was allocated */
	if (!d->module || !d->name || (t->version && !d->version))
		return -ENOMEM;
	return 0;
}

static int resolve_in(const struct probe_spec *spec, const struct maps_snapshot *s,
		      const struct maps_module *mod, const struct sym_file *f,
		      struct probe_spec_result *r, size_t *cap, char *err, size_t errlen)
{
	struct sym_match *m;
	size_t n;
	int rc = sym_select(f, spec->func, &m, &n, err, errlen);
	if (rc)
		return rc;
	for (size_t i = 0; i < n && !rc; i++) {
		const struct sym_entry *e = m[i].entry;
		struct probe_spec_target t = {
			.module = (char *)mod->path, .name = (char *)m[i].name->name,
			.version = (char *)m[i].name->version, .vaddr = e->vaddr,
			.addr = sym_runtime_addr(e, mod->bias), .size = e->size };
		if ((rc = sym_probeable(&m[i], err, errlen))) {
			if (spec->glob) {
				r->n_ifunc++;
				rc = 0;
			}
			continue;
		}
		if (!in_exec_mapping(s, mod, t.addr) ||
		    sym_vaddr_to_offset(f, e->vaddr, &t.file_offset)) {
			if (spec->glob)
				r->n_outside++;
			else
				rc = err_set(err, errlen, SYM_ENOTLOADED,
					    "%s: %s at %#llx is not in an executable mapping of "
					    "the module (still being loaded?)",
					    mod->path, t.name, (unsigned long long)t.addr);
			continue;
		}
		if (spec->has_offset && (!e->size || spec->offset >= e->size)) {
			if (e->size)
				rc = err_set(err, errlen, -EINVAL, "%s+%#llx: past the end of %s (%llu "
					     "bytes)", t.name, (unsigned long long)spec->offset, t.name,
					     (unsigned long long)e->size);
			else
				rc = err_set(err, errlen, -EINVAL, "%s+%#llx: the size of %s is unknown",
					     t.name, (unsigned long long)spec->offset, t.name);
			continue;
		}
		t.addr += spec->offset;
		t.offset = spec->offset;
		if ((rc = add_target(r, cap, &t)))
			err_set(err, errlen, rc, "out of memory");
	}
	free(m);
	return rc;
}

int probe_spec_resolve(const struct probe_spec *spec, const struct maps_snapshot *s,
		       struct probe_spec_result *out, char *err, size_t errlen)
{
	if (!spec || !spec->func || !s || !out)
		return err_set(err, errlen, -EINVAL, "probe_spec_resolve: NULL argument");
	*out = (struct probe_spec_result){ 0 };
	bool *sel = calloc(s->n_modules ? s->n_modules : 1, sizeof *sel);
	if (!sel)
		return err_set(err, errlen, -ENOMEM, "out of memory");
	int rc = select_modules(spec, s, sel, err, errlen);
	struct sym_file *f = NULL;
	const struct maps_module *f_mod = NULL;
	size_t cap = 0;
	/* The selected modules are instances of one path: read the file once, unless it was
	 * replaced between two loads. */
	for (size_t i = 0; i < s->n_modules && !rc; i++) {
		const struct maps_module *mod = &s->modules[i];
		if (!sel[i])
			continue;
		if (mod->elf_err) {
			rc = err_set(err, errlen, mod->elf_err, "%s", mod->error);
			break;
		}
		if (f && (f_mod->inode != mod->inode || f_mod->dev_major != mod->dev_major ||
			  f_mod->dev_minor != mod->dev_minor)) {
			sym_close(f);
			f = NULL;
		}
		if (!f && (rc = sym_open(mod->open_path, 0, &f, err, errlen)))
			break;
		f_mod = mod;
		rc = resolve_in(spec, s, mod, f, out, &cap, err, errlen);
	}
	if (!rc && out->n == 0)
		rc = err_set(err, errlen, out->n_ifunc ? SYM_EIFUNC : SYM_ENOMATCH,
			    "'%s': every function it matches is %s", spec->func,
			    out->n_ifunc ? "an ifunc (its symbol is a resolver)"
					 : "outside the module's executable mappings");
	sym_close(f);
	free(sel);
	return rc;
}
