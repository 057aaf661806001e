/* The `[--calls K]` argument of the tracer tests' small targets (default 10). */
#ifndef PTSS_TESTS_CALLS_ARG_H
#define PTSS_TESTS_CALLS_ARG_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* K, or exits 2 with a usage line naming the program. */
static inline long calls_arg(int argc, char **argv, const char *name)
{
	long calls = 10;
	if (argc == 3 && !strcmp(argv[1], "--calls")) {
		char *end;
		calls = strtol(argv[2], &end, 10);
		if (*end || end == argv[2] || calls < 0 || calls > 100000000)
			calls = -1;
	} else if (argc != 1) {
		calls = -1;
	}
	if (calls < 0) {
		fprintf(stderr, "usage: %s [--calls K (0-100000000)]\n", name);
		exit(2);
	}
	return calls;
}

#endif
