/* glibc's malloc statistics and tuning calls, interposed: under memlimits glibc's own would
 * describe its unused heap. Each forwards to lib/info.c, which answers from memlimits'
 * accounting; none of them is on the allocation path. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdio.h>

#include "common.h"
#include "info.h"

#define ENTRY ML_EXPORT

ENTRY struct mallinfo2 mallinfo2(void)
{
    return ml__info_mallinfo2();
}

ENTRY struct mallinfo mallinfo(void)
{
    return ml__info_mallinfo();
}

ENTRY void malloc_stats(void)
{
    ml__info_malloc_stats();
}

ENTRY int malloc_info(int options, FILE *fp)
{
    return ml__info_malloc_info(options, fp);
}

ENTRY int mallopt(int param, int value)
{
    return ml__info_mallopt(param, value);
}

/* glibc's internal names of the two (GLIBC_2.2.5), as for the allocation API. mallinfo is
 * deprecated in glibc's header, so its other name is a function of its own, not an alias. */
struct mallinfo __libc_mallinfo(void);
ENTRY struct mallinfo __libc_mallinfo(void)
{
    return ml__info_mallinfo();
}
ENTRY __typeof__(mallopt) __libc_mallopt __attribute__((alias("mallopt"), copy(mallopt)));
