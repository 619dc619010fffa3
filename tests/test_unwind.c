/* Callstacks (lib/host_unwind.c): targets/memprof_unwind.c takes one callstack at a known site
 * and prints its frames as object+offset; each case runs it under MEMLIMITS_UNWIND=fp, auto and
 * libunwind. libunwind's walk reads every frame's call frame information and is the reference:
 * auto gives exactly its frames, and fp gives a prefix of them (it stops at the first frame
 * without frame pointers), never a frame libunwind does not give. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "child.h"

#define HANG_GUARD_S 60

static void run(const char *target, const char *what, const char *mode, ml_child *c)
{
    char path[4096], env_mode[64];
    snprintf(path, sizeof path, "%s", ml_test_target(target));
    snprintf(env_mode, sizeof env_mode, "MEMLIMITS_UNWIND=%s", mode);
    const char *argv[] = {path, what, NULL};
    const char *env[] = {env_mode, "MEMLIMITS_SEED=1", NULL};
    cr_assert_eq(ml_child_run(argv, env, 0, NULL, HANG_GUARD_S, c), 0, "cannot start %s", path);
    cr_assert(c->exited && c->status == 0, "%s %s, %s: status %d signal %d\n%s%s", target, what,
              mode, c->status, c->signal, c->out, c->err);
}

static unsigned frame_count(const ml_child *c)
{
    const char *at = strstr(c->out, "frames ");
    unsigned n = 0;
    cr_assert_not_null(at, "no frame count in\n%s", c->out);
    sscanf(at, "frames %u", &n);
    return n;
}

/* The frames' lines only (up to "frames N"). */
static size_t frames_text(const ml_child *c)
{
    const char *at = strstr(c->out, "frames ");
    return at ? (size_t)(at - c->out) : 0;
}

/* Runs the three modes; fp must give at least `fp_min` frames. */
static void compare(const char *target, const char *what, unsigned fp_min)
{
    ml_child fp, au, lu;
    run(target, what, "fp", &fp);
    run(target, what, "auto", &au);
    run(target, what, "libunwind", &lu);
    unsigned nf = frame_count(&fp), na = frame_count(&au), nl = frame_count(&lu);
    cr_expect_geq(nf, fp_min, "fp gave %u frames:\n%s", nf, fp.out);
    cr_expect_geq(nl, nf, "libunwind gave fewer frames than fp:\n%s\n%s", lu.out, fp.out);
    cr_expect(frames_text(&fp) <= frames_text(&lu) && memcmp(fp.out, lu.out, frames_text(&fp)) == 0,
              "fp's frames are not libunwind's:\nfp:\n%slibunwind:\n%s", fp.out, lu.out);
    cr_expect(na == nl && frames_text(&au) == frames_text(&lu) &&
                  memcmp(au.out, lu.out, frames_text(&lu)) == 0,
              "auto's frames are not libunwind's:\nauto:\n%slibunwind:\n%s", au.out, lu.out);
    ml_child_free(&fp);
    ml_child_free(&au);
    ml_child_free(&lu);
}

Test(unwind, fp_walk_gives_the_known_chain)
{
    const char *modes[] = {"fp", "auto", "libunwind"};
    for (int i = 0; i < 3; i++) {
        ml_child c;
        run("memprof_unwind_fp", "chain", modes[i], &c);
        cr_expect(strstr(c.out, "ok chain\n") != NULL, "%s:\n%s", modes[i], c.out);
        ml_child_free(&c);
    }
}

/* Every entry point's slow half reaches the walker through frames it can step through by frame
 * pointer (the memlimits frames below the caller's are built with them): the callstack starts at
 * the caller under fp too. */
Test(unwind, every_entry_point_starts_at_its_caller)
{
    const char *modes[] = {"fp", "auto", "libunwind"};
    for (int i = 0; i < 3; i++) {
        ml_child c;
        run("memprof_unwind_fp", "entries", modes[i], &c);
        cr_expect(strstr(c.out, "ok entries\n") != NULL, "%s:\n%s", modes[i], c.out);
        ml_child_free(&c);
    }
}

/* c, b, a, main and main's caller in glibc (a return address in its text, whose frame has no
 * frame pointer: fp stops after it). */
Test(unwind, libunwind_gives_the_same_frames)
{
    compare("memprof_unwind_fp", "chain", 5);
}

/* On a second thread: its stack is its own mapping (the walk's bounds). */
Test(unwind, frames_of_another_thread)
{
    compare("memprof_unwind_fp", "thread", 5);
}

/* compare() is called by glibc's qsort, built without frame pointers: fp gives compare, c and
 * the return address into glibc, and nothing past it; auto goes on with libunwind. */
Test(unwind, frames_through_glibc_are_libunwinds)
{
    compare("memprof_unwind_fp", "qsort", 3);
}

/* Without frame pointers, the walk stops at the first frame (the caller's return address) under
 * fp, and auto hands the rest to libunwind: no frame differs from libunwind's. */
Test(unwind, no_wrong_frame_without_frame_pointers)
{
    compare("memprof_unwind_nofp", "chain", 1);
    compare("memprof_unwind_nofp", "qsort", 1);
}

/* A library loaded after the profile started (the tables are read again at the next walk). */
Test(unwind, library_loaded_after_start_is_walked)
{
    compare("memprof_unwind_fp", "plugin", 4);
}

/* Threads take callstacks while another dlopens and dlcloses a library: the tables are read
 * again inside the allocator, concurrently with walks; no wrong frame, no deadlock. */
Test(unwind, walks_during_dlopen_and_dlclose)
{
    const char *modes[] = {"fp", "auto"};
    for (int i = 0; i < 2; i++) {
        ml_child c;
        run("memprof_unwind_fp", "churn", modes[i], &c);
        cr_expect(strstr(c.out, "ok churn\n") != NULL, "%s:\n%s", modes[i], c.out);
        ml_child_free(&c);
    }
}

Test(unwind, bad_mode_is_an_error)
{
    ml_child c;
    char path[4096];
    snprintf(path, sizeof path, "%s", ml_test_target("memprof_unwind_fp"));
    const char *argv[] = {path, "chain", NULL};
    const char *env[] = {"MEMLIMITS_UNWIND=frame-pointers", NULL};
    cr_assert_eq(ml_child_run(argv, env, 0, NULL, HANG_GUARD_S, &c), 0);
    cr_expect(c.exited && c.status == 125, "status %d signal %d", c.status, c.signal);
    cr_expect(strstr(c.err, "MEMLIMITS_UNWIND='frame-pointers': expected auto, fp or libunwind") !=
                  NULL,
              "stderr: %s", c.err);
    ml_child_free(&c);
}
