/* The interposed allocation API (preload/malloc.c) and the library's exports: glibc 2.36's
 * semantics checked inside preloaded child processes (tests/targets/api_semantics.c prints one
 * line per check), the exported symbol list, and ml_active() preloaded, linked and in the
 * engine's own unit. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "child.h"
#include "memlimits.h"

/* Seconds after which a child is killed: each check takes milliseconds, so this only turns a
 * hang into a failure. */
#define HANG_GUARD_S 10

/* Runs one check of api_semantics preloaded and expects exactly "ok NAME". */
static void expect_check(const char *name)
{
    char target[4096];
    snprintf(target, sizeof target, "%s", ml_test_target("api_semantics"));
    const char *argv[] = {target, name, NULL};
    ml_child c;
    cr_assert_eq(ml_child_run(argv, NULL, 1, NULL, HANG_GUARD_S, &c), 0, "cannot start %s", target);
    char want[256];
    snprintf(want, sizeof want, "ok %s\n", name);
    cr_expect(c.exited, "%s: killed by signal %d; stdout:\n%s\nstderr:\n%s", name, c.signal, c.out,
              c.err);
    cr_expect_eq(c.status, 0, "%s: %d failures:\n%s%s", name, c.status, c.out, c.err);
    cr_expect_str_eq(c.out, want, "%s: output:\n%s\nstderr:\n%s", name, c.out, c.err);
    ml_child_free(&c);
}

Test(api, active_when_preloaded)
{
    expect_check("active");
}

Test(api, malloc_zero_is_non_null_and_distinct)
{
    expect_check("malloc_zero");
}

Test(api, calloc_overflow_is_enomem)
{
    expect_check("calloc_overflow");
}

Test(api, realloc_null_allocates)
{
    expect_check("realloc_null_allocates");
}

Test(api, realloc_zero_frees_and_returns_null)
{
    expect_check("realloc_zero_frees");
}

Test(api, realloc_huge_is_enomem_and_keeps_the_block)
{
    expect_check("realloc_huge_keeps_block");
}

Test(api, reallocarray_overflow_and_huge_are_enomem)
{
    expect_check("reallocarray");
}

Test(api, aligned_allocators_huge_are_enomem)
{
    expect_check("aligned_huge_enomem");
}

Test(api, unservable_sizes_below_ptrdiff_max_are_enomem)
{
    expect_check("unservable_sizes");
}

Test(api, memalign_bad_alignment_is_einval)
{
    expect_check("memalign_bad_alignment");
}

Test(api, posix_memalign_bad_alignment_leaves_pointer)
{
    expect_check("posix_memalign_bad_alignment");
}

Test(api, posix_memalign_huge_leaves_pointer)
{
    expect_check("posix_memalign_huge_leaves_pointer");
}

Test(api, alignment_is_honoured)
{
    expect_check("alignment_honoured");
}

Test(api, malloc_usable_size_of_null_is_zero)
{
    expect_check("usable_size");
}

Test(api, free_null_is_harmless)
{
    expect_check("free_null");
}

Test(api, free_preserves_errno)
{
    expect_check("free_preserves_errno");
}

Test(api, free_sized_free_aligned_sized_and_cfree_free)
{
    expect_check("free_variants");
}

Test(api, libc_aliases_reach_memlimits)
{
    expect_check("libc_aliases");
}

Test(api, cxx_new_and_delete_reach_memlimits)
{
    expect_check("cxx_new_delete");
}

Test(api, malloc_trim_is_harmless)
{
    expect_check("malloc_trim");
}

