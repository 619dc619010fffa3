/* A statically linked program that runs a little while: no dynamic loader, so LD_PRELOAD cannot
 * reach it, and it lives long enough for the launcher's listing of the tree to see it. */
#include <stdio.h>
#include <time.h>

int main(void)
{
    struct timespec pause = {0, 400 * 1000 * 1000};
    nanosleep(&pause, NULL);
    printf("static ok\n");
    return 0;
}
