/* probe_spec: a probe argument ("[MODULE:]FUNC[+OFF][(TYPE, ...)]") and its resolution to
 * runtime addresses in a maps snapshot.
 *
 * MODULE: empty or absent = the main executable; with a '/' = a path (compared after
 * realpath(3)); otherwise a short name matching a mapped file's basename exactly or as a
 * prefix followed by ".so" or "-" ("libc" -> libc.so.6, "liblzma" -> liblzma.so.5.4.1).
 * FUNC: a name, an fnmatch(3) glob, optionally with "@VER" / "@@VER" (see symbols.h);
 * C++ functions by their mangled names. +OFF: a byte offset into the function (decimal or
 * 0x), not with a glob; the target is then FUNC + OFF. (TYPE, ...): the types of up to 6
 * integer arguments, for printing them: int, uint, hex, ptr, str, char, bool.
 *
 * Errors: 0 or a negative errno; details, when err is not NULL, in err.  No output, no
 * global state. */
#ifndef PTSS_TRACE_PROBE_SPEC_H
#define PTSS_TRACE_PROBE_SPEC_H

#include "elf/maps.h"
#include "elf/symbols.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* probe_spec_resolve() errors.  Besides these: SYM_ENOFUNC (no such function),
 * SYM_ENOMATCH (the glob matched nothing), SYM_EIFUNC (only ifuncs), SYM_ENOTELF /
 * SYM_EUNSUPP / SYM_ENOSYMS (the module's file), SYM_ENOTLOADED (an exact name outside
 * the module's executable mappings), and the module's elf_err when its file could not be
 * read (-ENOENT, -EACCES, -ESTALE: deleted and unreadable), -EINVAL, -ENOMEM. */
#define PROBE_SPEC_ENOTMAPPED (-ENXIO)    /* module not mapped (yet): retry after dlopen */
#define PROBE_SPEC_ENOFILE    (-ENOENT)   /* MODULE is a path that exists nowhere */
#define PROBE_SPEC_EAMBIGUOUS (-ENOTUNIQ) /* short name matches several mapped files */

enum probe_arg_type { ARG_INT, ARG_UINT, ARG_HEX, ARG_PTR, ARG_STR, ARG_CHAR, ARG_BOOL };
#define PROBE_ARGS_MAX 6

struct probe_spec {
	char *module;          /* NULL: the main executable */
	char *func;            /* never empty */
	bool module_is_path;   /* module contains '/' */
	bool glob;             /* func's name holds '*', '?' or '[' */
	bool has_offset;       /* FUNC+OFF */
	uint64_t offset;
	bool has_sig;          /* (TYPE, ...) given, maybe empty */
	uint8_t nargs;
	uint8_t args[PROBE_ARGS_MAX]; /* enum probe_arg_type */
};

struct probe_spec_target {
	char *module;          /* the module's path as mapped */
	char *name;            /* the name that matched (bare) */
	char *version;         /* its version, or NULL */
	uint64_t addr;         /* runtime address in the target */
	uint64_t vaddr;        /* link-time address */
	uint64_t file_offset;  /* offset of the first byte in the module's file */
	uint64_t size;         /* the function's size, 0 when unknown (addr - offset: its start) */
	uint64_t offset;       /* the spec's +OFF, 0 without */
};

struct probe_spec_result {
	struct probe_spec_target *targets;
	size_t n;
	size_t n_ifunc;        /* glob matches left out: ifuncs (see sym_probeable()) */
	size_t n_outside;      /* glob matches left out: not in an executable mapping */
};

/* Parses ARG; the module is split at the last ':', so a path may contain ':'. */
int probe_spec_parse(const char *arg, struct probe_spec *out, char *err, size_t errlen);
void probe_spec_free(struct probe_spec *spec);

/* Does short name NAME designate the file at PATH (by its basename)? */
bool probe_spec_name_matches(const char *name, const char *path);

/* Does SPEC name the vDSO ("vdso", "linux-vdso", "linux-vdso.so.1")?  The vDSO
 * is no file: it never matches a module, and cannot be probed. */
bool probe_spec_is_vdso(const struct probe_spec *spec);

/* Every probe target SPEC designates in snapshot S (one per function per loaded instance of
 * the module), into OUT (free with probe_spec_result_free(), also after an error).  An
 * exact name resolving to an ifunc or outside an executable mapping is an error; a glob
 * leaves such matches out and counts them. */
int probe_spec_resolve(const struct probe_spec *spec, const struct maps_snapshot *s,
		       struct probe_spec_result *out, char *err, size_t errlen);
void probe_spec_result_free(struct probe_spec_result *r);

#endif
