/* The interface of libprobed.so (tests/trace/targets/libprobed.c). */
#ifndef PTSS_TESTS_LIBPROBED_H
#define PTSS_TESTS_LIBPROBED_H

/* A deterministic function of x: the same result traced or not. */
int probed_lib_fn(int x);

#endif
