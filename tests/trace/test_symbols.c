/*
 * maps, symbols and probe_spec: maps text with tricky lines, and probes resolved in live
 * targets (PIE, non-PIE, stripped, a dlopen'ed versioned library), each address checked
 * against the one the target prints of itself; then the errors.
 */
#define _GNU_SOURCE
#include "maps.h"
#include "probe_spec.h"
#include "symbols.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#if !defined(SYM_TARGET_PIE) || !defined(SYM_TARGET_NOPIE) || !defined(SYM_TARGET_STRIPPED) || \
	!defined(SYMTEST_LIB) || !defined(SYMTEST_LIB_STRIPPED)
#error "the meson file passes the paths of the targets"
#endif

#define ERRLEN 512

/* ---- a target process that prints "KIND NAME ADDR" lines, then "ready" ---- */

struct shown {
	char name[64];
	uint64_t addr;
};

struct child {
	pid_t pid;
	int in;
	FILE *out;
	struct shown v[32];
	size_t n;
};

static void read_until_ready(struct child *c)
{
	char line[512], kind[16], name[64];
	void *p;
	while (fgets(line, sizeof line, c->out)) {
		if (strcmp(line, "ready\n") == 0)
			return;
		if (sscanf(line, "%15s %63s %p", kind, name, &p) != 3 || c->n == 32)
			fail_msg("target said: %s", line);
		snprintf(c->v[c->n].name, sizeof c->v[c->n].name, "%s", name);
		c->v[c->n++].addr = (uint64_t)(uintptr_t)p;
	}
	fail_msg("target ended early");
}

