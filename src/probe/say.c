/* Messages of the engine: one line each, handed to the caller's print callback. */
#define _GNU_SOURCE
#include "engine.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static void vsay(const struct tracer *t, enum ptss_tracer_level level, const char *fmt, va_list ap)
{
	if (!t->opts.print)
		return;
	char *line;
	if (vasprintf(&line, fmt, ap) < 0)
		return;
	t->opts.print(level, line, t->opts.print_ctx);
	free(line);
}

void say_error(const struct tracer *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsay(t, PTSS_TRACER_ERROR, fmt, ap);
	va_end(ap);
}

void say_info(const struct tracer *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsay(t, PTSS_TRACER_INFO, fmt, ap);
	va_end(ap);
}
