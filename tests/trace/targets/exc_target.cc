// A target of the call tests (test_calls.py): calls that a C++ exception unwinds, and
// calls made afterwards at the same depth, whose returns must be matched with no stale
// frame in the way. Prints on stderr what a tracer must see (entries, then returns).
#include <cstdio>
#include <stdexcept>
#include <unistd.h>

// C linkage: probed by these names. Recurses n deep, then the deepest call throws.
extern "C" __attribute__((noinline)) long cx_throw(int n)
{
	if (n == 0)
		throw std::runtime_error("out");
	long r = cx_throw(n - 1);
	__asm__ volatile("" : "+r"(r)); // not a tail call
	return r + 1;
}

extern "C" __attribute__((noinline)) long cx_leaf(int x)
{
	__asm__ volatile("" : "+r"(x));
	return x + 1;
}

int main()
{
	long sum = 0;
	int caught = 0;
	for (int i = 0; i < 10; i++) {
		try {
			sum += cx_throw(4);
		} catch (const std::exception &) {
			caught++;
		}
		sum += cx_leaf(i);
	}
	std::fprintf(stderr, "exc_target: expect pid=%d cx_throw=50 cx_leaf=10\n", (int)getpid());
	std::fprintf(stderr, "exc_target: returns pid=%d cx_throw=0 cx_leaf=10\n", (int)getpid());
	std::printf("sum %ld caught %d\n", sum, caught);
	return caught == 10 ? 0 : 1;
}
