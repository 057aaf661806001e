/* Each public header compiles alone, first in its unit: the meson file builds this once per header. */
#include HEADER
int main(void) { return 0; }
