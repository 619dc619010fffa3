/* Target for tests/test_fast_entries.c: the entry points that end in a tail call to jemalloc
 * (realloc, calloc, aligned_alloc, memalign, valloc, posix_memalign) under real exhaustion of the
 * address space (RLIMIT_AS), with requests small enough to take the fast path: each must fail
 * the way glibc's does (NULL and ENOMEM; posix_memalign ENOMEM with the out-pointer untouched),
 * a realloc that fails must keep its block. argv[1] names the entry point, argv[2] the size
 * (default 20000; 1000 takes an aligned request to jemalloc's malloc); the program prints
 * "blocks N", then "null 1 errno E" (or "rc R untouched U errno E" for posix_memalign) and
 * "kept K" for realloc. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define MAX_BLOCKS (1 << 20)

static void *blocks[MAX_BLOCKS];

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3) return 2;
    const char *what = argv[1];
    size_t size = argc == 3 ? strtoul(argv[2], NULL, 10) : 20000;
    if (size == 0) return 2;
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (f == NULL || fscanf(f, "%lu", &pages) != 1) return 101;
    fclose(f);
    /* What is mapped now and 64 MiB more: the blocks exhaust it in jemalloc. */
    struct rlimit rl = {pages * 4096 + (64 << 20), pages * 4096 + (64 << 20)};
    if (setrlimit(RLIMIT_AS, &rl) != 0) return 102;
    int n = 0;
    for (; n < MAX_BLOCKS; n++) {
        void *p = NULL;
        errno = 0;
        if (strcmp(what, "realloc") == 0) {
            char *small = malloc(16);
            if (small == NULL) return 103;
            memset(small, 'k', 16);
            errno = 0;
            p = realloc(small, size);
            if (p == NULL) {
                int e = errno;
                printf("blocks %d\nnull 1 errno %d\nkept %d\n", n, e,
                       small[0] == 'k' && small[15] == 'k');
                return 0;
            }
        } else if (strcmp(what, "posix_memalign") == 0) {
            void *out = (void *)0x77;
            int rc = posix_memalign(&out, 64, size);
            if (rc != 0) {
                printf("blocks %d\nrc %d untouched %d errno %d\n", n, rc, out == (void *)0x77,
                       errno);
                return 0;
            }
            p = out;
        } else {
            if (strcmp(what, "calloc") == 0)
                p = calloc(1, size);
            else if (strcmp(what, "aligned_alloc") == 0)
                p = aligned_alloc(4096, size);
            else if (strcmp(what, "memalign") == 0)
                p = memalign(256, size);
            else if (strcmp(what, "valloc") == 0)
                p = valloc(size);
            else
                return 2;
            if (p == NULL) {
                printf("blocks %d\nnull 1 errno %d\n", n, errno);
                return 0;
            }
        }
        blocks[n] = p;
    }
    printf("blocks %d\nnever failed\n", n);
    return 0;
}
