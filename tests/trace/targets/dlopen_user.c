/*
 * Loads libprobed.so after start-up and calls probed_lib_fn a known number of times: the
 * tracer must arm a probe on a module that appears while it traces.
 *
 *   usage: dlopen_user LIBPATH [--calls K] [--delay-ms MS] [--wait-stdin]
 *          (defaults: 10 calls, 200 ms)
 *
 * Before dlopen it sleeps MS milliseconds, or with --wait-stdin reads one line (or EOF) from
 * stdin, so a tracer started alongside has attached and armed its other probes.
 * stdout: `dlopen_user: probed_lib_fn=K checksum=X`, the same traced or not.
 * stderr: `dlopen_user: expect pid=P probed_lib_fn=K`.
 */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int usage(void)
{
	fprintf(stderr, "usage: dlopen_user LIBPATH [--calls K (0-100000000)] "
		"[--delay-ms MS (0-60000)] [--wait-stdin]\n");
	return 2;
}

/* The value after argv[*i], in [lo, hi]; -1 if missing or out of range. */
static long int_arg(int argc, char **argv, int *i, long lo, long hi)
{
	if (*i + 1 >= argc)
		return -1;
	char *end;
	errno = 0;
	long v = strtol(argv[++*i], &end, 10);
	return errno || *end || end == argv[*i] || v < lo || v > hi ? -1 : v;
}

int main(int argc, char **argv)
{
	long calls = 10, delay_ms = 200;
	bool wait_stdin = false;
	if (argc < 2 || argv[1][0] == '-')
		return usage();
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--calls")) {
			if ((calls = int_arg(argc, argv, &i, 0, 100000000)) < 0)
				return usage();
		} else if (!strcmp(argv[i], "--delay-ms")) {
			if ((delay_ms = int_arg(argc, argv, &i, 0, 60000)) < 0)
				return usage();
		} else if (!strcmp(argv[i], "--wait-stdin")) {
			wait_stdin = true;
		} else {
			return usage();
		}
	}

	if (wait_stdin) {
		char line[64];
		if (!fgets(line, sizeof(line), stdin) && ferror(stdin)) {
			perror("dlopen_user: stdin");
			return 1;
		}
	} else {
		struct timespec left = { delay_ms / 1000, delay_ms % 1000 * 1000000 };
		/* A tracer's attach may interrupt the sleep: sleep out the rest. */
		while (nanosleep(&left, &left) && errno == EINTR)
			;
	}

	void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		fprintf(stderr, "dlopen_user: %s\n", dlerror());
		return 1;
	}
	int (*fn)(int);
	*(void **)&fn = dlsym(lib, "probed_lib_fn");
	if (!fn) {
		fprintf(stderr, "dlopen_user: %s\n", dlerror());
		return 1;
	}
	uint64_t sum = 0;
	for (long i = 0; i < calls; i++)
		sum += (uint64_t)fn((int)i);
	printf("dlopen_user: probed_lib_fn=%ld checksum=%016" PRIx64 "\n", calls, sum);
	fprintf(stderr, "dlopen_user: expect pid=%d probed_lib_fn=%ld\n", (int)getpid(), calls);
	return 0;
}
