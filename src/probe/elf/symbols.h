/* symbols: the function symbols of one x86-64 ELF executable or shared object.
 *
 * A sym_file is read once (through libelf) and owns copies of everything it returns; the
 * ELF handle and the file are closed before sym_open() returns.  Symbols come from .symtab
 * when it holds a defined function, else from .dynsym (stripped files).  Only defined
 * functions are kept (STT_FUNC and STT_GNU_IFUNC, st_shndx not UNDEF/ABS/COMMON).  Aliases
 * (several symbols at one address) become one entry with several names, so a glob never
 * probes an address twice.
 *
 * Versions: a name is stored bare ("memcpy"), its version apart ("GLIBC_2.14").  In .dynsym
 * versions come from .gnu.version/.gnu.version_d; in .symtab from the "name@VER" /
 * "name@@VER" spelling binutils uses.  A lookup may carry "@VER" (that version) or "@@VER"
 * (that version, as the default one).
 *
 * Errors: 0 or a negative errno; details, when err is not NULL, in err (NUL-terminated).
 * No global state besides libelf's own version handshake; no output. */
#ifndef PTSS_TRACE_SYMBOLS_H
#define PTSS_TRACE_SYMBOLS_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Error codes (negative errno values) specific to this module.  Others pass through from
 * open(2)/read(2) (-ENOENT, -EACCES, ...) or are -ENOMEM / -EINVAL (bad argument). */
#define SYM_ENOTELF   (-ENOEXEC)     /* not an ELF file (bad magic, truncated, corrupt) */
#define SYM_EUNSUPP   (-EOPNOTSUPP)  /* an ELF, but not an x86-64 ELF64 LE EXEC/DYN */
#define SYM_ENOSYMS   (-ENODATA)     /* no .symtab/.dynsym with a defined function */
#define SYM_ENOFUNC   (-ESRCH)       /* no function of that exact name */
#define SYM_ENOMATCH  (-ENOMSG)      /* a glob matched no function */
#define SYM_EIFUNC    (-EMEDIUMTYPE) /* an ifunc: the symbol is its resolver, not the code */
#define SYM_ENOTLOADED (-ERANGE)     /* an address/offset outside every PT_LOAD's file part */

/* sym_open() flags. */
#define SYM_HEADERS_ONLY 1u  /* read the program headers only (load bias, offsets) */

struct sym_file;

struct sym_name {
	const char *name;     /* bare, never contains '@' */
	const char *version;  /* NULL when unversioned */
	bool hidden;          /* non-default version ("name@VER"): reached only by version */
	bool ifunc;           /* STT_GNU_IFUNC: the address is the resolver, which picks the
			       * code (a resolver's own STT_FUNC name at it is not an ifunc) */
	unsigned char bind;   /* STB_GLOBAL, STB_WEAK or STB_LOCAL */
};

/* One address.  names[0] is the preferred name: sized, then global over weak over local,
 * then default version, then fewer leading underscores, then shorter. */
struct sym_entry {
	uint64_t vaddr;       /* link-time virtual address (st_value) */
	uint64_t size;        /* the largest st_size among the aliases; 0 if none had one */
	bool ifunc;           /* some name is an ifunc */
	size_t n_names;       /* >= 1 */
	const struct sym_name *names;
};

/* Opens PATH (SYM_HEADERS_ONLY: headers only, no symbol tables). */
int sym_open(const char *path, unsigned flags, struct sym_file **out, char *err, size_t errlen);
/* The same on an in-memory image (copied; BUF may be freed after the call). */
int sym_open_memory(const void *buf, size_t len, unsigned flags, struct sym_file **out,
		    char *err, size_t errlen);
void sym_close(struct sym_file *f);

/* ET_EXEC or ET_DYN. */
unsigned sym_elf_type(const struct sym_file *f);
/* ".symtab", ".dynsym", or NULL when opened with SYM_HEADERS_ONLY. */
const char *sym_table_name(const struct sym_file *f);
/* All entries, sorted by vaddr. */
const struct sym_entry *sym_entries(const struct sym_file *f, size_t *n);

/* One result of sym_select(): the entry and the name of it that matched. */
struct sym_match {
	const struct sym_entry *entry;
	const struct sym_name *name;
};

/* The entries PATTERN selects, into a malloc'd array (*out, *n; free() it; what it points
 * to belongs to F).  PATTERN is "name", "name@VER" or "name@@VER"; name may be an
 * fnmatch(3) glob (it is one when it holds '*', '?' or '['), the version never is.
 *   exact name: the entries having that name; without a version, entries reached only
 *     through a hidden version are dropped when a default/unversioned one exists (as the
 *     dynamic linker would bind).  None: SYM_ENOFUNC.
 *   glob: every entry with a matching name, hidden versions included.  None: SYM_ENOMATCH.
 * Ifunc names are returned too: check sym_probeable(). */
int sym_select(const struct sym_file *f, const char *pattern, struct sym_match **out,
	       size_t *n, char *err, size_t errlen);

/* 0 when M's name designates the code at its address; SYM_EIFUNC (with the reason) for an
 * ifunc, whose symbol is the resolver run once by the dynamic linker, not the function. */
int sym_probeable(const struct sym_match *m, char *err, size_t errlen);

/* File offset of the byte at link-time address VADDR (to read a function's first bytes from
 * the file).  SYM_ENOTLOADED when no PT_LOAD maps VADDR from the file (e.g. .bss). */
int sym_vaddr_to_offset(const struct sym_file *f, uint64_t vaddr, uint64_t *offset);

/* The load bias (runtime address = vaddr + bias) from one mapping of this file: it starts
 * at MAP_START and maps file offset MAP_OFFSET (page-aligned, as in /proc/PID/maps).
 * LOWEST says it is the file's lowest-addressed mapping, hence its first PT_LOAD; that
 * settles the case of two segments sharing a file page.  SYM_ENOTLOADED when no PT_LOAD
 * fits the mapping. */
int sym_load_bias(const struct sym_file *f, uint64_t map_start, uint64_t map_offset,
		  bool lowest, uint64_t *bias);

static inline uint64_t sym_runtime_addr(const struct sym_entry *e, uint64_t bias)
{
	return e->vaddr + bias;
}

#endif
