/* Target of test_symbols, built PIE, non-PIE and stripped: prints where its own functions
 * and libc's getpid are, as the running process sees them, then obeys stdin:
 *   "load PATH"  dlopen PATH (libsymtest) and print where its functions are.
 * Every reply ends with "ready"; EOF ends the process. */
#define _GNU_SOURCE /* dlvsym */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

int sym_target_func(int x);
int sym_target_glob_one(int x);
int sym_target_glob_two(int x);

/* noinline + used: each stays a real function with its own symbol. */
__attribute__((noinline, used)) int sym_target_func(int x)
{
	return x * 3 + 1;
}

__attribute__((noinline, used)) int sym_target_glob_one(int x)
{
	return x + 11;
}

__attribute__((noinline, used)) int sym_target_glob_two(int x)
{
	return x + 22;
}

/* Local: in .symtab only. */
__attribute__((noinline, used)) static int sym_target_static(int x)
{
	return x - 5;
}

static void show(const char *kind, const char *name, void *addr)
{
	printf("%s %s %p\n", kind, name, addr);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	show("main", "sym_target_func", (void *)&sym_target_func);
	show("main", "sym_target_glob_one", (void *)&sym_target_glob_one);
	show("main", "sym_target_glob_two", (void *)&sym_target_glob_two);
	show("main", "sym_target_static", (void *)&sym_target_static);
	/* dlsym on libc's own handle: its definition, never a non-PIE executable's PLT stub. */
	void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
	show("libc", "getpid", libc ? dlsym(libc, "getpid") : NULL);
	printf("ready\n");

	char line[4096];
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "load ", 5) == 0) {
			void *h = dlopen(line + 5, RTLD_NOW);
			if (!h) {
				printf("error %s\n", dlerror());
			} else {
				show("lib", "sym_lib_func", dlsym(h, "sym_lib_func"));
				show("lib", "sym_lib_glob_a", dlsym(h, "sym_lib_glob_a"));
				show("lib", "sym_lib_glob_b", dlsym(h, "sym_lib_glob_b"));
				show("lib", "sym_lib_ver@SYMTEST_1", dlvsym(h, "sym_lib_ver", "SYMTEST_1"));
				show("lib", "sym_lib_ver@SYMTEST_2", dlvsym(h, "sym_lib_ver", "SYMTEST_2"));
			}
		}
		printf("ready\n");
	}
	return 0;
}