static void spawn(struct child *c, const char *path)
{
	int in[2], out[2];
	memset(c, 0, sizeof *c);
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	c->pid = fork();
	assert_true(c->pid >= 0);
	if (c->pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		execl(path, path, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	c->in = in[1];
	c->out = fdopen(out[0], "r");
	assert_non_null(c->out);
	read_until_ready(c);
}

static void command(struct child *c, const char *cmd)
{
	char buf[PATH_MAX + 16];
	int n = snprintf(buf, sizeof buf, "%s\n", cmd);
	assert_int_equal(write(c->in, buf, (size_t)n), n);
	read_until_ready(c);
}

static void finish(struct child *c)
{
	int st;
	close(c->in);
	fclose(c->out);
	assert_int_equal(waitpid(c->pid, &st, 0), c->pid);
}

static uint64_t shown(const struct child *c, const char *name)
{
	for (size_t i = 0; i < c->n; i++)
		if (strcmp(c->v[i].name, name) == 0)
			return c->v[i].addr;
	fail_msg("target did not show %s", name);
	return 0;
}

/* Resolves ARG in C's current mappings; returns the error, R is filled on success. */
static int resolve(const struct child *c, const char *arg, struct probe_spec_result *r,
		   char *err)
{
	struct maps_snapshot *s;
	struct probe_spec spec;
	assert_int_equal(maps_read(c->pid, &s, err, ERRLEN), 0);
	assert_int_equal(probe_spec_parse(arg, &spec, err, ERRLEN), 0);
	int rc = probe_spec_resolve(&spec, s, r, err, ERRLEN);
	probe_spec_free(&spec);
	maps_free(s);
	return rc;
}

/* ARG must resolve to exactly one address, the one the target showed as NAME. */
static void expect_one(const struct child *c, const char *arg, const char *name)
{
	struct probe_spec_result r;
	char err[ERRLEN] = "";
	int rc = resolve(c, arg, &r, err);
	if (rc)
		fail_msg("%s: %d %s", arg, rc, err);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.targets[0].addr, shown(c, name));
	probe_spec_result_free(&r);
}

static void expect_error(const struct child *c, const char *arg, int code)
{
	struct probe_spec_result r;
	char err[ERRLEN] = "";
	int rc = resolve(c, arg, &r, err);
	if (rc != code)
		fail_msg("%s: got %d (%s), want %d", arg, rc, err, code);
	assert_true(err[0] != '\0');
	probe_spec_result_free(&r);
}

/* The file bytes at the target's file_offset are the bytes at its runtime address. */
static void expect_same_bytes(pid_t pid, const struct probe_spec_target *t)
{
	unsigned char a[16], b[16];
	char mem[64];
	snprintf(mem, sizeof mem, "/proc/%d/mem", (int)pid);
	int fm = open(mem, O_RDONLY | O_CLOEXEC);
	if (fm < 0)
		return; /* no ptrace access to the child here: nothing to compare */
	int ff = open(t->module, O_RDONLY | O_CLOEXEC);
	assert_true(ff >= 0);
	assert_int_equal(pread(ff, a, sizeof a, (off_t)t->file_offset), sizeof a);
	assert_int_equal(pread(fm, b, sizeof b, (off_t)t->addr), sizeof b);
	assert_memory_equal(a, b, sizeof a);
	close(ff);
	close(fm);
}

/* ---- maps text ---- */

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

static char *fmt(const char *f, ...)
{
	va_list ap;
	char *s;
	va_start(ap, f);
	assert_true(vasprintf(&s, f, ap) >= 0);
	va_end(ap);
	return s;
}

static unsigned long long inode_of(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return (unsigned long long)st.st_ino;
}

static void test_maps_text(void **state)
{
	(void)state;
	char err[ERRLEN];
	char *text = fmt(
		"00400000-00401000 r--p 00000000 08:01 %llu %s\n"
		"00401000-00402000 r-xp 00001000 08:01 %llu %s\n"
		"00600000-00601000 rw-p 00000000 00:00 0 \n"
		"01a2b000-01a4c000 rw-p 00000000 00:00 0                          [heap]\n"
		"555555554000-555555555000 r--p 00000000 08:01 %llu    %s\n"
		"7f0000000000-7f0000001000 r--p 00000000 fd:00 1234   /opt/my dir/lib with spaces.so\n"
		"7f0000001000-7f0000002000 r-xp 00001000 fd:00 1234   /opt/my dir/lib with spaces.so\n"
		"7f0000003000-7f0000004000 r-xp 00000000 00:05 99     /memfd:jit (deleted)\n"
		"7f0000005000-7f0000006000 rw-s 00000000 00:01 77     /dev/zero (deleted)\n"
		"7f0000007000-7f0000008000 r--p 00000000 fd:00 55     /tmp/new\\012line.so\n"
		"7f0000008000-7f0000009000 rw-p 00000000 00:00 0      [anon:glibc: malloc]\n"
		"7f0000009000-7f000000a000 rw-s 00000000 00:0e 12     anon_inode:[perf_event]\n"
		"7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0      [vdso]\n"
		"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]",
		inode_of(SYM_TARGET_NOPIE), SYM_TARGET_NOPIE, inode_of(SYM_TARGET_NOPIE),
		SYM_TARGET_NOPIE, inode_of(SYM_TARGET_PIE), SYM_TARGET_PIE);
	struct maps_snapshot *s;
	int rc = maps_parse(text, strlen(text), 0, SYM_TARGET_NOPIE, &s, err, sizeof err);
	if (rc)
		fail_msg("%s", err);
	assert_int_equal(s->n_maps, 14);

	const struct maps_mapping *m = &s->maps[1];
	assert_int_equal(m->start, 0x401000);
	assert_int_equal(m->end, 0x402000);
	assert_string_equal(m->perms, "r-xp");
	assert_int_equal(m->offset, 0x1000);
	assert_int_equal(m->dev_major, 8);
	assert_int_equal(m->dev_minor, 1);
	assert_int_equal(m->kind, MAPS_FILE);
	assert_string_equal(m->path, SYM_TARGET_NOPIE);
	assert_int_equal(s->maps[2].kind, MAPS_ANON);
	assert_null(s->maps[2].path);
	assert_int_equal(s->maps[3].kind, MAPS_PSEUDO);
	assert_string_equal(s->maps[3].path, "[heap]");
	assert_string_equal(s->maps[5].path, "/opt/my dir/lib with spaces.so");
	assert_string_equal(s->maps[7].path, "/memfd:jit");
	assert_true(s->maps[7].deleted);
	assert_string_equal(s->maps[9].path, "/tmp/new\nline.so");
	assert_string_equal(s->maps[10].path, "[anon:glibc: malloc]");
	assert_int_equal(s->maps[11].kind, MAPS_PSEUDO); /* a path, but not a file's */
	assert_int_equal(s->maps[12].kind, MAPS_PSEUDO);
	assert_string_equal(s->maps[13].path, "[vsyscall]");
	assert_int_equal(s->maps[13].end, 0xffffffffff601000ull);

	/* Modules: nopie, pie, spaces (2 mappings), memfd, /dev/zero, newline. */
	assert_int_equal(s->n_modules, 6);
	const struct maps_module *mod = &s->modules[0];
	assert_true(mod->is_main);
	assert_ptr_equal(maps_main(s), mod);
	assert_int_equal(mod->elf_err, 0);
	assert_int_equal(mod->bias, 0); /* non-PIE */
	assert_int_equal(mod->end, 0x402000);
	mod = &s->modules[1];
	assert_false(mod->is_main);
	assert_int_equal(mod->elf_err, 0);
	assert_int_equal(mod->bias, 0x555555554000ull);
	mod = &s->modules[2];
	assert_string_equal(mod->path, "/opt/my dir/lib with spaces.so");
	assert_int_equal(mod->start, 0x7f0000000000ull);
	assert_int_equal(mod->end, 0x7f0000002000ull);
	assert_int_equal(mod->elf_err, -ENOENT);
	assert_non_null(mod->error);
	assert_null(mod->open_path);
	assert_true(s->modules[3].deleted);
	assert_int_equal(s->modules[3].elf_err, -ESTALE); /* no pid: no map_files */
	assert_string_equal(s->modules[4].path, "/dev/zero");
	assert_string_equal(s->modules[5].path, "/tmp/new\nline.so");

	assert_ptr_equal(maps_find(s, 0x401fff), &s->maps[1]);
	assert_null(maps_find(s, 0x402000));
	maps_free(s);
	free(text);
}

static void test_maps_bad_text(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"00400000-00401000 r--p 00000000 08:01 12 /a\nzzzz\n",
		"00401000-00400000 r--p 00000000 08:01 12 /a\n",   /* end < start */
		"00400000-00401000 r--p 00000000 08:01\n",         /* no inode */
		"00400000-00401000 r-p 00000000 08:01 12 /a\n",    /* 3 perms */
		"00400000-00401000 r--p 00000000 08:01 12x /a\n",  /* junk after inode */
		"00400000-10000000000000000 r--p 00000000 08:01 12 /a\n", /* overflow */
	};
	char err[ERRLEN];
	struct maps_snapshot *s = NULL;
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		err[0] = '\0';
		assert_int_equal(maps_parse(bad[i], strlen(bad[i]), 0, NULL, &s, err, sizeof err),
				 -EINVAL);
		assert_null(s);
		assert_non_null(strstr(err, "line"));
	}
	assert_non_null(strstr(err, "line 1"));
	assert_int_equal(maps_parse("", 0, 0, NULL, &s, err, sizeof err), 0);
	assert_int_equal(s->n_maps, 0);
	assert_int_equal(s->n_modules, 0);
	assert_null(maps_main(s));
	maps_free(s);
}

