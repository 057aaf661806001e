/* symbols: function symbols of an x86-64 ELF file, read with libelf.  See symbols.h. */
#include "../err.h"
#include "symbols.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <gelf.h>
#include <libelf.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The kernel and ld.so map segments at 4 KiB granularity on x86-64, whatever p_align says. */
#define SYM_PAGE 4096u
#define NO_STR SIZE_MAX
/* .gnu.version entries: a version index, and a bit for "not the default version". */
#define VERSYM_HIDDEN 0x8000u
#define VERSYM_VERSION 0x7fffu

struct sym_load {
	uint64_t vaddr, offset, filesz;
};

/* Invariant: entries sorted by vaddr, distinct vaddrs; each entry's names lie in names[];
 * every string lies in strings[]; imports sorted (strcmp), for the "imported" hint. */
struct sym_file {
	char *label;                 /* path or "<memory>", for messages */
	unsigned type;               /* ET_EXEC or ET_DYN */
	const char *table;           /* ".symtab", ".dynsym" or NULL (headers only) */
	struct sym_load *loads;      /* PT_LOAD segments, by vaddr */
	size_t n_loads;
	struct sym_entry *entries;
	size_t n_entries;
	struct sym_name *names;
	char *strings;
	const char **imports;
	size_t n_imports;
};


/* ---- building: a string arena and raw symbols, turned into entries at the end ---- */

struct arena {
	char *buf;
	size_t len, cap;
};

static size_t arena_add(struct arena *a, const char *s, size_t n)
{
	if (a->cap - a->len < n + 1) {
		size_t cap = a->cap ? a->cap : 4096;
		while (cap - a->len < n + 1)
			cap *= 2;
		char *p = realloc(a->buf, cap);
		if (!p)
			return NO_STR;
		a->buf = p;
		a->cap = cap;
	}
	size_t off = a->len;
	memcpy(a->buf + off, s, n);
	a->buf[off + n] = '\0';
	a->len += n + 1;
	return off;
}

struct raw_sym {
	uint64_t vaddr, size;
	size_t name, version;   /* arena offsets; version NO_STR when unversioned */
	unsigned char bind;
	bool ifunc, hidden;
};

struct version {
	unsigned ndx;
	size_t name;            /* arena offset */
};

struct builder {
	Elf *elf;
	struct arena arena;
	struct raw_sym *raw;
	size_t n_raw, cap_raw;
	size_t *imports;        /* arena offsets */
	size_t n_imports, cap_imports;
	struct version *versions;
	size_t n_versions;
};

static int grow(void **v, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	size_t cap2 = *cap ? *cap * 2 : 64;
	if (cap2 < need)
		cap2 = need;
	void *p = realloc(*v, cap2 * elem);
	if (!p)
		return -ENOMEM;
	*v = p;
	*cap = cap2;
	return 0;
}

/* Version names by index, from .gnu.version_d.  The walk is bounded by the section size:
 * a corrupt vd_next can neither loop nor leave the data (gelf_getverdef checks bounds). */
static int read_verdefs(struct builder *b, Elf_Scn *scn, const GElf_Shdr *sh)
{
	Elf_Data *d = elf_getdata(scn, NULL);
	if (!d || d->d_size == 0)
		return 0;
	size_t max = d->d_size / sizeof(GElf_Verdef) + 1, cap = 0;
	size_t off = 0;
	for (size_t k = 0; k < max && off <= INT32_MAX; k++) {
		GElf_Verdef vd;
		GElf_Verdaux va;
		if (!gelf_getverdef(d, (int)off, &vd))
			break;
		/* The base definition names the file itself: its symbols are unversioned. */
		if (!(vd.vd_flags & VER_FLG_BASE) && vd.vd_cnt > 0 && vd.vd_aux <= INT32_MAX - off &&
		    gelf_getverdaux(d, (int)(off + vd.vd_aux), &va)) {
			const char *s = elf_strptr(b->elf, sh->sh_link, va.vda_name);
			if (s && *s) {
				if (grow((void **)&b->versions, &cap, b->n_versions + 1,
					 sizeof *b->versions))
					return -ENOMEM;
				size_t o = arena_add(&b->arena, s, strlen(s));
				if (o == NO_STR)
					return -ENOMEM;
				b->versions[b->n_versions++] = (struct version){ vd.vd_ndx, o };
			}
		}
		if (vd.vd_next == 0)
			break;
		off += vd.vd_next;
	}
	return 0;
}

