/* tree_gofake: looks like a Go program to memlimits (it has a .go.buildinfo section, as every Go
 * executable does) and, like one, ends without running exit handlers. */
#include <unistd.h>

#include "say.h"

__attribute__((section(".go.buildinfo"), used)) static const char buildinfo[32] =
    "\xff Go buildinf:";

int main(void)
{
    say("go-like %d\n", (int)getpid());
    _exit(0);
}