/* A resolution on maps text: the spec's errors that need no process. */
static int resolve_text(const char *text, const char *arg, struct probe_spec_result *r,
			char *err)
{
	struct maps_snapshot *s;
	struct probe_spec spec;
	assert_int_equal(maps_parse(text, strlen(text), 0, NULL, &s, err, ERRLEN), 0);
	assert_int_equal(probe_spec_parse(arg, &spec, err, ERRLEN), 0);
	int rc = probe_spec_resolve(&spec, s, r, err, ERRLEN);
	probe_spec_free(&spec);
	maps_free(s);
	return rc;
}

static void test_resolve_text(void **state)
{
	(void)state;
	char err[ERRLEN];
	struct probe_spec_result r;

	/* Two instances of one library (dlmopen): a probe in each. */
	char *text = fmt("7f1000000000-7f1000100000 r-xp 00000000 08:01 %llu %s\n"
			 "7f2000000000-7f2000100000 r-xp 00000000 08:01 %llu %s\n",
			 inode_of(SYMTEST_LIB), SYMTEST_LIB, inode_of(SYMTEST_LIB), SYMTEST_LIB);
	int rc = resolve_text(text, "libsymtest:sym_lib_func", &r, err);
	if (rc)
		fail_msg("%s", err);
	assert_int_equal(r.n, 2);
	assert_int_equal(r.targets[1].addr - r.targets[0].addr, 0x1000000000ull);
	assert_int_equal(r.targets[0].addr, 0x7f1000000000ull + r.targets[0].vaddr);
	probe_spec_result_free(&r);
	assert_int_equal(resolve_text(text, "sym_lib_func", &r, err), PROBE_SPEC_ENOTMAPPED);
	probe_spec_result_free(&r);
	free(text);

	/* A short name that fits two different files. */
	static const char two[] = "7f1000000000-7f1000001000 r-xp 00000000 08:01 1 /a/libfoo.so.1\n"
				  "7f2000000000-7f2000001000 r-xp 00000000 08:01 2 /b/libfoo-2.so\n";
	assert_int_equal(resolve_text(two, "libfoo:f", &r, err), PROBE_SPEC_EAMBIGUOUS);
	probe_spec_result_free(&r);
	assert_int_equal(resolve_text(two, "/a/libfoo.so.1:f", &r, err), -ENOENT);
	probe_spec_result_free(&r);

	/* A mapped text file is no ELF. */
	char path[] = "/tmp/test_symbols_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "just some text\n", 15), 15);
	close(fd);
	text = fmt("7f1000000000-7f1000001000 r--p 00000000 08:01 %llu %s\n", inode_of(path),
		   path);
	char *arg = fmt("%s:f", path);
	assert_int_equal(resolve_text(text, arg, &r, err), SYM_ENOTELF);
	assert_non_null(strstr(err, "not an ELF"));
	probe_spec_result_free(&r);
	unlink(path);
	free(arg);
	free(text);
}

