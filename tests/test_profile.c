/* Heap profiles of an unmodified program (MEMLIMITS_PROFILE), read by jeprof, the profile reader
 * that Debian's libjemalloc-dev ships; and the report's callstack of the allocation that fired a
 * limit. tests/targets/memprof_heap.c holds known amounts at three sites. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "child.h"

#define HANG_GUARD_S 120

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) return NULL;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Runs memprof_heap `mode` preloaded with a profile written under a fresh directory. */
static void run_heap(const char *mode, const char *const extra[], char *dir, size_t cap,
                     ml_child *c)
{
    snprintf(dir, cap, "/tmp/ml-profile-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char target[4096], profile[600];
    snprintf(target, sizeof target, "%s", ml_test_target("memprof_heap"));
    snprintf(profile, sizeof profile, "MEMLIMITS_PROFILE=%s/heap.%%p", dir);
    const char *env[8] = {profile, "MEMLIMITS_SEED=99", "MEMLIMITS_SAMPLE=16384"};
    for (int i = 0; extra != NULL && extra[i] != NULL; i++)
        env[3 + i] = extra[i];
    const char *argv[] = {target, mode, NULL};
    cr_assert_eq(ml_child_run(argv, env, 1, NULL, HANG_GUARD_S, c), 0);
}

/* The one file of the directory whose name starts with `prefix` (the pid is in the name). */
static void find_file(const char *dir, const char *prefix, const char *suffix, char *out,
                      size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ls %s | grep '^%s[0-9]*%s$'", dir, prefix, suffix);
    FILE *p = popen(cmd, "r");
    char name[256] = "";
    cr_assert(fgets(name, sizeof name, p) != NULL, "no %s*%s in %s", prefix, suffix, dir);
    pclose(p);
    name[strcspn(name, "\n")] = '\0';
    snprintf(out, cap, "%s/%s", dir, name);
}

static char *jeprof(const char *flags, const char *profile)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s %s %s 2>/dev/null", ML_JEPROF, flags,
             ml_test_target("memprof_heap"), profile);
    FILE *p = popen(cmd, "r");
    static char out[1 << 18];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    pclose(p);
    return out;
}