static size_t version_name(const struct builder *b, unsigned ndx)
{
	for (size_t i = 0; i < b->n_versions; i++)
		if (b->versions[i].ndx == ndx)
			return b->versions[i].name;
	return NO_STR;
}

static bool defined_function(const GElf_Sym *s)
{
	unsigned t = GELF_ST_TYPE(s->st_info);
	return (t == STT_FUNC || t == STT_GNU_IFUNC) && s->st_shndx != SHN_UNDEF &&
	       s->st_shndx != SHN_ABS && s->st_shndx != SHN_COMMON;
}

/* Appends the defined functions (and the names of undefined ones) of one symbol table.
 * VERSYM is .gnu.version, for .dynsym only. */
static int read_table(struct builder *b, Elf_Scn *scn, const GElf_Shdr *sh, Elf_Data *versym)
{
	Elf_Data *d = elf_getdata(scn, NULL);
	if (!d)
		return 0;
	size_t n = d->d_size / gelf_fsize(b->elf, ELF_T_SYM, 1, EV_CURRENT);
	for (size_t i = 1; i < n && i <= INT32_MAX; i++) {
		GElf_Sym s;
		if (!gelf_getsym(d, (int)i, &s))
			break;
		const char *name = elf_strptr(b->elf, sh->sh_link, s.st_name);
		if (!name || !*name)
			continue;
		if (s.st_shndx == SHN_UNDEF && GELF_ST_TYPE(s.st_info) == STT_FUNC) {
			if (grow((void **)&b->imports, &b->cap_imports, b->n_imports + 1,
				 sizeof *b->imports))
				return -ENOMEM;
			size_t o = arena_add(&b->arena, name, strcspn(name, "@"));
			if (o == NO_STR)
				return -ENOMEM;
			b->imports[b->n_imports++] = o;
			continue;
		}
		if (!defined_function(&s))
			continue;

		struct raw_sym r = { .vaddr = s.st_value, .size = s.st_size,
				     .bind = GELF_ST_BIND(s.st_info), .version = NO_STR,
				     .ifunc = GELF_ST_TYPE(s.st_info) == STT_GNU_IFUNC };
		/* .symtab spells versions into the name: "name@VER" (hidden), "name@@VER". */
		size_t base = strcspn(name, "@");
		if (name[base] == '@') {
			const char *v = name + base + 1;
			r.hidden = *v != '@';
			if (!r.hidden)
				v++;
			if (*v && (r.version = arena_add(&b->arena, v, strlen(v))) == NO_STR)
				return -ENOMEM;
		} else if (versym) {
			GElf_Versym vs;
			if (gelf_getversym(versym, (int)i, &vs)) {
				r.hidden = (vs & VERSYM_HIDDEN) != 0;
				r.version = version_name(b, vs & VERSYM_VERSION);
				if (r.version == NO_STR)
					r.hidden = false;
			}
		}
		if (base == 0)
			continue;
		if ((r.name = arena_add(&b->arena, name, base)) == NO_STR)
			return -ENOMEM;
		if (grow((void **)&b->raw, &b->cap_raw, b->n_raw + 1, sizeof *b->raw))
			return -ENOMEM;
		b->raw[b->n_raw++] = r;
	}
	return 0;
}

static int raw_vaddr_cmp(const void *pa, const void *pb)
{
	const struct raw_sym *a = pa, *b = pb;
	return a->vaddr < b->vaddr ? -1 : a->vaddr > b->vaddr;
}

/* .symtab names symbols bound to a version by a version script without "@VER"; only
 * .dynsym (+ .gnu.version) knows it.  Copy it over, so that "name@VER" finds the same
 * functions whether or not the file is stripped. */