/* ---- probe specs ---- */

static void test_spec_parse(void **state)
{
	(void)state;
	char err[ERRLEN];
	struct probe_spec p;
	assert_int_equal(probe_spec_parse("foo", &p, err, sizeof err), 0);
	assert_null(p.module);
	assert_string_equal(p.func, "foo");
	assert_false(p.glob);
	probe_spec_free(&p);

	assert_int_equal(probe_spec_parse(":foo", &p, err, sizeof err), 0);
	assert_null(p.module);
	probe_spec_free(&p);

	assert_int_equal(probe_spec_parse("liblzma:lzma_crc*", &p, err, sizeof err), 0);
	assert_string_equal(p.module, "liblzma");
	assert_false(p.module_is_path);
	assert_string_equal(p.func, "lzma_crc*");
	assert_true(p.glob);
	probe_spec_free(&p);

	assert_int_equal(probe_spec_parse("/opt/a:b/libx.so:f@@V_2", &p, err, sizeof err), 0);
	assert_string_equal(p.module, "/opt/a:b/libx.so");
	assert_true(p.module_is_path);
	assert_string_equal(p.func, "f@@V_2");
	assert_false(p.glob);
	probe_spec_free(&p);

	static const char *const bad[] = { "", "libc:", "lib*:malloc", "libc:@V1", "@V1" };
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		err[0] = '\0';
		assert_int_equal(probe_spec_parse(bad[i], &p, err, sizeof err), -EINVAL);
		assert_true(err[0] != '\0');
		assert_null(p.module);
		assert_null(p.func);
	}
}

