/*
 * Calls libprobed.so's probed_lib_fn, linked at start-up, a known number of times.
 *
 *   usage: lib_user [--calls K]     (default 10)
 *
 * stdout: `lib_user: probed_lib_fn=K checksum=X`, the same traced or not.
 * stderr: `lib_user: expect pid=P probed_lib_fn=K`.
 */
#include "libprobed.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "calls_arg.h"

int main(int argc, char **argv)
{
	long calls = calls_arg(argc, argv, "lib_user");
	uint64_t sum = 0;
	for (long i = 0; i < calls; i++)
		sum += (uint64_t)probed_lib_fn((int)i);
	printf("lib_user: probed_lib_fn=%ld checksum=%016" PRIx64 "\n", calls, sum);
	fprintf(stderr, "lib_user: expect pid=%d probed_lib_fn=%ld\n", (int)getpid(), calls);
	return 0;
}
