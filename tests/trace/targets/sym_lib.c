/* libsymtest: a shared object for test_symbols, linked with sym_lib.map, so that every
 * exported function is versioned; it has an alias, two versions of one name, and an ifunc. */
int sym_lib_func(int x);
int sym_lib_alias(int x);
int sym_lib_glob_a(int x);
int sym_lib_glob_b(int x);
int sym_lib_ver_v1(void);
int sym_lib_ver_v2(void);
int sym_lib_ifn(void);

int sym_lib_func(int x)
{
	return x + 7;
}

/* Same address as sym_lib_func: one entry with two names. */
int sym_lib_alias(int x) __attribute__((alias("sym_lib_func")));

int sym_lib_glob_a(int x)
{
	return x * 5;
}

int sym_lib_glob_b(int x)
{
	return x * 6;
}

/* sym_lib_ver@SYMTEST_1 (old, hidden) and sym_lib_ver@@SYMTEST_2 (default). */
int sym_lib_ver_v1(void)
{
	return 1;
}

int sym_lib_ver_v2(void)
{
	return 2;
}

__asm__(".symver sym_lib_ver_v1, sym_lib_ver@SYMTEST_1");
__asm__(".symver sym_lib_ver_v2, sym_lib_ver@@SYMTEST_2");

static int ifn_impl(void)
{
	return 42;
}

__attribute__((used)) static int (*ifn_resolve(void))(void)
{
	return ifn_impl;
}

int sym_lib_ifn(void) __attribute__((ifunc("ifn_resolve")));