static void test_spec_names(void **state)
{
	(void)state;
	assert_true(probe_spec_name_matches("libc", "/usr/lib/x86_64-linux-gnu/libc.so.6"));
	assert_true(probe_spec_name_matches("libc", "/lib/libc-2.31.so"));
	assert_true(probe_spec_name_matches("libc.so.6", "/lib/libc.so.6"));
	assert_true(probe_spec_name_matches("liblzma", "/lib/liblzma.so.5.4.1"));
	assert_true(probe_spec_name_matches("ld-linux-x86-64", "/lib64/ld-linux-x86-64.so.2"));
	assert_true(probe_spec_name_matches("prog", "/usr/bin/prog"));
	assert_false(probe_spec_name_matches("libc", "/usr/lib/libcrypto.so.3"));
	assert_false(probe_spec_name_matches("libsymtest", "/x/libsymtest_stripped.so"));
	assert_false(probe_spec_name_matches("prog", "/usr/bin/program"));
	assert_false(probe_spec_name_matches("lib", "/lib/libc.so.6"));
	assert_false(probe_spec_name_matches("", "/lib/libc.so.6"));
}

/* ---- symbols read from files and images ---- */

static const struct sym_match *select_one(const struct sym_file *f, const char *pattern,
					  struct sym_match **m)
{
	size_t n;
	char err[ERRLEN];
	int rc = sym_select(f, pattern, m, &n, err, sizeof err);
	if (rc)
		fail_msg("%s: %s", pattern, err);
	assert_int_equal(n, 1);
	return *m;
}

static void check_lib(const char *path, const char *table)
{
	struct sym_file *f;
	struct sym_match *m;
	char err[ERRLEN];
	assert_int_equal(sym_open(path, 0, &f, err, sizeof err), 0);
	assert_string_equal(sym_table_name(f), table);
	assert_int_equal(sym_elf_type(f), ET_DYN);

	/* The alias shares the entry; versioned names are matched bare. */
	const struct sym_match *a = select_one(f, "sym_lib_alias", &m);
	const struct sym_entry *e = a->entry;
	assert_string_equal(a->name->version, "SYMTEST_1");
	assert_false(a->name->hidden);
	bool has_func = false;
	for (size_t i = 0; i < e->n_names; i++)
		has_func |= strcmp(e->names[i].name, "sym_lib_func") == 0;
	assert_true(has_func);
	assert_true(e->size > 0);
	uint64_t off;
	assert_int_equal(sym_vaddr_to_offset(f, e->vaddr, &off), 0);
	free(m);

	const struct sym_match *v2 = select_one(f, "sym_lib_ver", &m);
	assert_string_equal(v2->name->version, "SYMTEST_2");
	uint64_t v2addr = v2->entry->vaddr;
	free(m);
	const struct sym_match *v1 = select_one(f, "sym_lib_ver@SYMTEST_1", &m);
	assert_true(v1->name->hidden);
	assert_true(v1->entry->vaddr != v2addr);
	free(m);
	select_one(f, "sym_lib_ver@@SYMTEST_2", &m);
	free(m);

	size_t n;
	assert_int_equal(sym_select(f, "sym_lib_ver@@SYMTEST_1", &m, &n, err, sizeof err),
			 SYM_ENOFUNC);
	assert_int_equal(sym_select(f, "sym_lib_ver@", &m, &n, err, sizeof err), -EINVAL);
	assert_int_equal(sym_select(f, "nothing*", &m, &n, err, sizeof err), SYM_ENOMATCH);
	assert_int_equal(sym_select(f, "nothing", &m, &n, err, sizeof err), SYM_ENOFUNC);

	const struct sym_match *i = select_one(f, "sym_lib_ifn", &m);
	assert_int_equal(sym_probeable(i, err, sizeof err), SYM_EIFUNC);
	assert_non_null(strstr(err, "ifunc"));
	free(m);
	sym_close(f);
}

static void test_sym_libs(void **state)
{
	(void)state;
	check_lib(SYMTEST_LIB, ".symtab");
	check_lib(SYMTEST_LIB_STRIPPED, ".dynsym");
}