static int version_symtab(struct builder *b, Elf_Scn *dynsym, const GElf_Shdr *sh,
			  Elf_Scn *versym)
{
	size_t n_sym = b->n_raw;
	int rc = read_table(b, dynsym, sh, elf_getdata(versym, NULL));
	if (rc)
		return rc;
	struct raw_sym *dyn = b->raw + n_sym;
	size_t n_dyn = b->n_raw - n_sym;
	qsort(dyn, n_dyn, sizeof *dyn, raw_vaddr_cmp);
	const char *s = b->arena.buf;
	for (size_t i = 0; i < n_sym; i++) {
		struct raw_sym *r = &b->raw[i];
		if (r->version != NO_STR)
			continue;
		struct raw_sym key = { .vaddr = r->vaddr };
		struct raw_sym *d = bsearch(&key, dyn, n_dyn, sizeof *dyn, raw_vaddr_cmp);
		if (!d)
			continue;
		while (d > dyn && d[-1].vaddr == r->vaddr)
			d--;
		for (; d < dyn + n_dyn && d->vaddr == r->vaddr; d++) {
			if (d->version != NO_STR && strcmp(s + d->name, s + r->name) == 0) {
				r->version = d->version;
				r->hidden = d->hidden;
				break;
			}
		}
	}
	b->n_raw = n_sym;
	return 0;
}

static int bind_rank(unsigned char bind)
{
	return bind == STB_LOCAL ? 2 : bind == STB_WEAK ? 1 : 0;
}

static size_t underscores(const char *s)
{
	return strspn(s, "_");
}

/* qsort has no context argument; the arena is reached through the names' pointers, so the
 * raw symbols are first turned into sym_name-like records holding pointers. */
struct ranked {
	uint64_t vaddr, size;
	struct sym_name name;
};

static int ranked_cmp(const void *pa, const void *pb)
{
	const struct ranked *a = pa, *b = pb;
	if (a->vaddr != b->vaddr)
		return a->vaddr < b->vaddr ? -1 : 1;
	if ((a->size > 0) != (b->size > 0))
		return a->size > 0 ? -1 : 1;
	if (bind_rank(a->name.bind) != bind_rank(b->name.bind))
		return bind_rank(a->name.bind) - bind_rank(b->name.bind);
	if (a->name.hidden != b->name.hidden)
		return a->name.hidden ? 1 : -1;
	size_t ua = underscores(a->name.name), ub = underscores(b->name.name);
	if (ua != ub)
		return ua < ub ? -1 : 1;
	size_t la = strlen(a->name.name), lb = strlen(b->name.name);
	if (la != lb)
		return la < lb ? -1 : 1;
	int c = strcmp(a->name.name, b->name.name);
	if (c)
		return c;
	const char *va = a->name.version ? a->name.version : "";
	const char *vb = b->name.version ? b->name.version : "";
	return strcmp(va, vb);
}

