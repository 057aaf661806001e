/* err.h: one-line error messages into a caller's buffer, for the engine's modules. */
#ifndef PTSS_TRACE_ERR_H
#define PTSS_TRACE_ERR_H

#include <stddef.h>

/* Formats a message into err (when err and errlen are set) and returns code. */
__attribute__((format(printf, 4, 5)))
int err_set(char *err, size_t errlen, int code, const char *fmt, ...);

#endif
