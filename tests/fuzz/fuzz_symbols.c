/*
 * libFuzzer harness: arbitrary bytes as an ELF image for the symbol reader.  It must never
 * crash, and must either refuse the image with one of its documented errors and a message,
 * or give entries that keep the invariants of symbols.h.
 */
#include "symbols.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static void check_error(int rc, const char *err)
{
	CHECK(rc == SYM_ENOTELF || rc == SYM_EUNSUPP || rc == SYM_ENOSYMS || rc == -ENOMEM);
	CHECK(err[0] != '\0');
}

static void select_some(const struct sym_file *f, const char *pattern)
{
	struct sym_match *m;
	size_t n;
	char err[512];
	int rc = sym_select(f, pattern, &m, &n, err, sizeof err);
	if (rc) {
		CHECK(rc == SYM_ENOFUNC || rc == SYM_ENOMATCH || rc == -EINVAL);
		return;
	}
	CHECK(n > 0);
	for (size_t i = 0; i < n; i++) {
		CHECK(m[i].name >= m[i].entry->names &&
		      m[i].name < m[i].entry->names + m[i].entry->n_names);
		sym_probeable(&m[i], err, sizeof err);
	}
	free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512] = "";
	struct sym_file *f;
	uint64_t v;

	int rc = sym_open_memory(data, size, SYM_HEADERS_ONLY, &f, err, sizeof err);
	if (rc) {
		check_error(rc, err);
		return 0;
	}
	sym_load_bias(f, 0x7f0000000000ull, 0, true, &v);
	sym_load_bias(f, 0x7f0000001000ull, 0x1000, false, &v);
	sym_close(f);

	err[0] = '\0';
	rc = sym_open_memory(data, size, 0, &f, err, sizeof err);
	if (rc) {
		check_error(rc, err);
		return 0;
	}
	size_t n;
	const struct sym_entry *e = sym_entries(f, &n);
	CHECK(n > 0);
	for (size_t i = 0; i < n; i++) {
		CHECK(i == 0 || e[i - 1].vaddr < e[i].vaddr);
		CHECK(e[i].n_names >= 1);
		for (size_t k = 0; k < e[i].n_names; k++) {
			const struct sym_name *nm = &e[i].names[k];
			CHECK(nm->name[0] != '\0' && !strchr(nm->name, '@'));
			CHECK(!nm->version || nm->version[0] != '\0');
		}
		sym_vaddr_to_offset(f, e[i].vaddr, &v);
	}
	/* Lookups by the names found, with their versions, and globs. */
	char pat[300];
	for (size_t i = 0; i < n && i < 8; i++) {
		const struct sym_name *nm = &e[i].names[e[i].n_names - 1];
		select_some(f, nm->name);
		if (nm->version && strlen(nm->name) + strlen(nm->version) < 290) {
			strcpy(pat, nm->name);
			strcat(pat, nm->hidden ? "@" : "@@");
			strcat(pat, nm->version);
			select_some(f, pat);
		}
	}
	select_some(f, "*");
	select_some(f, "[a-m]*");
	select_some(f, "main@@");
	sym_close(f);
	return 0;
}