static void test_sym_executables(void **state)
{
	(void)state;
	struct sym_file *f;
	struct sym_match *m;
	size_t n;
	char err[ERRLEN];
	assert_int_equal(sym_open(SYM_TARGET_NOPIE, 0, &f, err, sizeof err), 0);
	assert_int_equal(sym_elf_type(f), ET_EXEC);
	assert_string_equal(sym_table_name(f), ".symtab");
	select_one(f, "sym_target_static", &m);
	free(m);
	/* Imported, not defined: the message says which module to name. */
	assert_int_equal(sym_select(f, "dlopen", &m, &n, err, sizeof err), SYM_ENOFUNC);
	assert_non_null(strstr(err, "imported"));
	sym_close(f);

	assert_int_equal(sym_open(SYM_TARGET_STRIPPED, 0, &f, err, sizeof err), 0);
	assert_int_equal(sym_elf_type(f), ET_DYN);
	assert_string_equal(sym_table_name(f), ".dynsym");
	assert_int_equal(sym_select(f, "sym_target_static", &m, &n, err, sizeof err),
			 SYM_ENOFUNC);
	assert_int_equal(sym_select(f, "sym_target_glob_*", &m, &n, err, sizeof err), 0);
	assert_int_equal(n, 2);
	free(m);
	const struct sym_entry *all = sym_entries(f, &n);
	for (size_t i = 1; i < n; i++)
		assert_true(all[i - 1].vaddr < all[i].vaddr);
	sym_close(f);
}

static size_t make_ehdr(unsigned char *buf, unsigned machine, unsigned type)
{
	Elf64_Ehdr eh = { 0 };
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	eh.e_type = (Elf64_Half)type;
	eh.e_machine = (Elf64_Half)machine;
	eh.e_version = EV_CURRENT;
	eh.e_ehsize = sizeof eh;
	memcpy(buf, &eh, sizeof eh);
	return sizeof eh;
}

