/* libprobed.so: a library function for MODULE:FUNC probes, called by lib_user (linked) and
 * dlopen_user (loaded after the tracer has armed). */
#include "libprobed.h"

/* Read through volatile so no call's result is known at compile time. */
static volatile unsigned probed_seed = 0x7f4a7c15u;

/* Exported whatever the default visibility; noinline keeps a body to probe. */
__attribute__((visibility("default"), noinline)) int probed_lib_fn(int x)
{
	unsigned h = probed_seed ^ (unsigned)x;
	for (int i = 0; i < 4; i++)
		h = (h ^ (h >> 14)) * 0x5bd1e995u + (unsigned)i;
	return (int)(h & 0x7fffffff);
}
