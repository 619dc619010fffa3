/* A user's own preload library: its constructor leaves a mark in the environment, so that a
 * test can see it was loaded alongside libmemlimits.so. */
#include <stdlib.h>

__attribute__((constructor)) static void leave_mark(void)
{
    setenv("ML_LAUNCHER_MARKER", "1", 1);
}
