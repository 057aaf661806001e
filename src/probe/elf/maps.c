/* maps: parse /proc/PID/maps and find each module's load bias.  See maps.h. */
#include "../err.h"
#include "maps.h"

#include "symbols.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


/* ---- one line: "start-end perms offset major:minor inode   path" ---- */

struct cursor {
	char *p, *end;
};

static bool parse_num(struct cursor *c, unsigned base, uint64_t *v)
{
	uint64_t x = 0;
	char *p = c->p;
	for (; p < c->end; p++) {
		unsigned d;
		if (*p >= '0' && *p <= '9')
			d = (unsigned)(*p - '0');
		else if (base == 16 && *p >= 'a' && *p <= 'f')
			d = (unsigned)(*p - 'a' + 10);
		else if (base == 16 && *p >= 'A' && *p <= 'F')
			d = (unsigned)(*p - 'A' + 10);
		else
			break;
		if (x > (UINT64_MAX - d) / base)
			return false;
		x = x * base + d;
	}
	if (p == c->p)
		return false;
	c->p = p;
	*v = x;
	return true;
}

static bool expect(struct cursor *c, char ch)
{
	if (c->p >= c->end || *c->p != ch)
		return false;
	c->p++;
	return true;
}

/* Decodes the path in place: the kernel escapes '\n' as "\012" (and nothing else), and
 * appends " (deleted)" to an unlinked file's name. */
static void decode_path(char *s, size_t n, struct maps_mapping *m)
{
	static const char deleted[] = " (deleted)";
	size_t dl = sizeof deleted - 1;
	if (n >= dl && memcmp(s + n - dl, deleted, dl) == 0) {
		m->deleted = true;
		n -= dl;
	}
	size_t w = 0;
	for (size_t r = 0; r < n; r++) {
		if (s[r] == '\\' && n - r >= 4 && memcmp(s + r, "\\012", 4) == 0) {
			s[w++] = '\n';
			r += 3;
		} else {
			s[w++] = s[r];
		}
	}
	s[w] = '\0';
}

/* LINE..EOL is one line of the text copy; *EOL is writable (the '\n' or the spare byte). */
static bool parse_line(char *line, char *eol, struct maps_mapping *m)
{
	struct cursor c = { line, eol };
	uint64_t maj, min;
	*m = (struct maps_mapping){ 0 };
	if (!parse_num(&c, 16, &m->start) || !expect(&c, '-') || !parse_num(&c, 16, &m->end) ||
	    !expect(&c, ' ') || m->end < m->start)
		return false;
	if (c.end - c.p < 5 || c.p[4] != ' ')
		return false;
	for (int i = 0; i < 4; i++) {
		if (c.p[i] == ' ' || c.p[i] == '\0')
			return false;
		m->perms[i] = c.p[i];
	}
	c.p += 5;
	if (!parse_num(&c, 16, &m->offset) || !expect(&c, ' ') || !parse_num(&c, 16, &maj) ||
	    !expect(&c, ':') || !parse_num(&c, 16, &min) || !expect(&c, ' ') ||
	    !parse_num(&c, 10, &m->inode) || maj > UINT_MAX || min > UINT_MAX)
		return false;
	m->dev_major = (unsigned)maj;
	m->dev_minor = (unsigned)min;
	if (c.p < c.end && *c.p != ' ')
		return false;
	while (c.p < c.end && *c.p == ' ')
		c.p++;
	if (c.p == c.end)
		return true; /* anonymous */
	decode_path(c.p, (size_t)(c.end - c.p), m);
	m->path = c.p;
	m->kind = m->path[0] == '/' && m->inode != 0 ? MAPS_FILE : MAPS_PSEUDO;
	return true;
}

/* ---- modules ---- */

static bool same_file(const struct maps_module *mod, const struct maps_mapping *m)
{
	return mod->inode == m->inode && mod->dev_major == m->dev_major &&
	       mod->dev_minor == m->dev_minor && strcmp(mod->path, m->path) == 0;
}

static int set_error(struct maps_module *mod, int code, const char *msg)
{
	mod->elf_err = code;
	free((char *)mod->error);
	mod->error = strdup(msg);
	return mod->error ? 0 : -ENOMEM;
}

/* Picks where to read MOD's file.  The plain path first; /proc/PID/root/PATH when the
 * target lives in another root (container, chroot); for a deleted file (rebuilt or
 * upgraded while running), /proc/PID/exe for the main executable (ptrace access suffices)
 * and /proc/PID/map_files/ (needs CAP_SYS_ADMIN).  A candidate must be a regular file
 * (never open a device) with the mapped inode; for a file not deleted, a different inode
 * is tolerated (overlayfs may report the lower file's inode in maps). */
