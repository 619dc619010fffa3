/* glibc's statistics calls and mallopt, preloaded (lib/info.c, README "glibc's statistics and
 * mallopt"): mallinfo2, mallinfo, malloc_info and malloc_stats report memlimits' live heap —
 * left to glibc they describe its unused heap and say zero — and mallopt accepts glibc's
 * parameters as no-ops. Each case runs a target program from tests/targets/info_*.c preloaded
 * in a child process and checks the figures it prints.
 *
 * The accounting bound these tests use: mallinfo2 reconciles every registered thread (it reads
 * their jemalloc counters under the registry lock), so its uordblks is exact for every thread
 * that is not allocating during the call (README "Accounting"). Each target allocates only from
 * threads that are parked or are the caller when it reads, and prints only after measuring, so
 * the expected change of uordblks across its allocations is exactly the sum of their usable
 * sizes: the bound is 0. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "child.h"

#define MIB ((unsigned long long)1 << 20)
/* Seconds after which a child is killed: each run takes well under a second. */
#define HANG_GUARD_S 30

/* Runs target `name` preloaded with one argument (may be NULL) and `env` (may be NULL), and
 * asserts that it exited 0. */
static void run(const char *name, const char *arg, const char *const *env, ml_child *c)
{
    char target[4096];
    snprintf(target, sizeof target, "%s", ml_test_target(name));
    const char *argv[] = {target, arg, NULL};
    cr_assert_eq(ml_child_run(argv, env, 1, NULL, HANG_GUARD_S, c), 0, "cannot start %s", target);
    cr_assert(c->exited && c->status == 0, "%s %s: %s %d\nstdout:\n%s\nstderr:\n%s", name,
              arg ? arg : "", c->exited ? "exited with status" : "killed by signal",
              c->exited ? c->status : c->signal, c->out, c->err);
}

/* The number after "key " at the start of a line of `text`; fails the test if absent. */
static unsigned long long field(const char *text, const char *key)
{
    size_t len = strlen(key);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, key, len) == 0 && line[len] == ' ')
            return strtoull(line + len + 1, NULL, 10);
        line = strchr(line, '\n');
        if (line != NULL) line++;
    }
    cr_assert_fail("no '%s' in output:\n%s", key, text);
    return 0;
}

/* The same for "WHEN_NAME", a field of one mallinfo2 snapshot. */
static unsigned long long snap(const char *text, const char *when, const char *name)
{
    char key[128];
    snprintf(key, sizeof key, "%s_%s", when, name);
    return field(text, key);
}

static const char *const fields[] = {"arena",   "ordblks", "smblks",   "hblks",    "hblkhd",
                                     "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"};
#define NFIELDS (sizeof fields / sizeof fields[0])

Test(info, mallinfo2_uordblks_is_the_exact_live_heap_in_one_thread)
{
    ml_child c;
    run("info_mallinfo", "blocks", NULL, &c);
    unsigned long long usable = field(c.out, "usable");
    unsigned long long base = snap(c.out, "base", "uordblks");
    unsigned long long full = snap(c.out, "full", "uordblks");
    unsigned long long freed = snap(c.out, "freed", "uordblks");
    cr_expect_geq(field(c.out, "blocks"), 1000, "the target should allocate many blocks");
    cr_expect_geq(usable, 32 * MIB);
    cr_expect_eq(full - base, usable,
                 "32 MiB of blocks (usable %llu) moved uordblks by %lld (base %llu, full %llu)",
                 usable, (long long)(full - base), base, full);
    cr_expect_eq(freed, base, "freeing every block must bring uordblks back to %llu: %llu", base,
                 freed);
    ml_child_free(&c);
}

Test(info, mallinfo2_arena_holds_the_live_heap_and_fordblks_the_rest)
{
    ml_child c;
    run("info_mallinfo", "blocks", NULL, &c);
    unsigned long long usable = field(c.out, "usable");
    cr_expect_geq(snap(c.out, "full", "arena"), usable, "the arena must hold the %llu bytes live",
                  usable);
    const char *whens[] = {"base", "full", "freed"};
    for (int i = 0; i < 3; i++) {
        unsigned long long arena = snap(c.out, whens[i], "arena");
        unsigned long long used = snap(c.out, whens[i], "uordblks");
        cr_expect_geq(arena, used, "%s: arena %llu < uordblks %llu", whens[i], arena, used);
        cr_expect_eq(snap(c.out, whens[i], "fordblks"), arena - used, "%s: fordblks", whens[i]);
    }
    /* jemalloc keeps the pages of freed blocks mapped (lazily purged): the arena does not
     * shrink below what the blocks needed. */
    cr_expect_geq(snap(c.out, "freed", "arena"), snap(c.out, "full", "uordblks"));
    ml_child_free(&c);
}