static bool same_name(const struct sym_name *a, const struct sym_name *b)
{
	if (strcmp(a->name, b->name))
		return false;
	if (!a->version || !b->version)
		return a->version == b->version;
	return strcmp(a->version, b->version) == 0;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Turns the raw symbols into deduplicated entries; the arena moves into F. */
static int finish(struct builder *b, struct sym_file *f)
{
	const char *s = b->arena.buf;
	struct ranked *rk = malloc((b->n_raw ? b->n_raw : 1) * sizeof *rk);
	f->names = malloc((b->n_raw ? b->n_raw : 1) * sizeof *f->names);
	f->entries = malloc((b->n_raw ? b->n_raw : 1) * sizeof *f->entries);
	f->imports = malloc((b->n_imports ? b->n_imports : 1) * sizeof *f->imports);
	if (!rk || !f->names || !f->entries || !f->imports) {
		free(rk);
		return -ENOMEM;
	}
	for (size_t i = 0; i < b->n_raw; i++) {
		const struct raw_sym *r = &b->raw[i];
		rk[i] = (struct ranked){
			.vaddr = r->vaddr, .size = r->size,
			.name = { .name = s + r->name,
				  .version = r->version == NO_STR ? NULL : s + r->version,
				  .hidden = r->hidden, .ifunc = r->ifunc, .bind = r->bind } };
	}
	qsort(rk, b->n_raw, sizeof *rk, ranked_cmp);

	size_t nn = 0, ne = 0;
	for (size_t i = 0; i < b->n_raw;) {
		struct sym_entry *e = &f->entries[ne++];
		size_t first = nn;
		*e = (struct sym_entry){ .vaddr = rk[i].vaddr };
		for (; i < b->n_raw && rk[i].vaddr == e->vaddr; i++) {
			if (rk[i].size > e->size)
				e->size = rk[i].size;
			e->ifunc |= rk[i].name.ifunc;
			bool dup = false;
			for (size_t k = first; k < nn && !dup; k++)
				dup = same_name(&f->names[k], &rk[i].name);
			if (!dup)
				f->names[nn++] = rk[i].name;
		}
		e->names = &f->names[first];
		e->n_names = nn - first;
	}
	f->n_entries = ne;
	free(rk);

	for (size_t i = 0; i < b->n_imports; i++)
		f->imports[i] = s + b->imports[i];
	f->n_imports = b->n_imports;
	qsort(f->imports, f->n_imports, sizeof *f->imports, str_cmp);

	f->strings = b->arena.buf;
	b->arena.buf = NULL;
	return 0;
}

static void builder_reset(struct builder *b)
{
	b->n_raw = 0;
	b->n_imports = 0;
}

static void builder_free(struct builder *b)
{
	free(b->arena.buf);
	free(b->raw);
	free(b->imports);
	free(b->versions);
}

static int load_symbols(Elf *elf, struct sym_file *f, char *err, size_t errlen)
{
	struct builder b = { .elf = elf };
	Elf_Scn *symtab = NULL, *dynsym = NULL, *versym = NULL, *verdef = NULL;
	GElf_Shdr sh_symtab = { 0 }, sh_dynsym = { 0 }, sh;
	int rc = 0;

	for (Elf_Scn *scn = elf_nextscn(elf, NULL); scn; scn = elf_nextscn(elf, scn)) {
		if (!gelf_getshdr(scn, &sh))
			continue;
		if (sh.sh_type == SHT_SYMTAB && !symtab) {
			symtab = scn;
			sh_symtab = sh;
		} else if (sh.sh_type == SHT_DYNSYM && !dynsym) {
			dynsym = scn;
			sh_dynsym = sh;
		} else if (sh.sh_type == SHT_GNU_versym && !versym) {
			versym = scn;
		} else if (sh.sh_type == SHT_GNU_verdef && !verdef) {
			verdef = scn;
			if ((rc = read_verdefs(&b, scn, &sh)))
				goto out;
		}
	}

	if (symtab) {
		if ((rc = read_table(&b, symtab, &sh_symtab, NULL)))
			goto out;
		f->table = ".symtab";
		if (b.n_raw && dynsym && versym && (rc = version_symtab(&b, dynsym, &sh_dynsym,
									 versym)))
			goto out;
	}
	if (b.n_raw == 0 && dynsym) {
		builder_reset(&b);
		Elf_Data *vd = versym ? elf_getdata(versym, NULL) : NULL;
		if ((rc = read_table(&b, dynsym, &sh_dynsym, vd)))
			goto out;
		f->table = ".dynsym";
	}
	if (b.n_raw == 0) {
		rc = err_set(err, errlen, SYM_ENOSYMS, "%s: no function symbols (%s)", f->label,
			     symtab || dynsym ? "the symbol tables define no function"
					      : "no .symtab or .dynsym");
		goto out;
	}
	rc = finish(&b, f);
	if (rc)
		err_set(err, errlen, rc, "%s: out of memory", f->label);
out:
	builder_free(&b);
	return rc;
}

static int load_cmp(const void *pa, const void *pb)
{
	const struct sym_load *a = pa, *b = pb;
	return a->vaddr < b->vaddr ? -1 : a->vaddr > b->vaddr;
}

static int load(Elf *elf, unsigned flags, struct sym_file *f, char *err, size_t errlen)
{
	if (!elf || elf_kind(elf) != ELF_K_ELF)
		return err_set(err, errlen, SYM_ENOTELF, "%s: not an ELF file%s", f->label,
			       elf && elf_kind(elf) == ELF_K_AR ? " (an ar archive)" : "");

	GElf_Ehdr eh;
	if (!gelf_getehdr(elf, &eh))
		return err_set(err, errlen, SYM_ENOTELF, "%s: corrupt ELF header: %s", f->label,
			       elf_errmsg(-1));
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh.e_machine != EM_X86_64)
		return err_set(err, errlen, SYM_EUNSUPP,
			       "%s: not an x86-64 ELF (class %u, data %u, machine %u)", f->label,
			       eh.e_ident[EI_CLASS], eh.e_ident[EI_DATA], eh.e_machine);
	if (eh.e_type != ET_EXEC && eh.e_type != ET_DYN)
		return err_set(err, errlen, SYM_EUNSUPP,
			       "%s: ELF type %u is neither an executable nor a shared object",
			       f->label, eh.e_type);
	f->type = eh.e_type;

	size_t nph;
	if (elf_getphdrnum(elf, &nph))
		return err_set(err, errlen, SYM_ENOTELF, "%s: corrupt program headers: %s",
			       f->label, elf_errmsg(-1));
	f->loads = malloc((nph ? nph : 1) * sizeof *f->loads);
	if (!f->loads)
		return -ENOMEM;
	for (size_t i = 0; i < nph && i <= INT32_MAX; i++) {
		GElf_Phdr ph;
		if (!gelf_getphdr(elf, (int)i, &ph))
			return err_set(err, errlen, SYM_ENOTELF, "%s: corrupt program header %zu",
				       f->label, i);
		if (ph.p_type == PT_LOAD)
			f->loads[f->n_loads++] =
				(struct sym_load){ ph.p_vaddr, ph.p_offset, ph.p_filesz };
	}
	qsort(f->loads, f->n_loads, sizeof *f->loads, load_cmp);

	if (flags & SYM_HEADERS_ONLY)
		return 0;
	return load_symbols(elf, f, err, errlen);
}