static void test_sym_errors(void **state)
{
	(void)state;
	struct sym_file *f = NULL;
	char err[ERRLEN];
	unsigned char buf[256] = { 0 };

	assert_int_equal(sym_open("/nonexistent/file", 0, &f, err, sizeof err), -ENOENT);
	assert_int_equal(sym_open("/", 0, &f, err, sizeof err), -EISDIR);
	assert_int_equal(sym_open_memory(buf, 0, 0, &f, err, sizeof err), SYM_ENOTELF);
	assert_int_equal(sym_open_memory("hello, world\n", 13, 0, &f, err, sizeof err),
			 SYM_ENOTELF);
	assert_non_null(strstr(err, "not an ELF"));

	size_t n = make_ehdr(buf, EM_AARCH64, ET_DYN);
	assert_int_equal(sym_open_memory(buf, n, 0, &f, err, sizeof err), SYM_EUNSUPP);
	assert_non_null(strstr(err, "x86-64"));
	n = make_ehdr(buf, EM_X86_64, ET_REL);
	assert_int_equal(sym_open_memory(buf, n, 0, &f, err, sizeof err), SYM_EUNSUPP);
	n = make_ehdr(buf, EM_X86_64, ET_DYN);
	assert_int_equal(sym_open_memory(buf, n, 0, &f, err, sizeof err), SYM_ENOSYMS);
	assert_int_equal(sym_open_memory(buf, n, SYM_HEADERS_ONLY, &f, err, sizeof err), 0);
	uint64_t bias;
	assert_int_equal(sym_load_bias(f, 0x1000, 0, true, &bias), SYM_ENOTLOADED);
	sym_close(f);
	assert_int_equal(sym_open_memory(buf, n - 1, 0, &f, err, sizeof err), SYM_ENOTELF);
	assert_null(f);

	/* A whole file read from memory gives what the path gives. */
	int fd = open(SYMTEST_LIB, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	unsigned char *img = malloc((size_t)st.st_size);
	assert_non_null(img);
	assert_int_equal(read(fd, img, (size_t)st.st_size), st.st_size);
	close(fd);
	struct sym_file *g;
	assert_int_equal(sym_open_memory(img, (size_t)st.st_size, 0, &f, err, sizeof err), 0);
	assert_int_equal(sym_open(SYMTEST_LIB, 0, &g, err, sizeof err), 0);
	size_t nf, ng;
	const struct sym_entry *ef = sym_entries(f, &nf), *eg = sym_entries(g, &ng);
	assert_int_equal(nf, ng);
	for (size_t i = 0; i < nf; i++) {
		assert_int_equal(ef[i].vaddr, eg[i].vaddr);
		assert_string_equal(ef[i].names[0].name, eg[i].names[0].name);
	}
	sym_close(f);
	sym_close(g);
	free(img);
}

/* ---- live targets ---- */

static void check_executable(const char *path, bool pie, bool stripped)
{
	struct child c;
	char err[ERRLEN];
	spawn(&c, path);

	struct maps_snapshot *s;
	assert_int_equal(maps_read(c.pid, &s, err, sizeof err), 0);
	const struct maps_module *main_mod = maps_main(s);
	assert_non_null(main_mod);
	char rp[PATH_MAX];
	assert_non_null(realpath(path, rp));
	assert_string_equal(main_mod->path, rp);
	assert_int_equal(main_mod->elf_err, 0);
	if (pie)
		assert_true(main_mod->bias != 0);
	else
		assert_int_equal(main_mod->bias, 0);
	maps_free(s);

	expect_one(&c, "sym_target_func", "sym_target_func");
	expect_one(&c, ":sym_target_func", "sym_target_func");
	char *arg = fmt("%s:sym_target_func", path);
	expect_one(&c, arg, "sym_target_func");
	free(arg);
	expect_one(&c, "libc:getpid", "getpid");
	if (stripped)
		expect_error(&c, "sym_target_static", SYM_ENOFUNC);
	else
		expect_one(&c, "sym_target_static", "sym_target_static");

	struct probe_spec_result r;
	assert_int_equal(resolve(&c, "sym_target_glob_*", &r, err), 0);
	assert_int_equal(r.n, 2);
	for (size_t i = 0; i < r.n; i++) {
		assert_int_equal(r.targets[i].addr, shown(&c, r.targets[i].name));
		expect_same_bytes(c.pid, &r.targets[i]);
	}
	probe_spec_result_free(&r);

	expect_error(&c, "no_such_function", SYM_ENOFUNC);
	expect_error(&c, "no_such_*", SYM_ENOMATCH);
	expect_error(&c, "libnotloaded:f", PROBE_SPEC_ENOTMAPPED);
	finish(&c);
}

static void test_live_pie(void **state)
{
	(void)state;
	check_executable(SYM_TARGET_PIE, true, false);
}

static void test_live_nopie(void **state)
{
	(void)state;
	check_executable(SYM_TARGET_NOPIE, false, false);
}

static void test_live_stripped(void **state)
{
	(void)state;
	check_executable(SYM_TARGET_STRIPPED, true, true);
}

/* An executable deleted while it runs (rebuilt, upgraded): read through /proc/PID/exe. */
static void test_live_deleted_exe(void **state)
{
	(void)state;
	char *copy = fmt("%s.deleted-XXXXXX", SYM_TARGET_PIE);
	int out = mkstemp(copy), in = open(SYM_TARGET_PIE, O_RDONLY | O_CLOEXEC);
	assert_true(out >= 0 && in >= 0);
	char buf[65536];
	ssize_t n;
	while ((n = read(in, buf, sizeof buf)) > 0)
		assert_int_equal(write(out, buf, (size_t)n), n);
	assert_int_equal(fchmod(out, 0700), 0);
	close(in);
	close(out);

	struct child c;
	spawn(&c, copy);
	assert_int_equal(unlink(copy), 0);
	struct maps_snapshot *s;
	char err[ERRLEN];
	assert_int_equal(maps_read(c.pid, &s, err, sizeof err), 0);
	const struct maps_module *m = maps_main(s);
	assert_non_null(m);
	assert_true(m->deleted);
	assert_int_equal(m->elf_err, 0);
	maps_free(s);
	expect_one(&c, "sym_target_func", "sym_target_func");
	finish(&c);
	free(copy);
}

static void check_library(const char *lib, const char *shortname)
{
	struct child c;
	char err[ERRLEN];
	char arg[PATH_MAX + 64];
	spawn(&c, SYM_TARGET_PIE);

	/* Before dlopen: not mapped, which the tracer defers. */
	snprintf(arg, sizeof arg, "%s:sym_lib_func", shortname);
	expect_error(&c, arg, PROBE_SPEC_ENOTMAPPED);
	snprintf(arg, sizeof arg, "%s:sym_lib_func", lib);
	expect_error(&c, arg, PROBE_SPEC_ENOTMAPPED);
	expect_error(&c, "/nonexistent/libx.so:f", PROBE_SPEC_ENOFILE);

	snprintf(arg, sizeof arg, "load %s", lib);
	command(&c, arg);

	snprintf(arg, sizeof arg, "%s:sym_lib_func", lib);
	expect_one(&c, arg, "sym_lib_func");
	snprintf(arg, sizeof arg, "%s:sym_lib_func", shortname);
	expect_one(&c, arg, "sym_lib_func");
	snprintf(arg, sizeof arg, "%s:sym_lib_alias", shortname);
	expect_one(&c, arg, "sym_lib_func");
	snprintf(arg, sizeof arg, "%s:sym_lib_ver", shortname);
	expect_one(&c, arg, "sym_lib_ver@SYMTEST_2");
	snprintf(arg, sizeof arg, "%s:sym_lib_ver@SYMTEST_1", shortname);
	expect_one(&c, arg, "sym_lib_ver@SYMTEST_1");
	snprintf(arg, sizeof arg, "%s:sym_lib_ifn", shortname);
	expect_error(&c, arg, SYM_EIFUNC);
	snprintf(arg, sizeof arg, "%s:nope", shortname);
	expect_error(&c, arg, SYM_ENOFUNC);
	snprintf(arg, sizeof arg, "%s:nope*", shortname);
	expect_error(&c, arg, SYM_ENOMATCH);

	/* One target per address: the alias is not probed twice; the ifunc is left out. */
	struct probe_spec_result r;
	snprintf(arg, sizeof arg, "%s:sym_lib_*", shortname);
	assert_int_equal(resolve(&c, arg, &r, err), 0);
	assert_int_equal(r.n, 5);
	assert_int_equal(r.n_ifunc, 1);
	for (size_t i = 0; i < r.n; i++)
		expect_same_bytes(c.pid, &r.targets[i]);
	probe_spec_result_free(&r);

	snprintf(arg, sizeof arg, "%s:sym_lib_glob_?", shortname);
	assert_int_equal(resolve(&c, arg, &r, err), 0);
	assert_int_equal(r.n, 2);
	for (size_t i = 0; i < r.n; i++) {
		assert_int_equal(r.targets[i].addr, shown(&c, r.targets[i].name));
		assert_string_equal(r.targets[i].version, "SYMTEST_1");
	}
	probe_spec_result_free(&r);
	finish(&c);
}

static void test_live_library(void **state)
{
	(void)state;
	check_library(SYMTEST_LIB, "libsymtest");
}

static void test_live_library_stripped(void **state)
{
	(void)state;
	check_library(SYMTEST_LIB_STRIPPED, "libsymtest_stripped");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_maps_text),
		cmocka_unit_test(test_maps_bad_text),
		cmocka_unit_test(test_resolve_text),
		cmocka_unit_test(test_spec_parse),
		cmocka_unit_test(test_spec_names),
		cmocka_unit_test(test_sym_libs),
		cmocka_unit_test(test_sym_executables),
		cmocka_unit_test(test_sym_errors),
		cmocka_unit_test(test_live_pie),
		cmocka_unit_test(test_live_nopie),
		cmocka_unit_test(test_live_stripped),
		cmocka_unit_test(test_live_deleted_exe),
		cmocka_unit_test(test_live_library),
		cmocka_unit_test(test_live_library_stripped),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