Test(info, mallinfo2_usmblks_is_the_peak_and_glibc_only_fields_are_zero)
{
    ml_child c;
    run("info_mallinfo", "blocks", NULL, &c);
    /* The peak is recorded when the caller's balance is flushed, which mallinfo2 does. */
    unsigned long long full = snap(c.out, "full", "uordblks");
    cr_expect_geq(snap(c.out, "full", "usmblks"), full);
    cr_expect_geq(snap(c.out, "freed", "usmblks"), full, "the peak must outlive the frees");
    const char *zero[] = {"ordblks", "smblks", "hblks", "hblkhd", "fsmblks", "keepcost"};
    for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++)
        cr_expect_eq(snap(c.out, "full", zero[i]), 0, "%s is documented as 0", zero[i]);
    ml_child_free(&c);
}

Test(info, mallinfo2_reconciles_parked_threads_and_cross_thread_frees)
{
    ml_child c;
    run("info_mallinfo", "threads", NULL, &c);
    unsigned long long usable = field(c.out, "usable");
    unsigned long long base = snap(c.out, "base", "uordblks");
    unsigned long long full = snap(c.out, "full", "uordblks");
    unsigned long long freed = snap(c.out, "freed", "uordblks");
    cr_expect_geq(usable, 32 * MIB);
    cr_expect_eq(full - base, usable, "4 threads' blocks (usable %llu) moved uordblks by %lld",
                 usable, (long long)(full - base));
    cr_expect_eq(freed, base, "after cross-thread frees uordblks is %llu, base %llu", freed, base);
    cr_expect_geq(snap(c.out, "full", "arena"), full);
    ml_child_free(&c);
}

Test(info, mallinfo_clamps_each_field_to_int_max)
{
    ml_child c;
    run("info_mallinfo", "clamp", NULL, &c);
    for (size_t i = 0; i < NFIELDS; i++) {
        unsigned long long wide = snap(c.out, "small", fields[i]);
        char key[64];
        snprintf(key, sizeof key, "int_%s", fields[i]);
        cr_expect_eq(snap(c.out, "small", key), wide, "small heap: mallinfo().%s", fields[i]);
        wide = snap(c.out, "huge", fields[i]);
        unsigned long long want = wide > INT_MAX ? INT_MAX : wide;
        cr_expect_eq(snap(c.out, "huge", key), want, "3 GiB live: mallinfo().%s (mallinfo2: %llu)",
                     fields[i], wide);
    }
    cr_expect_geq(snap(c.out, "huge", "uordblks"), 3ull << 30);
    cr_expect_eq(snap(c.out, "huge", "int_uordblks"), INT_MAX);
    cr_expect_eq(snap(c.out, "huge", "int_arena"), INT_MAX);
    ml_child_free(&c);
}

/* A minimal XML reader for malloc_info's output: elements only (no text but whitespace between
 * tags), attributes name="value". Records each element with its parent's name. */
typedef struct xml_elem {
    char name[32], parent[32], type[32];
    unsigned long long size, count;
    int has_size, has_count;
    char version[8], nr[8];
} xml_elem;

static int xml_attr(const char *tag, const char *name, char *out, size_t cap)
{
    char key[40];
    snprintf(key, sizeof key, " %s=\"", name);
    const char *s = strstr(tag, key);
    if (s == NULL) return 0;
    s += strlen(key);
    const char *e = strchr(s, '"');
    if (e == NULL || (size_t)(e - s) >= cap) return 0;
    memcpy(out, s, (size_t)(e - s));
    out[e - s] = '\0';
    return 1;
}

/* Parses `text` into `elems` (at most `cap`); returns their count, or fails the test when the
 * text is not well formed. */
