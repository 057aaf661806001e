/* Small helpers shared by the tests. */
#ifndef PTSS_TESTS_HELPERS_H
#define PTSS_TESTS_HELPERS_H

#include <ptss/ptss.h>
#include <ptss/space.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Options with `per_page` entries per system page and room for `max_pages` pages. */
struct ptss_opts test_opts(unsigned per_page, unsigned max_pages);

/* A process life over the self space, 64 entries per page and room for 16 pages: cmocka
 * setup and teardown, the fixture in *state. */
struct test_fixture {
	ptss_space *space;
	ptss_proc *p;
};
int test_fixture_setup(void **state);
int test_fixture_teardown(void **state);

/* Writes `mov $value, %eax; ret` into e and calls it through its executable address. */
int test_run_entry(ptss_proc *p, ptss_entry *e, int value);

/* The permissions ("r-xp", ...) of the mapping holding addr in /proc/self/maps, or "" if none. */
const char *test_maps_perms(uint64_t addr, char out[8]);
/* Number of mappings in /proc/self/maps that overlap [addr, addr + len). */
int test_maps_overlapping(uint64_t addr, size_t len);
/* Number of mappings of ptss memfds in /proc/self/maps (leak checks). */
int test_maps_ptss_count(void);
/* Any mapping of a ptss memfd both writable and executable? (Valgrind's own are.) */
bool test_maps_ptss_any_wx(void);

#endif
