/* Target for tests/test_api.c: a program that is not preloaded and dlopens libmemlimits.so
 * (argv[1]) after glibc took malloc. memlimits then does not own malloc: ml_active() is 0 and
 * ml_set_heap_cap does nothing. Prints "active N" and "cap C" (ml_heap_cap after setting 4096). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc < 2) return 100;
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        printf("dlopen: %s\n", dlerror());
        return 101;
    }
    int (*active)(void) = (int (*)(void))dlsym(lib, "ml_active");
    void (*set_heap_cap)(uint64_t) = (void (*)(uint64_t))dlsym(lib, "ml_set_heap_cap");
    uint64_t (*heap_cap)(void) = (uint64_t(*)(void))dlsym(lib, "ml_heap_cap");
    if (!active || !set_heap_cap || !heap_cap) return 102;
    set_heap_cap(4096);
    void *p = malloc(1 << 20); /* glibc's: not refused */
    printf("active %d\ncap %llu\nmalloc %s\n", active(), (unsigned long long)heap_cap(),
           p ? "ok" : "null");
    free(p);
    return 0;
}