static int choose_file(const struct maps_snapshot *s, struct maps_module *mod)
{
	const struct maps_mapping *m = &s->maps[mod->first_map];
	char cand[4][PATH_MAX];
	int n = 0;
	if (!mod->deleted)
		snprintf(cand[n++], PATH_MAX, "%s", mod->path);
	if (s->pid > 0 && !mod->deleted)
		snprintf(cand[n++], PATH_MAX, "/proc/%d/root%s", (int)s->pid, mod->path);
	if (s->pid > 0 && mod->is_main)
		snprintf(cand[n++], PATH_MAX, "/proc/%d/exe", (int)s->pid);
	if (s->pid > 0)
		snprintf(cand[n++], PATH_MAX, "/proc/%d/map_files/%llx-%llx", (int)s->pid,
			 (unsigned long long)m->start, (unsigned long long)m->end);

	int fallback = -1, first_errno = 0;
	for (int i = 0; i < n; i++) {
		struct stat st;
		if (stat(cand[i], &st)) {
			if (!first_errno)
				first_errno = errno;
			continue;
		}
		if (!S_ISREG(st.st_mode))
			continue;
		if (mod->inode == 0 || st.st_ino == mod->inode) {
			fallback = i;
			break;
		}
		if (!mod->deleted && fallback < 0)
			fallback = i;
	}
	char msg[PATH_MAX + 128];
	if (fallback < 0) {
		int code = mod->deleted ? -ESTALE : first_errno ? -first_errno : -ENOENT;
		snprintf(msg, sizeof msg, "%s: %s", mod->path,
			 mod->deleted ? "deleted, and /proc/PID/map_files is not readable"
				      " (needs CAP_SYS_ADMIN)"
				      : strerror(-code));
		return set_error(mod, code, msg);
	}
	mod->open_path = strdup(cand[fallback]);
	return mod->open_path ? 0 : -ENOMEM;
}

/* The bias from the module's lowest mapping (it maps the first PT_LOAD), else from any
 * mapping that a segment fits unambiguously. */
static int compute_bias(const struct maps_snapshot *s, struct maps_module *mod)
{
	char msg[PATH_MAX + 256];
	struct sym_file *f;
	int rc = sym_open(mod->open_path, SYM_HEADERS_ONLY, &f, msg, sizeof msg);
	if (rc)
		return rc == -ENOMEM ? rc : set_error(mod, rc, msg);
	rc = SYM_ENOTLOADED;
	for (size_t i = mod->first_map; i < s->n_maps && rc; i++) {
		const struct maps_mapping *m = &s->maps[i];
		if (m->kind == MAPS_FILE && same_file(mod, m) && m->start >= mod->start &&
		    m->end <= mod->end)
			rc = sym_load_bias(f, m->start, m->offset, i == mod->first_map, &mod->bias);
	}
	sym_close(f);
	if (rc) {
		snprintf(msg, sizeof msg, "%s: its mappings fit none of its PT_LOAD segments",
			 mod->path);
		return set_error(mod, rc, msg);
	}
	return 0;
}

static int build_modules(struct maps_snapshot *s, char *err, size_t errlen)
{
	s->modules = calloc(s->n_maps ? s->n_maps : 1, sizeof *s->modules);
	if (!s->modules)
		return err_set(err, errlen, -ENOMEM, "out of memory");
	for (size_t i = 0; i < s->n_maps; i++) {
		const struct maps_mapping *m = &s->maps[i];
		if (m->kind != MAPS_FILE)
			continue;
		struct maps_module *mod = NULL;
		/* Offset 0 starts a new instance: the same file can be loaded twice. */
		if (m->offset != 0)
			for (size_t k = s->n_modules; k-- > 0 && !mod;)
				if (same_file(&s->modules[k], m))
					mod = &s->modules[k];
		if (mod) {
			if (m->start < mod->start) {
				mod->start = m->start;
				mod->first_map = i;
			}
			if (m->end > mod->end)
				mod->end = m->end;
			continue;
		}
		mod = &s->modules[s->n_modules++];
		*mod = (struct maps_module){
			.path = m->path, .start = m->start, .end = m->end, .inode = m->inode,
			.dev_major = m->dev_major, .dev_minor = m->dev_minor,
			.deleted = m->deleted, .first_map = i };
		if (s->exe && strcmp(s->exe, m->path) == 0 && !maps_main(s))
			mod->is_main = true;
	}
	for (size_t i = 0; i < s->n_modules; i++) {
		struct maps_module *mod = &s->modules[i];
		int rc = choose_file(s, mod);
		if (!rc && mod->open_path)
			rc = compute_bias(s, mod);
		if (rc)
			return err_set(err, errlen, rc, "out of memory");
	}
	return 0;
}