Test(profile, written_at_exit_in_gperftools_format)
{
    char dir[64], path[600];
    ml_child c;
    run_heap("sites", NULL, dir, sizeof dir, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    find_file(dir, "heap.", "", path, sizeof path);
    char *text = slurp(path);
    cr_assert_not_null(text);
    cr_expect(strncmp(text, "heap profile: ", 14) == 0, "header: %.80s", text);
    cr_expect(strstr(text, " @ heap_v2/16384\n") != NULL, "no heap_v2/16384 in %.200s", text);
    cr_expect(strstr(text, "\nMAPPED_LIBRARIES:\n") != NULL);
    cr_expect(strstr(text, "memprof_heap") != NULL, "the maps do not name the program");
    ml_child_free(&c);
}

/* jeprof --text: big_site on top, its estimated live bytes within 10% of the 40 MiB it holds.
 * With a mean gap of 16 KiB, about 2,000 of its 14,000 blocks are sampled: the estimate's
 * relative standard deviation is about 2%, so 10% is five of them. */
Test(profile, jeprof_text_names_the_top_site_within_10_percent)
{
    char dir[64], path[600];
    ml_child c;
    run_heap("sites", NULL, dir, sizeof dir, &c);
    find_file(dir, "heap.", "", path, sizeof path);
    char *out = jeprof("--text", path);
    char *line = strstr(out, "Total:");
    cr_assert_not_null(line, "jeprof --text printed:\n%s", out);
    line = strchr(line, '\n') + 1;
    double flat = 0;
    char name[256] = "";
    cr_assert_eq(sscanf(line, "%lf %*s %*s %*s %*s %255s", &flat, name), 2, "line: %.200s", line);
    cr_expect_str_eq(name, "big_site", "top of jeprof --text:\n%.600s", out);
    double truth = (double)((40u << 20) / 3000 * 3000) / (1 << 20);
    cr_expect(flat > truth * 0.9 && flat < truth * 1.1, "estimated %.1f MB, truth %.1f MB", flat,
              truth);
    ml_child_free(&c);
}

Test(profile, jeprof_collapsed_gives_flame_graph_input)
{
    char dir[64], path[600];
    ml_child c;
    run_heap("sites", NULL, dir, sizeof dir, &c);
    find_file(dir, "heap.", "", path, sizeof path);
    char *out = jeprof("--collapsed", path);
    /* "frame;frame;...;frame weight" lines, the root first and the leaf last (jeprof appends
     * <address> to some frames). */
    int lines = 0, named = 0;
    for (char *l = strtok(out, "\n"); l != NULL; l = strtok(NULL, "\n")) {
        char *space = strrchr(l, ' ');
        cr_expect(space != NULL && atof(space + 1) > 0, "not flame-graph input: %s", l);
        char *site = strstr(l, ";big_site");
        if (site == NULL) site = strstr(l, ";medium_site");
        if (site != NULL && strstr(l, "main") != NULL && strstr(l, "main") < site) named++;
        lines++;
    }
    cr_expect(lines >= 2 && named >= 2, "%d lines, %d with main;...;site", lines, named);
    ml_child_free(&c);
}

/* A heap cap fires: a profile of what held the memory is written (PATH.limit), and the report
 * names the callstack of the allocation that fired it. */
Test(profile, limit_writes_profile_and_report_callstack)
{
    char dir[64], path[600], report[700];
    ml_child c;
    snprintf(report, sizeof report, "MEMLIMITS_REPORT=json:/tmp/ml-profile-report-%d.json",
             (int)getpid());
    const char *extra[] = {"MEMLIMITS_HEAP=32M", "MEMLIMITS_ON_HEAP=exit:3", report, NULL};
    run_heap("cap", extra, dir, sizeof dir, &c);
    cr_expect(c.exited && c.status == 3, "status %d: %s", c.status, c.err);
    find_file(dir, "heap.", ".limit", path, sizeof path);
    char *text = slurp(path);
    cr_assert_not_null(text);
    cr_expect(strncmp(text, "heap profile: ", 14) == 0);
    char *json = slurp(report + strlen("MEMLIMITS_REPORT=json:"));
    cr_assert_not_null(json);
    char *stack = strstr(json, "\"callstack\":[");
    cr_assert_not_null(stack, "no callstack in %s", json);
    cr_expect(strstr(stack, "cap_site") != NULL, "callstack without cap_site: %.600s", stack);
    unlink(report + strlen("MEMLIMITS_REPORT=json:"));
    ml_child_free(&c);
}

/* Without a heap profile the report still names the firing callstack (libgcc's unwinder, which
 * holds no descriptor): with the enomem action the one report is the exit report, written after
 * a second refusal, and it keeps the first firing's callstack. */
Test(profile, report_names_the_firing_callstack_without_a_profile)
{
    char report[700];
    snprintf(report, sizeof report, "MEMLIMITS_REPORT=json:/tmp/ml-firing-report-%d.json",
             (int)getpid());
    const char *path = report + strlen("MEMLIMITS_REPORT=json:");
    unlink(path);
    const char *env[] = {"MEMLIMITS_HEAP=32M", report, NULL};
    const char *argv[] = {ml_test_target("memprof_heap"), "cap", NULL};
    ml_child c;
    cr_assert_eq(ml_child_run(argv, env, 1, NULL, HANG_GUARD_S, &c), 0);
    cr_expect(c.exited && c.status == 0, "status %d: %s", c.status, c.err);
    char *json = slurp(path);
    cr_assert_not_null(json);
    int reports = 0;
    for (char *line = strtok(json, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char *stack = strstr(line, "\"callstack\":[");
        cr_expect_not_null(stack, "a report without the callstack: %.600s", line);
        if (stack != NULL)
            cr_expect(strstr(stack, "cap_site") != NULL, "callstack without cap_site: %.600s",
                      stack);
        reports++;
    }
    cr_expect_eq(reports, 1, "expected the exit report alone");
    unlink(path);
    ml_child_free(&c);
}

/* ml_heap_profile_write on demand: the profile holds what is live at that moment. */
Test(profile, written_on_demand)
{
    char dir[64], path[700], target[4096], profile[600];
    snprintf(dir, sizeof dir, "/tmp/ml-profile-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(target, sizeof target, "%s", ml_test_target("memprof_heap"));
    snprintf(profile, sizeof profile, "MEMLIMITS_PROFILE=%s/exit.%%p", dir);
    snprintf(path, sizeof path, "%s/now", dir);
    const char *env[] = {profile, "MEMLIMITS_SEED=5", "MEMLIMITS_SAMPLE=16384", NULL};
    const char *argv[] = {target, "ondemand", path, NULL};
    ml_child c;
    cr_assert_eq(ml_child_run(argv, env, 1, NULL, HANG_GUARD_S, &c), 0);
    cr_expect_str_eq(c.out, "write 0\n", "%s%s", c.out, c.err);
    char *out = jeprof("--text", path);
    cr_expect(strstr(out, "big_site") != NULL && strstr(out, "medium_site") == NULL,
              "jeprof --text of the on-demand profile:\n%s", out);
    ml_child_free(&c);
}

Test(profile, write_without_profile_is_enoent)
{
    /* In the engine linked alone no heap profile runs. */
    extern int ml_heap_profile_write(const char *path);
    cr_expect_eq(ml_heap_profile_write("/tmp/none"), -1);
}

/* Sampled blocks the heap profile cannot track (here 2048 blocks of 4 KiB in an arena the program
 * made, MALLOCX_ARENA) are never a silent gap: the report counts them. At gap 16384 the 8 MiB
 * carry Binomial(2^23, 2^-14) samples (mean 512, sd 22.6) and each block is sampled with
 * probability 1 - (1 - 2^-14)^4096 = 0.2212 (mean 453 blocks, sd 18.8): 5 sd either side. */
Test(profile, report_counts_the_blocks_the_profile_could_not_track)
{
    char dir[64], report[700], text_report[700];
    snprintf(report, sizeof report, "MEMLIMITS_REPORT=json:/tmp/ml-untracked-%d.json",
             (int)getpid());
    const char *path = report + strlen("MEMLIMITS_REPORT=json:");
    unlink(path);
    const char *extra[] = {report, NULL};
    ml_child c;
    run_heap("arena", extra, dir, sizeof dir, &c);
    cr_expect(c.exited && c.status == 0, "status %d: %s%s", c.status, c.out, c.err);
    char *json = slurp(path);
    cr_assert_not_null(json);
    unsigned long long blocks = 0, samples = 0;
    const char *u = strstr(json, "\"heap_profile_untracked\":{");
    cr_assert_not_null(u, "%s", json);
    cr_assert_eq(sscanf(u, "\"heap_profile_untracked\":{\"blocks\":%llu,\"samples\":%llu", &blocks,
                        &samples),
                 2, "%s", json);
    cr_expect(blocks >= 359 && blocks <= 547, "untracked blocks %llu", blocks);
    cr_expect(samples >= 399 && samples <= 625, "untracked samples %llu", samples);
    cr_expect_geq(samples, blocks);
    unlink(path);
    ml_child_free(&c);

    /* The text report says it in a line of its own. */
    snprintf(text_report, sizeof text_report, "MEMLIMITS_REPORT=/tmp/ml-untracked-%d.txt",
             (int)getpid());
    path = text_report + strlen("MEMLIMITS_REPORT=");
    unlink(path);
    const char *extra_text[] = {text_report, NULL};
    run_heap("arena", extra_text, dir, sizeof dir, &c);
    char *text = slurp(path);
    cr_assert_not_null(text);
    cr_expect(strstr(text, "  heap profile:      ") != NULL &&
                  strstr(text, "sampled blocks") != NULL,
              "%s", text);
    unlink(path);
    ml_child_free(&c);
}
