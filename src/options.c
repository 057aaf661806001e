/* Options: defaults, and the checks that every combination must pass. */
#include "internal.h"

#include <string.h>
#include <unistd.h>

static bool is_pow2(size_t x) { return x && !(x & (x - 1)); }

unsigned _ptss_log2(size_t power_of_two)
{
	return (unsigned)__builtin_ctzll(power_of_two);
}

void ptss_opts_default(struct ptss_opts *opts)
{
	*opts = (struct ptss_opts){
		.sz = sizeof(*opts),
		.entry_size = PTSS_ENTRY_SIZE_DEFAULT,
		.page_size = (size_t)sysconf(_SC_PAGESIZE),
		.reserve_size = PTSS_RESERVE_SIZE_DEFAULT,
	};
}

/*
 * Copies what the caller knows of struct ptss_opts over the defaults. A caller built
 * against a newer header may pass a larger sz; the fields we do not know must then be zero.
 */
static int opts_copy(const struct ptss_opts *in, struct ptss_opts *out)
{
	if (in->sz < sizeof(size_t))
		return -EINVAL;
	size_t known = in->sz < sizeof(*out) ? in->sz : sizeof(*out);
	for (size_t i = sizeof(*out); i < in->sz; i++)
		if (((const unsigned char *)in)[i])
			return -EINVAL;
	struct ptss_opts given = { 0 };
	memcpy(&given, in, known);
	if (given.entry_size)
		out->entry_size = given.entry_size;
	if (given.page_size)
		out->page_size = given.page_size;
	if (given.reserve_size)
		out->reserve_size = given.reserve_size;
	return 0;
}

int _ptss_opts_resolve(const struct ptss_opts *in, struct ptss_opts *out)
{
	ptss_opts_default(out);
	size_t system_page = out->page_size;
	if (in && opts_copy(in, out))
		return -EINVAL;
	if (!is_pow2(out->entry_size) || out->entry_size < 16)
		return -EINVAL;
	/* A page is the unit of mapping in the target, so it cannot be smaller than the system's. */
	if (!is_pow2(out->page_size) || out->page_size < system_page || out->entry_size > out->page_size)
		return -EINVAL;
	if (out->reserve_size < out->page_size || out->reserve_size % out->page_size)
		return -EINVAL;
	if (out->reserve_size / out->entry_size > PTSS_MAX_ENTRIES)
		return -EINVAL;
	return 0;
}