static size_t xml_parse(const char *text, xml_elem *elems, size_t cap)
{
    char stack[8][32];
    int depth = 0, roots = 0;
    size_t n = 0;
    const char *s = text;
    for (;;) {
        while (*s == ' ' || *s == '\n' || *s == '\t')
            s++;
        if (*s == '\0') break;
        cr_assert_eq(*s, '<', "text outside a tag at: %.40s", s);
        const char *end = strchr(s, '>');
        cr_assert_not_null(end, "unterminated tag at: %.40s", s);
        char tag[256];
        size_t len = (size_t)(end - s) + 1;
        cr_assert_lt(len, sizeof tag);
        memcpy(tag, s, len);
        tag[len] = '\0';
        s = end + 1;
        if (tag[1] == '/') {
            cr_assert_gt(depth, 0, "closing tag with nothing open: %s", tag);
            char want[40];
            snprintf(want, sizeof want, "</%s>", stack[depth - 1]);
            cr_assert_str_eq(tag, want, "mismatched closing tag");
            depth--;
            continue;
        }
        int empty = len >= 3 && tag[len - 2] == '/';
        xml_elem *e = &elems[n];
        cr_assert_lt(n, cap, "too many elements");
        memset(e, 0, sizeof *e);
        size_t name_len = strcspn(tag + 1, " />");
        cr_assert(name_len > 0 && name_len < sizeof e->name, "bad tag: %s", tag);
        memcpy(e->name, tag + 1, name_len);
        snprintf(e->parent, sizeof e->parent, "%s", depth > 0 ? stack[depth - 1] : "");
        char num[32];
        if (xml_attr(tag, "size", num, sizeof num))
            e->size = strtoull(num, NULL, 10), e->has_size = 1;
        if (xml_attr(tag, "count", num, sizeof num))
            e->count = strtoull(num, NULL, 10), e->has_count = 1;
        xml_attr(tag, "type", e->type, sizeof e->type);
        xml_attr(tag, "version", e->version, sizeof e->version);
        xml_attr(tag, "nr", e->nr, sizeof e->nr);
        n++;
        if (depth == 0) roots++;
        if (!empty) {
            cr_assert_lt(depth, 8, "nested too deep");
            snprintf(stack[depth++], sizeof stack[0], "%s", e->name);
        }
    }
    cr_assert_eq(depth, 0, "%d elements left open", depth);
    cr_assert_eq(roots, 1, "%d root elements", roots);
    return n;
}

/* The element NAME with type TYPE whose parent is PARENT; fails the test if absent. */
static const xml_elem *xml_find(const xml_elem *elems, size_t n, const char *parent,
                                const char *name, const char *type)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(elems[i].parent, parent) == 0 && strcmp(elems[i].name, name) == 0 &&
            strcmp(elems[i].type, type) == 0)
            return &elems[i];
    cr_assert_fail("no <%s type=\"%s\"> in <%s>", name, type, parent);
    return NULL;
}

Test(info, malloc_info_writes_glibc_shaped_xml_with_the_live_heap_into_an_allocating_stream)
{
    ml_child c;
    run("info_report", "xml", (const char *[]){"MEMLIMITS_HEAP=1G", NULL}, &c);
    char *xml_end = strstr(c.out, "</malloc>\n");
    cr_assert_not_null(xml_end, "no </malloc> in output:\n%s", c.out);
    xml_end += strlen("</malloc>\n");
    char *xml = strndup(c.out, (size_t)(xml_end - c.out));
    static xml_elem elems[64];
    size_t n = xml_parse(xml, elems, 64);
    cr_assert_str_eq(elems[0].name, "malloc");
    cr_expect_str_eq(elems[0].version, "1");
    cr_expect_eq(field(xml_end, "rc"), 0);
    /* glibc's elements: one heap, and the totals of the process. */
    xml_find(elems, n, "malloc", "heap", "");
    xml_find(elems, n, "heap", "sizes", "");
    const char *per_heap[][2] = {{"total", "fast"}, {"total", "rest"},   {"system", "current"},
                                 {"system", "max"}, {"aspace", "total"}, {"aspace", "mprotect"}};
    for (size_t i = 0; i < sizeof per_heap / sizeof per_heap[0]; i++) {
        cr_expect(xml_find(elems, n, "heap", per_heap[i][0], per_heap[i][1])->has_size);
        cr_expect(xml_find(elems, n, "malloc", per_heap[i][0], per_heap[i][1])->has_size);
    }
    const xml_elem *mmap = xml_find(elems, n, "malloc", "total", "mmap");
    cr_expect(mmap->has_count && mmap->count == 0 && mmap->size == 0, "no block is mmapped alone");
    /* memlimits' figures, consistent with glibc's. */
    unsigned long long live = xml_find(elems, n, "memlimits", "heap", "live")->size;
    unsigned long long base = field(xml_end, "base"), usable = field(xml_end, "usable");
    cr_expect_eq(live, base + usable, "live %llu, want base %llu + usable %llu", live, base,
                 usable);
    unsigned long long current = xml_find(elems, n, "malloc", "system", "current")->size;
    cr_expect_geq(current, live);
    cr_expect_eq(xml_find(elems, n, "malloc", "total", "rest")->size, current - live,
                 "free bytes are the system bytes the live heap does not use");
    cr_expect_geq(xml_find(elems, n, "malloc", "system", "max")->size, current);
    cr_expect_geq(xml_find(elems, n, "malloc", "aspace", "total")->size, current);
    cr_expect_geq(xml_find(elems, n, "memlimits", "heap", "peak")->size, live);
    cr_expect_eq(xml_find(elems, n, "memlimits", "limit", "heap")->size, 1ull << 30);
    const xml_elem *allocated = xml_find(elems, n, "memlimits", "allocated", "requested");
    cr_expect_geq(allocated->size, 2048ull * 4096);
    cr_expect_geq(allocated->count, 2048);
    free(xml);
    ml_child_free(&c);
}