int maps_parse(const char *text, size_t len, pid_t pid, const char *exe,
	       struct maps_snapshot **out, char *err, size_t errlen)
{
	if ((!text && len) || !out)
		return err_set(err, errlen, -EINVAL, "maps_parse: NULL argument");
	*out = NULL;
	struct maps_snapshot *s = calloc(1, sizeof *s);
	if (!s)
		return err_set(err, errlen, -ENOMEM, "out of memory");
	s->pid = pid;
	int rc = -ENOMEM;
	size_t lines = 1;
	for (size_t i = 0; i < len; i++)
		lines += text[i] == '\n';
	/* One spare byte: the last line may lack its '\n', and paths are NUL-terminated in
	 * place.  The exe path is kept after it. */
	size_t exelen = exe ? strlen(exe) + 1 : 0;
	s->text_ = malloc(len + 1 + exelen);
	s->maps = calloc(lines, sizeof *s->maps);
	if (!s->text_ || !s->maps)
		goto fail;
	if (len)
		memcpy(s->text_, text, len);
	s->text_[len] = '\n';
	if (exe) {
		memcpy(s->text_ + len + 1, exe, exelen);
		s->exe = s->text_ + len + 1;
	}

	char *p = s->text_, *end = s->text_ + len;
	for (size_t line = 1; p < end; line++) {
		char *eol = memchr(p, '\n', (size_t)(end - p) + 1);
		if (eol > p && !parse_line(p, eol, &s->maps[s->n_maps++])) {
			*eol = '\0';
			rc = err_set(err, errlen, -EINVAL, "maps line %zu: cannot parse '%.200s'",
				      line, p);
			goto fail;
		}
		p = eol + 1;
	}
	if ((rc = build_modules(s, err, errlen)))
		goto fail;
	*out = s;
	return 0;
fail:
	if (rc == -ENOMEM)
		err_set(err, errlen, rc, "out of memory");
	maps_free(s);
	return rc;
}

/* Reads a whole /proc file (its size is unknown until read). */
static int read_proc(const char *path, char **buf, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t cap = 16384, n = 0;
	char *b = malloc(cap);
	int rc = 0;
	while (b) {
		if (cap - n < 4096) {
			char *nb = realloc(b, cap * 2);
			if (!nb) {
				free(b);
				b = NULL;
				break;
			}
			b = nb;
			cap *= 2;
		}
		ssize_t r = read(fd, b + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			break;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (!b)
		return -ENOMEM;
	if (rc) {
		free(b);
		return rc;
	}
	*buf = b;
	*len = n;
	return 0;
}

int maps_read(pid_t pid, struct maps_snapshot **out, char *err, size_t errlen)
{
	if (pid <= 0 || !out)
		return err_set(err, errlen, -EINVAL, "maps_read: bad argument");
	*out = NULL;
	char path[64], exe[PATH_MAX];
	snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
	ssize_t n = readlink(path, exe, sizeof exe - 1);
	if (n >= 0) {
		exe[n] = '\0';
		size_t dl = strlen(" (deleted)");
		if ((size_t)n > dl && strcmp(exe + n - dl, " (deleted)") == 0)
			exe[n - dl] = '\0';
	}
	snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
	char *text = NULL;
	size_t len = 0;
	int rc = read_proc(path, &text, &len);
	if (rc)
		return err_set(err, errlen, rc, "%s: %s", path, strerror(-rc));
	rc = maps_parse(text, len, pid, n >= 0 ? exe : NULL, out, err, errlen);
	free(text);
	return rc;
}

void maps_free(struct maps_snapshot *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n_modules; i++) {
		free((char *)s->modules[i].open_path);
		free((char *)s->modules[i].error);
	}
	free(s->modules);
	free(s->maps);
	free(s->text_);
	free(s);
}

const struct maps_mapping *maps_find(const struct maps_snapshot *s, uint64_t addr)
{
	for (size_t i = 0; i < s->n_maps; i++)
		if (addr >= s->maps[i].start && addr < s->maps[i].end)
			return &s->maps[i];
	return NULL;
}

const struct maps_module *maps_main(const struct maps_snapshot *s)
{
	for (size_t i = 0; i < s->n_modules; i++)
		if (s->modules[i].is_main)
			return &s->modules[i];
	return NULL;
}