static int open_common(Elf *elf, const char *label, unsigned flags, struct sym_file **out,
		       char *err, size_t errlen)
{
	struct sym_file *f = calloc(1, sizeof *f);
	if (!f || !(f->label = strdup(label))) {
		free(f);
		return err_set(err, errlen, -ENOMEM, "out of memory");
	}
	int rc = load(elf, flags, f, err, errlen);
	if (rc) {
		sym_close(f);
		return rc;
	}
	*out = f;
	return 0;
}

int sym_open(const char *path, unsigned flags, struct sym_file **out, char *err, size_t errlen)
{
	if (!path || !out)
		return err_set(err, errlen, -EINVAL, "sym_open: NULL argument");
	*out = NULL;
	if (elf_version(EV_CURRENT) == EV_NONE)
		return err_set(err, errlen, -ENOSYS, "libelf: %s", elf_errmsg(-1));

	/* O_NONBLOCK: opening a FIFO must not hang; it is refused below. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return err_set(err, errlen, -errno, "%s: %s", path, strerror(errno));
	struct stat st;
	int rc;
	if (fstat(fd, &st)) {
		rc = err_set(err, errlen, -errno, "%s: %s", path, strerror(errno));
	} else if (!S_ISREG(st.st_mode)) {
		rc = err_set(err, errlen, S_ISDIR(st.st_mode) ? -EISDIR : SYM_ENOTELF,
			     "%s: not a regular file", path);
	} else {
		/* Read, not mapped: a file truncated under a mapping would raise SIGBUS, and
		 * a tracer must not die while its breakpoints sit in a target. */
		Elf *elf = elf_begin(fd, ELF_C_READ, NULL);
		rc = open_common(elf, path, flags, out, err, errlen);
		elf_end(elf);
	}
	close(fd);
	return rc;
}

