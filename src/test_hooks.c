/* Test hooks of the free list; present only in builds made with PTSS_TEST_HOOKS. */
#include "freelist.h"

#ifdef PTSS_TEST_HOOKS
void (*_ptss_freelist_pop_hook)(void);
#endif