/* The names libmemlimits.so must export besides the ml_* client API. */
static const char *const required_exports[] = {
    "malloc",
    "free",
    "calloc",
    "realloc",
    "reallocarray",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "malloc_usable_size",
    "free_sized",
    "free_aligned_sized",
    "cfree",
    "malloc_trim",
    "__libc_malloc",
    "__libc_free",
    "__libc_calloc",
    "__libc_realloc",
    "__libc_memalign",
    "__libc_valloc",
    "__libc_pvalloc",
    "__posix_memalign",
    "pthread_create",
    "mallinfo",
    "mallinfo2",
    "malloc_stats",
    "malloc_info",
    "mallopt",
    "__libc_mallinfo",
    "__libc_mallopt",
    /* C++'s operator new and delete, every standard variant (preload/new.c). */
    "_Znwm",
    "_Znam",
    "_ZnwmRKSt9nothrow_t",
    "_ZnamRKSt9nothrow_t",
    "_ZnwmSt11align_val_t",
    "_ZnamSt11align_val_t",
    "_ZnwmSt11align_val_tRKSt9nothrow_t",
    "_ZnamSt11align_val_tRKSt9nothrow_t",
    "_ZdlPv",
    "_ZdaPv",
    "_ZdlPvm",
    "_ZdaPvm",
    "_ZdlPvRKSt9nothrow_t",
    "_ZdaPvRKSt9nothrow_t",
    "_ZdlPvSt11align_val_t",
    "_ZdaPvSt11align_val_t",
    "_ZdlPvmSt11align_val_t",
    "_ZdaPvmSt11align_val_t",
    "_ZdlPvSt11align_val_tRKSt9nothrow_t",
    "_ZdaPvSt11align_val_tRKSt9nothrow_t",
    /* jemalloc's non-standard API (preload/jemalloc_api.c). */
    "mallocx",
    "rallocx",
    "xallocx",
    "sallocx",
    "dallocx",
    "sdallocx",
    "nallocx",
    "mallctl",
    "mallctlnametomib",
    "mallctlbymib",
    "malloc_stats_print",
};
#define NREQUIRED (sizeof required_exports / sizeof required_exports[0])

/* Client functions that must be exported whatever the header's parse below finds (one line each
 * as the API grows). */
static const char *const required_client_api[] = {
    "ml_is_masked", "ml_task_allocated", "ml_task_remaining",
    "ml_token_fd",  "ml_cond_wait",      "ml_cond_timedwait",
};
#define NCLIENT (sizeof required_client_api / sizeof required_client_api[0])

static int is_required(const char *name)
{
    for (size_t i = 0; i < NREQUIRED; i++)
        if (strcmp(name, required_exports[i]) == 0) return 1;
    return 0;
}

/* Whether `name` is a public client function: ml_ but not the internal ml__ prefix. */
static int is_client_api(const char *name)
{
    return strncmp(name, "ml_", 3) == 0 && name[3] != '_';
}

/* The names of `nm -D --defined-only` output, one per line, in `names` (a copy of the text). */
static size_t exported_names(char *text, char **names, size_t cap)
{
    size_t n = 0;
    for (char *line = strtok(text, "\n"); line != NULL && n < cap; line = strtok(NULL, "\n")) {
        char *name = strrchr(line, ' ');
        names[n++] = name != NULL ? name + 1 : line;
    }
    return n;
}

static int exported(char **names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0) return 1;
    return 0;
}

Test(api, library_exports_exactly_the_allocation_and_client_api)
{
    const char *argv[] = {"/usr/bin/nm", "-D", "--defined-only", ml_test_lib(), NULL};
    ml_child c;
    cr_assert_eq(ml_child_run(argv, NULL, 0, NULL, HANG_GUARD_S, &c), 0);
    cr_assert(c.exited && c.status == 0, "nm failed: %s", c.err);
    static char *names[4096];
    size_t n = exported_names(c.out, names, 4096);
    cr_assert_gt(n, NREQUIRED);
    for (size_t i = 0; i < n; i++) {
        const char *name = names[i];
        cr_expect_null(strchr(name, '@'), "%s: exports must be unversioned", name);
        /* jemalloc's public API is exported (preload/jemalloc_api.c), its internals never. */
        cr_expect(strstr(name, "je_") == NULL && strncmp(name, "mlje", 4) != 0,
                  "jemalloc internal name exported: %s", name);
        cr_expect(is_required(name) || is_client_api(name), "unexpected export: %s", name);
    }
    for (size_t i = 0; i < NREQUIRED; i++)
        cr_expect(exported(names, n, required_exports[i]), "missing export: %s",
                  required_exports[i]);
    for (size_t i = 0; i < NCLIENT; i++)
        cr_expect(exported(names, n, required_client_api[i]), "missing client export: %s",
                  required_client_api[i]);
    /* Every client function the header declares is exported. */
    FILE *h = fopen(ML_TEST_SOURCE_DIR "/include/memlimits.h", "r");
    cr_assert_not_null(h);
    char line[1024];
    int declared = 0;
    while (fgets(line, sizeof line, h) != NULL) {
        if (strncmp(line, "ML_API ", 7) != 0) continue;
        char *paren = strchr(line, '(');
        cr_assert_not_null(paren, "%s", line);
        char *start = paren;
        while (start > line && (start[-1] == '_' || (start[-1] >= 'a' && start[-1] <= 'z') ||
                                (start[-1] >= '0' && start[-1] <= '9')))
            start--;
        *paren = '\0';
        cr_expect(exported(names, n, start), "declared in memlimits.h but not exported: %s", start);
        declared++;
    }
    fclose(h);
    cr_expect_geq(declared, 7, "too few ML_API declarations found in memlimits.h");
    ml_child_free(&c);
}

