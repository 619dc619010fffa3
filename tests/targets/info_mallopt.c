/* Target for tests/test_info.c: mallopt's answers. Prints "NAME VALUE RESULT" for each call,
 * then checks that allocation still works and is still accounted after them all
 * ("after_mallopt DELTA USABLE": mallinfo2's uordblks change across a 1 MiB malloc, and the
 * block's usable size). */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdlib.h>

#include "say.h"

static void *volatile sink;

#define TRY(param, value) say("%s %d %d\n", #param, (int)(value), mallopt((param), (value)))

int main(void)
{
    TRY(M_MXFAST, 0);
    TRY(M_MXFAST, 64);
    TRY(M_MXFAST, 160);
    TRY(M_MXFAST, 161);
    TRY(M_MXFAST, -1);
    TRY(M_NLBLKS, 1);
    TRY(M_GRAIN, 1);
    TRY(M_KEEP, 1);
    TRY(M_TRIM_THRESHOLD, 1 << 20);
    TRY(M_TOP_PAD, 1 << 16);
    TRY(M_MMAP_THRESHOLD, 128 << 10);
    TRY(M_MMAP_THRESHOLD, -1);
    TRY(M_MMAP_MAX, 0);
    TRY(M_CHECK_ACTION, 3);
    TRY(M_PERTURB, 0xa5);
    TRY(M_ARENA_TEST, 2);
    TRY(M_ARENA_MAX, 1);
    TRY(M_ARENA_MAX, 0);
    TRY(999, 1);
    TRY(-100, 1);
    size_t before = mallinfo2().uordblks;
    void *p = malloc(1 << 20);
    if (p == NULL) return 3;
    sink = p;
    size_t after = mallinfo2().uordblks;
    size_t usable = malloc_usable_size(p);
    free(p);
    say("after_mallopt %zd %zu\n", (ssize_t)(after - before), usable);
    return 0;
}
