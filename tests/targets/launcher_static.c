/* A statically linked program: no dynamic loader, so LD_PRELOAD cannot reach it. */
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    char *p = malloc(64);
    printf("static ok\n");
    free(p);
    return 0;
}
