/* A library built with frame pointers that memprof_unwind loads with dlopen after its profile
 * started: callstacks through it must be whole (the walker sees objects loaded after setup). */
#include <stdlib.h>

__attribute__((noinline)) static void *plugin_inner(size_t n, int *armed)
{
    *armed = 1;
    void *p = malloc(n);
    __asm__ volatile("" ::: "memory");
    return p;
}

__attribute__((noinline)) void *plugin_outer(size_t n, int *armed);
__attribute__((noinline)) void *plugin_outer(size_t n, int *armed)
{
    void *p = plugin_inner(n + 1, armed);
    __asm__ volatile("" ::: "memory");
    return p;
}