/* This test binary links the engine's objects without the interposed entry points: memlimits
 * does not own malloc here, and the client API says so. */
Test(api, engine_unit_without_entry_points_is_not_active)
{
    cr_assert_eq(ml_active(), 0);
    ml_set_heap_cap(4096);
    cr_expect_eq(ml_heap_cap(), ML_UNLIMITED, "ml_set_heap_cap must do nothing when inactive");
    void *p = malloc(1 << 20);
    cr_expect_eq(ml_heap_live(), 0, "ml_heap_live is 0 when inactive");
    free(p);
}

Test(api, linked_program_owns_malloc_without_preload)
{
    char target[4096];
    snprintf(target, sizeof target, "%s", ml_test_target("api_linked"));
    const char *argv[] = {target, NULL};
    ml_child c;
    cr_assert_eq(ml_child_run(argv, NULL, 0, NULL, HANG_GUARD_S, &c), 0);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    int active = -1;
    unsigned long long counted = 0, live = 0;
    cr_assert_eq(sscanf(c.out, "active %d\ncounted %llu\nlive %llu", &active, &counted, &live), 3,
                 "output: %s", c.out);
    cr_expect_eq(active, 1, "ml_active() in a program linked with -lmemlimits");
    cr_expect_eq(counted, 12345 + 10 * 1000, "malloc(12345) + calloc(10, 1000) counted %llu",
                 counted);
    cr_expect_geq(live, 4ull << 20, "a live 4 MiB block: live heap grew by %llu", live);
    cr_expect_leq(live, (4ull << 20) + 2 * (64 << 10) + 65536, "live heap grew by %llu", live);
    ml_child_free(&c);
}

/* Runs api_dlopen (not preloaded) with `env` and expects the library loaded, not active and
 * without effect on glibc's malloc. */
static void expect_dlopen_inactive(const char *const *env)
{
    char target[4096];
    snprintf(target, sizeof target, "%s", ml_test_target("api_dlopen"));
    const char *argv[] = {target, ml_test_lib(), NULL};
    ml_child c;
    cr_assert_eq(ml_child_run(argv, env, 0, NULL, HANG_GUARD_S, &c), 0);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s%s", c.status, c.signal, c.out,
              c.err);
    cr_expect_str_eq(c.out, "active 0\ncap 18446744073709551615\nmalloc ok\n",
                     "a dlopened library must not claim malloc or set a cap: %s", c.out);
    ml_child_free(&c);
}

/* The library's initial-exec TLS (about 2.8 KiB, mostly jemalloc's) needs more static TLS room
 * than glibc leaves for dlopen by default; with the room memlimits.h documents, a dlopened
 * library loads and does not claim malloc. */
Test(api, dlopened_library_is_not_active)
{
    const char *env[] = {"GLIBC_TUNABLES=glibc.rtld.optional_static_tls=4096", NULL};
    expect_dlopen_inactive(env);
}

/* Without that room, dlopen fails cleanly with the loader's message: no crash, nothing half
 * loaded. */
Test(api, dlopen_without_static_tls_room_fails_cleanly)
{
    char target[4096];
    snprintf(target, sizeof target, "%s", ml_test_target("api_dlopen"));
    const char *argv[] = {target, ml_test_lib(), NULL};
    ml_child c;
    cr_assert_eq(ml_child_run(argv, NULL, 0, NULL, HANG_GUARD_S, &c), 0);
    cr_assert(c.exited && c.status == 101, "status %d signal %d: %s%s", c.status, c.signal, c.out,
              c.err);
    cr_expect(strstr(c.out, "static TLS") != NULL, "%s", c.out);
    ml_child_free(&c);
}
