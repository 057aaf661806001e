/* The library's messages go to a callback, never straight to stderr. */
#include "internal.h"

#include <stdio.h>

static _Atomic(ptss_print_fn) print_fn;

ptss_print_fn ptss_set_print(ptss_print_fn fn)
{
	return atomic_exchange(&print_fn, fn);
}

void _ptss_pr(enum ptss_print_level level, const char *fmt, ...)
{
	ptss_print_fn fn = ptss_atomic_load_acquire(&print_fn);
	if (!fn)
		return;
	int saved = errno; /* a message never changes the caller's errno */
	va_list ap;
	va_start(ap, fmt);
	fn(level, fmt, ap);
	va_end(ap);
	errno = saved;
}