int sym_open_memory(const void *buf, size_t len, unsigned flags, struct sym_file **out,
		    char *err, size_t errlen)
{
	if ((!buf && len) || !out)
		return err_set(err, errlen, -EINVAL, "sym_open_memory: NULL argument");
	*out = NULL;
	if (elf_version(EV_CURRENT) == EV_NONE)
		return err_set(err, errlen, -ENOSYS, "libelf: %s", elf_errmsg(-1));
	/* libelf may convert data in place, and the caller's buffer is const: use a copy. */
	char *copy = malloc(len ? len : 1);
	if (!copy)
		return err_set(err, errlen, -ENOMEM, "out of memory");
	if (len)
		memcpy(copy, buf, len);
	Elf *elf = elf_memory(copy, len);
	int rc = open_common(elf, "<memory>", flags, out, err, errlen);
	elf_end(elf);
	free(copy);
	return rc;
}

void sym_close(struct sym_file *f)
{
	if (!f)
		return;
	free(f->label);
	free(f->loads);
	free(f->entries);
	free(f->names);
	free(f->strings);
	free(f->imports);
	free(f);
}

unsigned sym_elf_type(const struct sym_file *f)
{
	return f->type;
}

const char *sym_table_name(const struct sym_file *f)
{
	return f->table;
}

const struct sym_entry *sym_entries(const struct sym_file *f, size_t *n)
{
	*n = f->n_entries;
	return f->entries;
}

/* ---- lookup ---- */

static bool is_import(const struct sym_file *f, const char *name)
{
	return f->n_imports &&
	       bsearch(&name, f->imports, f->n_imports, sizeof *f->imports, str_cmp) != NULL;
}

static int match_rank(const struct sym_name *n)
{
	return n->hidden * 2 + n->ifunc;
}

int sym_select(const struct sym_file *f, const char *pattern, struct sym_match **out,
	       size_t *n, char *err, size_t errlen)
{
	if (!f || !pattern || !out || !n)
		return err_set(err, errlen, -EINVAL, "sym_select: NULL argument");
	*out = NULL;
	*n = 0;

	size_t blen = strcspn(pattern, "@");
	const char *ver = NULL;
	bool want_default = false;
	if (pattern[blen] == '@') {
		ver = pattern + blen + 1;
		if (*ver == '@') {
			want_default = true;
			ver++;
		}
		if (!*ver || strchr(ver, '@'))
			return err_set(err, errlen, -EINVAL, "'%s': bad version", pattern);
	}
	if (blen == 0)
		return err_set(err, errlen, -EINVAL, "'%s': empty function name", pattern);
	char *base = strndup(pattern, blen);
	if (!base)
		return err_set(err, errlen, -ENOMEM, "out of memory");
	bool glob = strpbrk(base, "*?[") != NULL;

	struct sym_match *m = NULL;
	size_t nm = 0, cap = 0;
	bool any_default = false;
	int rc = 0;
	for (size_t i = 0; i < f->n_entries; i++) {
		const struct sym_entry *e = &f->entries[i];
		const struct sym_name *hit = NULL;
		/* One result per entry: a default-version name beats a hidden one, and a plain
		 * function (an ifunc's resolver) beats the ifunc. */
		for (size_t k = 0; k < e->n_names && !(hit && match_rank(hit) == 0); k++) {
			const struct sym_name *c = &e->names[k];
			bool ok = glob ? fnmatch(base, c->name, 0) == 0 : strcmp(base, c->name) == 0;
			if (ok && ver)
				ok = c->version && strcmp(ver, c->version) == 0 &&
				     !(want_default && c->hidden);
			if (ok && (!hit || match_rank(c) < match_rank(hit)))
				hit = c;
		}
		if (!hit)
			continue;
		if (grow((void **)&m, &cap, nm + 1, sizeof *m)) {
			rc = err_set(err, errlen, -ENOMEM, "out of memory");
			goto out;
		}
		m[nm++] = (struct sym_match){ e, hit };
		any_default |= !hit->hidden;
	}
	/* "foo" binds to foo's default version, as the dynamic linker would. */
	if (!glob && !ver && any_default) {
		size_t k = 0;
		for (size_t i = 0; i < nm; i++)
			if (!m[i].name->hidden)
				m[k++] = m[i];
		nm = k;
	}
	if (nm == 0) {
		if (glob)
			rc = err_set(err, errlen, SYM_ENOMATCH, "%s: no function matches '%s'",
				     f->label, pattern);
		else if (!ver && is_import(f, base))
			rc = err_set(err, errlen, SYM_ENOFUNC,
				     "%s: '%s' is not defined here, only imported: name the "
				     "library that defines it (e.g. libc:%s)",
				     f->label, base, base);
		else
			rc = err_set(err, errlen, SYM_ENOFUNC, "%s: no function '%s'", f->label,
				     pattern);
		goto out;
	}
	*out = m;
	*n = nm;
	m = NULL;
out:
	free(m);
	free(base);
	return rc;
}

