/* Target for tests/test_info.c: malloc_info and malloc_stats around known allocations.
 *
 * usage: info_report MODE, MODE one of
 *   xml    allocates 8 MiB in 4 KiB blocks, then writes malloc_info's XML into a memory stream,
 *          which reallocates its buffer while malloc_info writes to it; prints the XML on stdout,
 *          then "base N" (mallinfo2's uordblks before the blocks) and "usable N" (the sum of
 *          their usable sizes);
 *   einval malloc_info with options 1, and with a NULL stream: prints "rc errno written" for
 *          each (written: bytes that reached the stream);
 *   stats  with stderr fully buffered, writes "before" to it, allocates 8 MiB, calls
 *          malloc_stats, writes "after"; prints "usable N" on stdout. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "say.h"

#define BLOCKS 2048
#define BLOCK 4096

static void *blocks[BLOCKS];

static unsigned long long allocate(void)
{
    unsigned long long usable = 0;
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(BLOCK);
        if (blocks[i] == NULL) exit(3);
        usable += malloc_usable_size(blocks[i]);
    }
    return usable;
}

static void release(void)
{
    for (int i = 0; i < BLOCKS; i++)
        free(blocks[i]);
}

static int xml_mode(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len); /* its first buffer is allocated here */
    if (mem == NULL) return 3;
    size_t base = mallinfo2().uordblks;
    unsigned long long usable = allocate();
    int rc = malloc_info(0, mem);
    if (fclose(mem) != 0 || text == NULL) return 3;
    release();
    ssize_t w = write(STDOUT_FILENO, text, len);
    (void)w;
    free(text);
    say("rc %d\nbase %zu\nusable %llu\n", rc, base, usable);
    return 0;
}

static int einval_mode(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    if (mem == NULL) return 3;
    errno = 0;
    int rc = malloc_info(1, mem);
    int err = errno;
    fflush(mem);
    say("options1 %d %d %zu\n", rc, err, len);
    fclose(mem);
    free(text);
    errno = 0;
    rc = malloc_info(0, NULL);
    say("null_stream %d %d 0\n", rc, errno);
    return 0;
}

static int stats_mode(void)
{
    static char buf[1 << 16];
    setvbuf(stderr, buf, _IOFBF, sizeof buf);
    fputs("before\n", stderr); /* stays in stdio's buffer until malloc_stats flushes it */
    unsigned long long usable = allocate();
    malloc_stats();
    release();
    fputs("after\n", stderr);
    fflush(stderr);
    say("usable %llu\n", usable);
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "xml") == 0) return xml_mode();
    if (strcmp(mode, "einval") == 0) return einval_mode();
    if (strcmp(mode, "stats") == 0) return stats_mode();
    say("usage: info_report xml|einval|stats\n");
    return 2;
}
