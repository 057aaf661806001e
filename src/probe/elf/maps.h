/* maps: a snapshot of a process's mappings (/proc/PID/maps), grouped into modules.
 *
 * A module is one mapped instance of a file: its mappings share (dev, inode, path), and a
 * new instance starts at a mapping of file offset 0.  For each module the snapshot opens
 * the file once to compute its load bias from the ELF program headers (runtime address =
 * link-time vaddr + bias): 0 for a non-PIE executable, the load address for PIE
 * executables and shared objects.  A snapshot is immutable; take a fresh one when the
 * target maps more (dlopen).
 *
 * Errors: 0 or a negative errno; details, when err is not NULL, in err.  No output. */
#ifndef PTSS_TRACE_MAPS_H
#define PTSS_TRACE_MAPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum maps_kind {
	MAPS_ANON,    /* no path */
	MAPS_FILE,    /* a path starting with '/' and a non-zero inode */
	MAPS_PSEUDO,  /* [heap], [stack], [vdso], [vvar], [anon:name], anon_inode:..., ... */
};

struct maps_mapping {
	uint64_t start, end;      /* [start, end) */
	uint64_t offset;          /* file offset mapped at start */
	uint64_t inode;
	unsigned dev_major, dev_minor;
	char perms[5];            /* e.g. "r-xp" */
	enum maps_kind kind;
	bool deleted;             /* the kernel's " (deleted)" suffix, removed from path */
	const char *path;         /* NULL when anonymous; "\012" decoded to '\n' */
};

struct maps_module {
	const char *path;         /* as mapped (the tracer's view of the target's file) */
	const char *open_path;    /* where the tracer reads it: path, /proc/PID/root/path or
				   * /proc/PID/map_files/START-END; NULL when none could be */
	uint64_t start, end;      /* lowest start, highest end of its file mappings */
	uint64_t bias;            /* runtime = vaddr + bias; valid when elf_err == 0 */
	uint64_t inode;
	unsigned dev_major, dev_minor;
	int elf_err;              /* 0, or why there is no bias: -ENOENT, SYM_ENOTELF, ... */
	const char *error;        /* message for elf_err, NULL when 0 */
	bool is_main;             /* the main executable (/proc/PID/exe) */
	bool deleted;
	size_t first_map;         /* index in maps[] of its lowest mapping */
};

/* Read-only for users; freed by maps_free(). */
struct maps_snapshot {
	pid_t pid;                /* 0 when built by maps_parse() without a process */
	const char *exe;          /* the main executable's path, or NULL */
	struct maps_mapping *maps;        /* in the order of the text (ascending) */
	size_t n_maps;
	struct maps_module *modules;      /* in address order */
	size_t n_modules;
	char *text_;              /* private: the paths point into it */
};

/* Snapshot of process PID: /proc/PID/maps, /proc/PID/exe. */
int maps_read(pid_t pid, struct maps_snapshot **out, char *err, size_t errlen);

/* Snapshot from maps text (LEN bytes, need not be NUL-terminated).  EXE names the main
 * executable (NULL: none).  PID > 0 allows reading files through /proc/PID/root and
 * /proc/PID/map_files; 0 reads plain paths only.  A malformed line: -EINVAL, with its
 * number in err.  A module whose file cannot be read or is not an ELF is kept, with
 * elf_err and error set. */
int maps_parse(const char *text, size_t len, pid_t pid, const char *exe,
	       struct maps_snapshot **out, char *err, size_t errlen);

void maps_free(struct maps_snapshot *s);

/* The mapping containing ADDR, or NULL. */
const struct maps_mapping *maps_find(const struct maps_snapshot *s, uint64_t addr);

/* The main executable's module, or NULL. */
const struct maps_module *maps_main(const struct maps_snapshot *s);

#endif