Test(info, malloc_info_refuses_options_and_a_null_stream_with_einval)
{
    ml_child c;
    run("info_report", "einval", NULL, &c);
    char want[64];
    snprintf(want, sizeof want, "options1 -1 %d 0\nnull_stream -1 %d 0\n", EINVAL, EINVAL);
    cr_expect_str_eq(c.out, want, "want -1, errno EINVAL and nothing written; got:\n%s", c.out);
    ml_child_free(&c);
}

/* The number after "LABEL = " (malloc_stats' layout) in the part of `text` after `from`. */
static unsigned long long stats_value(const char *text, const char *from, const char *label)
{
    const char *s = strstr(text, from);
    cr_assert_not_null(s, "no '%s' in:\n%s", from, text);
    char key[64];
    snprintf(key, sizeof key, "\n%-16s = ", label);
    s = strstr(s, key);
    cr_assert_not_null(s, "no '%s' after '%s' in:\n%s", label, from, text);
    return strtoull(s + strlen(key), NULL, 10);
}

Test(info, malloc_stats_prints_the_live_heap_and_limits_after_buffered_stderr)
{
    ml_child c;
    run("info_report", "stats", (const char *[]){"MEMLIMITS_HEAP=64M", NULL}, &c);
    unsigned long long usable = field(c.out, "usable");
    cr_assert(strncmp(c.err, "before\nArena 0:\n", 16) == 0,
              "stderr's buffered text must come first, then glibc's layout:\n%s", c.err);
    size_t len = strlen(c.err);
    cr_expect(len >= 6 && strcmp(c.err + len - 6, "after\n") == 0, "stderr:\n%s", c.err);
    unsigned long long in_use = stats_value(c.err, "Arena 0:", "in use bytes");
    unsigned long long system = stats_value(c.err, "Arena 0:", "system bytes");
    cr_expect_geq(in_use, usable, "in use bytes %llu with %llu usable bytes live", in_use, usable);
    cr_expect_geq(system, in_use);
    cr_expect_eq(stats_value(c.err, "Total (incl. mmap):", "in use bytes"), in_use);
    cr_expect_eq(stats_value(c.err, "Total (incl. mmap):", "max mmap regions"), 0);
    cr_expect_eq(stats_value(c.err, "memlimits:", "heap cap"), 64 * MIB);
    cr_expect_eq(stats_value(c.err, "memlimits:", "live heap"), in_use);
    cr_expect_geq(stats_value(c.err, "memlimits:", "peak live heap"), in_use);
    cr_expect_geq(stats_value(c.err, "memlimits:", "allocated bytes"), 2048ull * 4096);
    cr_expect_geq(stats_value(c.err, "memlimits:", "allocations"), 2048);
    cr_expect_not_null(strstr(c.err, "\nalloc budget     =  unlimited\n"), "stderr:\n%s", c.err);
    ml_child_free(&c);
}

Test(info, mallopt_accepts_glibc_parameters_and_refuses_unknown_ones)
{
    ml_child c;
    run("info_mallopt", NULL, NULL, &c);
    /* Every parameter glibc's <malloc.h> names is accepted (a no-op), except M_MXFAST outside
     * glibc's own range 0..160; unknown ones are refused (glibc answers 1 to anything). */
    const char *want = "M_MXFAST 0 1\n"
                       "M_MXFAST 64 1\n"
                       "M_MXFAST 160 1\n"
                       "M_MXFAST 161 0\n"
                       "M_MXFAST -1 0\n"
                       "M_NLBLKS 1 1\n"
                       "M_GRAIN 1 1\n"
                       "M_KEEP 1 1\n"
                       "M_TRIM_THRESHOLD 1048576 1\n"
                       "M_TOP_PAD 65536 1\n"
                       "M_MMAP_THRESHOLD 131072 1\n"
                       "M_MMAP_THRESHOLD -1 1\n"
                       "M_MMAP_MAX 0 1\n"
                       "M_CHECK_ACTION 3 1\n"
                       "M_PERTURB 165 1\n"
                       "M_ARENA_TEST 2 1\n"
                       "M_ARENA_MAX 1 1\n"
                       "M_ARENA_MAX 0 1\n"
                       "999 1 0\n"
                       "-100 1 0\n";
    cr_expect(strncmp(c.out, want, strlen(want)) == 0, "want:\n%sgot:\n%s", want, c.out);
    /* mallopt changed nothing: a 1 MiB block still moves the live heap by its usable size. */
    const char *line = strstr(c.out, "after_mallopt ");
    cr_assert_not_null(line, "%s", c.out);
    long long delta;
    unsigned long long usable;
    cr_assert_eq(sscanf(line, "after_mallopt %lld %llu", &delta, &usable), 2);
    cr_expect_eq((unsigned long long)delta, usable);
    ml_child_free(&c);
}