int sym_probeable(const struct sym_match *m, char *err, size_t errlen)
{
	if (!m->name->ifunc)
		return 0;
	const char *name = m->name->name;
	return err_set(err, errlen, SYM_EIFUNC,
		       "'%s' is a GNU indirect function (ifunc): its symbol is the resolver the "
		       "dynamic linker runs once to pick an implementation, not the code that "
		       "runs; probe the implementation instead (by its own name, e.g. "
		       "'__%s_avx2' in glibc; such names are in .symtab/debug symbols only)",
		       name, name);
}

int sym_vaddr_to_offset(const struct sym_file *f, uint64_t vaddr, uint64_t *offset)
{
	for (size_t i = 0; i < f->n_loads; i++) {
		const struct sym_load *l = &f->loads[i];
		if (vaddr >= l->vaddr && vaddr - l->vaddr < l->filesz) {
			*offset = l->offset + (vaddr - l->vaddr);
			return 0;
		}
	}
	return SYM_ENOTLOADED;
}

/* A segment mapped at page granularity: its page-aligned file offset is mapped at
 * (vaddr + bias) rounded down, and p_vaddr == p_offset (mod page), so
 *   bias = map_start - map_offset - (p_vaddr - p_offset)   (mod 2^64).
 * For a non-PIE executable this is 0; for PIE and shared objects the load address. */
static uint64_t bias_from(const struct sym_load *l, uint64_t start, uint64_t offset)
{
	return start - offset - l->vaddr + l->offset;
}

/* Does a mapping of file offset OFFSET (page-aligned) map part of segment L? */
static bool covers(const struct sym_load *l, uint64_t offset)
{
	uint64_t first = l->offset & ~(uint64_t)(SYM_PAGE - 1);
	return l->filesz > 0 && offset >= first &&
	       (offset < l->offset || offset - l->offset < l->filesz);
}

int sym_load_bias(const struct sym_file *f, uint64_t map_start, uint64_t map_offset,
		  bool lowest, uint64_t *bias)
{
	if (f->n_loads == 0)
		return SYM_ENOTLOADED;
	const struct sym_load *l0 = &f->loads[0];
	if (lowest && map_offset <= l0->offset && l0->offset - map_offset < SYM_PAGE) {
		*bias = bias_from(l0, map_start, map_offset);
		return 0;
	}
	/* Otherwise the segments covering the offset must agree (two segments may share a
	 * file page; then only a mapping they give the same bias settles it). */
	bool found = false;
	uint64_t b = 0;
	for (size_t i = 0; i < f->n_loads; i++) {
		const struct sym_load *l = &f->loads[i];
		if (!covers(l, map_offset))
			continue;
		uint64_t bi = bias_from(l, map_start, map_offset);
		if (found && bi != b)
			return SYM_ENOTLOADED;
		found = true;
		b = bi;
	}
	if (!found)
		return SYM_ENOTLOADED;
	*bias = b;
	return 0;
}
