/*
 * A statically linked program (no ld.so, no shared library): libc's functions are copies
 * inside the executable. It calls malloc and its own static_work a known number of times.
 *
 *   usage: static_user [--calls K]     (default 10)
 *
 * stdout: `static_user: static_work=K checksum=X`, the same traced or not.
 * stderr: `static_user: expect pid=P static_work=K`.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "calls_arg.h"

__attribute__((noinline)) uint64_t static_work(long i);
__attribute__((noinline)) uint64_t static_work(long i)
{
	char *p = malloc(16 + (size_t)i % 32);
	if (!p)
		exit(3);
	memset(p, (int)i, 16);
	uint64_t v = (uint64_t)(unsigned char)p[7] * 3 + 1;
	free(p);
	return v;
}

int main(int argc, char **argv)
{
	long calls = calls_arg(argc, argv, "static_user");
	uint64_t sum = 0;
	for (long i = 0; i < calls; i++)
		sum += static_work(i);
	printf("static_user: static_work=%ld checksum=%016" PRIx64 "\n", calls, sum);
	fprintf(stderr, "static_user: expect pid=%d static_work=%ld\n", (int)getpid(), calls);
	return 0;
}
