/* An unmodified program for heap profiles (test_profile.c): three allocation sites keep known
 * amounts live until exit ("sites"), or one site allocates until the heap cap refuses ("cap").
 * Run preloaded with MEMLIMITS_PROFILE; the sites are exported (-rdynamic) so that reports and
 * jeprof can name them. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "say.h"

void *volatile keep;
void big_site(void);
void medium_site(void);
void small_site(void);
void cap_site(void);

static void **live;
static size_t n_live;

static void hold(void *p)
{
    live[n_live++] = p;
}

/* 40 MiB in 3000-byte blocks: the site that allocated most. */
__attribute__((noinline)) void big_site(void)
{
    for (size_t done = 0; done + 3000 <= (40u << 20); done += 3000)
        hold(malloc(3000));
}

/* 12 MiB in 200-byte blocks. */
__attribute__((noinline)) void medium_site(void)
{
    for (size_t done = 0; done + 200 <= (12u << 20); done += 200)
        hold(malloc(200));
}

/* 6 MiB in 64 KiB blocks. */
__attribute__((noinline)) void small_site(void)
{
    for (int i = 0; i < 96; i++)
        hold(malloc(65536));
}

/* Allocates until the heap cap refuses. */
__attribute__((noinline)) void cap_site(void)
{
    void *p;
    while ((p = malloc(1000)) != NULL)
        hold(p);
}

/* 8 MiB in 4 KiB blocks in an arena of the program's own (jemalloc's API, found at run time):
 * sampled, but not tracked, so missing from the heap profile, which the report must say. */
static int arena_site(void)
{
    int (*ctl)(const char *, void *, size_t *, void *, size_t) =
        (int (*)(const char *, void *, size_t *, void *, size_t))dlsym(RTLD_DEFAULT, "mallctl");
    void *(*mallocx)(size_t, int) = (void *(*)(size_t, int))dlsym(RTLD_DEFAULT, "mallocx");
    unsigned arena;
    size_t len = sizeof arena;
    if (ctl == NULL || mallocx == NULL || ctl("arenas.create", &arena, &len, NULL, 0) != 0)
        return say("no jemalloc API\n"), 1;
    for (int i = 0; i < 2048; i++)
        hold(mallocx(4096, (int)((arena + 1) << 20))); /* MALLOCX_ARENA(arena) */
    say("held %zu blocks\n", n_live);
    return 0;
}

int main(int argc, char **argv)
{
    live = calloc(1u << 20, sizeof *live);
    if (argc > 1 && strcmp(argv[1], "arena") == 0) return arena_site();
    if (argc > 1 && strcmp(argv[1], "cap") == 0) {
        cap_site();
        void *again = malloc(1000); /* refused too: a second firing of the cap */
        say("refused%s\n", again != NULL ? ", then admitted" : " twice");
        return 0;
    }
    big_site();
    if (argc > 2 && strcmp(argv[1], "ondemand") == 0) {
        /* ml_heap_profile_write from the preloaded library: a profile of big_site alone. */
        int (*write_profile)(const char *) =
            (int (*)(const char *))dlsym(RTLD_DEFAULT, "ml_heap_profile_write");
        say("write %d\n", write_profile != NULL ? write_profile(argv[2]) : -2);
        return 0;
    }
    medium_site();
    small_site();
    say("held %zu blocks\n", n_live);
    return 0;
}
