/* Messages of ptss itself: one line each on stderr, prefixed "ptss: ". */
#include "tracer.h"

#include <stdarg.h>

static void vsay(const char *fmt, va_list ap)
{
	fputs("ptss: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void msg(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
}

void info(const struct tracer *t, const char *fmt, ...)
{
	if (t->set->quiet)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
}
