/* A shared library for robust_dlopen (dlopen'ed and dlclose'd in a loop) and robust_early (linked,
 * so that its constructor runs before libmemlimits.so's): it allocates in its constructor, in a
 * function, and frees everything in its destructor. The constructor measures, with the
 * ml_thread_allocated of the process if there is one, how many bytes its allocation counted. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CTOR_BLOCK ((size_t)1 << 20)

#define EXPORT __attribute__((visibility("default")))

typedef uint64_t (*u64_fn)(void);

EXPORT void robust_dl_release(void);
EXPORT size_t robust_dl_ctor_block(uint64_t *counted);
EXPORT uint64_t robust_dl_work(int count);
EXPORT void *robust_dl_malloc_address(void);

static unsigned char *ctor_block;
static uint64_t ctor_counted = UINT64_MAX; /* UINT64_MAX: no ml_thread_allocated */

struct node {
    struct node *next;
    size_t size;
};
static struct node *nodes;

__attribute__((constructor)) static void robust_dl_constructor(void)
{
    u64_fn thread_allocated = (u64_fn)dlsym(RTLD_DEFAULT, "ml_thread_allocated");
    uint64_t before = thread_allocated != NULL ? thread_allocated() : 0;
    ctor_block = malloc(CTOR_BLOCK);
    if (thread_allocated != NULL) ctor_counted = thread_allocated() - before;
    if (ctor_block != NULL) memset(ctor_block, 0xc5, CTOR_BLOCK);
}

EXPORT void robust_dl_release(void)
{
    while (nodes != NULL) {
        struct node *n = nodes;
        nodes = n->next;
        free(n);
    }
}

__attribute__((destructor)) static void robust_dl_destructor(void)
{
    robust_dl_release();
    free(ctor_block);
    ctor_block = NULL;
}

/* The constructor's block size, or 0 when it is missing or damaged; *counted: the bytes
 * ml_thread_allocated counted for it (UINT64_MAX when memlimits was not there). */
EXPORT size_t robust_dl_ctor_block(uint64_t *counted)
{
    *counted = ctor_counted;
    if (ctor_block == NULL) return 0;
    for (size_t i = 0; i < CTOR_BLOCK; i += 4096)
        if (ctor_block[i] != 0xc5) return 0;
    return CTOR_BLOCK;
}

/* Allocates `count` blocks of various sizes, kept until robust_dl_release; returns the bytes
 * requested, or 0 if an allocation failed. */
EXPORT uint64_t robust_dl_work(int count)
{
    uint64_t requested = 0;
    for (int i = 0; i < count; i++) {
        size_t size = sizeof(struct node) + (size_t)(i * 37 % 5000);
        struct node *n = malloc(size);
        if (n == NULL) return 0;
        n->size = size;
        n->next = nodes;
        nodes = n;
        requested += size;
    }
    return requested;
}

/* The malloc this library's references are bound to. */
EXPORT void *robust_dl_malloc_address(void)
{
    void *(*volatile bound)(size_t) = malloc;
    return (void *)bound;
}
