/* Stress of interrupt delivery (lib/task.c, lib/wake.c, lib/token.c): tests/targets/tasks_stress
 * run in child processes (linked with -lmemlimits). Each mode prints "stats name=value ..." and
 * "ok MODE", or FAIL lines naming the invariant that broke (release skipped or run twice, an
 * interrupt lost, a masked allocation refused, code run after an unwinding allocation, a
 * deadlock caught by the watchdog). About 30 s in all. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include "child.h"
#include "memlimits.h"

/* The value of `name=` on the totals line ("stats tasks=..."), or -1. */
static long long stat_value(const char *out, const char *name)
{
    const char *line = strstr(out, "stats tasks=");
    if (line == NULL) return -1;
    char key[64];
    snprintf(key, sizeof key, " %s=", name);
    line += 5; /* from the space before the first name */
    const char *p = strstr(line, key);
    const char *eol = strchr(line, '\n');
    if (p == NULL || (eol != NULL && p > eol)) return -1;
    return strtoll(p + strlen(key), NULL, 10);
}

static ml_child run_stress(const char *const argv_tail[], int timeout_s)
{
    char target[4096];
    snprintf(target, sizeof target, "%s", ml_test_target("tasks_stress"));
    const char *argv[8] = {target};
    for (int i = 0; argv_tail[i] != NULL && i < 6; i++)
        argv[i + 1] = argv_tail[i];
    ml_child c;
    cr_assert_eq(ml_child_run(argv, NULL, 0, NULL, timeout_s, &c), 0, "cannot start %s", target);
    cr_log_info("%s %s:\n%s%s", argv[1], argv[2] ? argv[2] : "", c.out, c.err);
    return c;
}

static void expect_ok(ml_child *c, const char *mode)
{
    char want[64];
    snprintf(want, sizeof want, "ok %s\n", mode);
    cr_expect(c->exited, "%s: killed by signal %d (deadlock?)", mode, c->signal);
    cr_expect_eq(c->status, 0, "%s: exit %d", mode, c->status);
    cr_expect(strstr(c->out, want) != NULL && strstr(c->out, "FAIL") == NULL, "%s: failed checks",
              mode);
}

/* At least 10^4 interrupts delivered across 4 threads using resources and masked sections: the
 * target runs until 12000 were delivered, or 40 s on a machine too busy for that. */
Test(stress, interrupts_with_resources_and_masking, .timeout = 200)
{
    const char *args[] = {"interrupts", "4", "40", "12000", NULL};
    ml_child c = run_stress(args, 120);
    expect_ok(&c, "interrupts");
    long long interrupts = stat_value(c.out, "interrupts");
    long long tasks = stat_value(c.out, "tasks");
    cr_expect_geq(interrupts, 10000, "only %lld interrupts delivered", interrupts);
    cr_expect_eq(interrupts, tasks, "%lld tasks, %lld interrupted", tasks, interrupts);
    cr_expect_eq(stat_value(c.out, "acquired"), stat_value(c.out, "released"));
    cr_expect_gt(stat_value(c.out, "acquired"), 0);
    cr_expect_gt(stat_value(c.out, "st_allocation"), 0);
    cr_expect_gt(stat_value(c.out, "st_token"), 0);
    cr_expect_gt(stat_value(c.out, "st_memory"), 0);
    cr_expect_gt(stat_value(c.out, "signal_sets"), 0, "no token set from a signal handler");
    ml_child_free(&c);
}

/* Two threads and eight, the extremes of the range: 3000 interrupts each. */
Test(stress, interrupts_two_and_eight_threads, .timeout = 200)
{
    const char *two[] = {"interrupts", "2", "20", "3000", NULL};
    ml_child c = run_stress(two, 120);
    expect_ok(&c, "interrupts");
    cr_expect_geq(stat_value(c.out, "interrupts"), 3000);
    ml_child_free(&c);
    const char *eight[] = {"interrupts", "8", "20", "3000", NULL};
    c = run_stress(eight, 120);
    expect_ok(&c, "interrupts");
    cr_expect_geq(stat_value(c.out, "interrupts"), 3000);
    ml_child_free(&c);
}

/* Threads exiting right after their ML_WAKE tasks while their tokens are set concurrently. */
Test(stress, interrupts_racing_thread_exit, .timeout = 200)
{
    const char *args[] = {"thread_exit", "5", NULL};
    ml_child c = run_stress(args, 120);
    expect_ok(&c, "thread_exit");
    cr_expect_gt(stat_value(c.out, "threads_started"), 100);
    cr_expect_gt(stat_value(c.out, "st_token"), 0);
    cr_expect_eq(stat_value(c.out, "acquired"), stat_value(c.out, "released"));
    ml_child_free(&c);
}

/* Tokens destroyed while tasks hold them, and new ones created in their slots. */
Test(stress, token_destruction_while_held, .timeout = 200)
{
    const char *args[] = {"token_destroy", "4", "5", NULL};
    ml_child c = run_stress(args, 120);
    expect_ok(&c, "token_destroy");
    cr_expect_gt(stat_value(c.out, "tokens_destroyed"), 1000);
    cr_expect_gt(stat_value(c.out, "tasks"), 1000);
    cr_expect_eq(stat_value(c.out, "acquired"), stat_value(c.out, "released"));
    ml_child_free(&c);
}

/* In-process (no owned malloc needed): tokens created, set, read and destroyed concurrently by
 * four threads, while a fifth sets and destroys whatever token it finds published, including
 * tokens already destroyed and slots handed out again. Nothing may crash; a token nobody else
 * can reach reads unset when created and after it is destroyed. Under -DMEMLIMITS_TSAN=ON this is
 * the ThreadSanitizer check of token.c's synchronisation (once the engine objects linked into
 * tests are built with the sanitizer). */
#define TOKEN_THREADS 4
static ml_token *token_published[TOKEN_THREADS];
static int token_stop;

static void *token_churn(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < 20000; i++) {
        ml_token *t = ml_token_create();
        if (t == NULL) continue;
        __atomic_store_n(&token_published[id], t, __ATOMIC_RELEASE);
        if (i % 2) ml_token_set(t);
        (void)ml_token_is_set(t);
        __atomic_store_n(&token_published[id], NULL, __ATOMIC_RELEASE);
        ml_token_destroy(t);
    }
    return NULL;
}

static void *token_meddler(void *arg)
{
    (void)arg;
    unsigned r = 1;
    while (!__atomic_load_n(&token_stop, __ATOMIC_ACQUIRE)) {
        r = r * 1103515245u + 12345u;
        ml_token *t = __atomic_load_n(&token_published[(r >> 8) % TOKEN_THREADS], __ATOMIC_ACQUIRE);
        if (t == NULL) continue;
        if ((r >> 4) % 8 == 0)
            ml_token_destroy(t);
        else
            ml_token_set(t);
        (void)ml_token_is_set(t);
    }
    return NULL;
}

Test(stress, tokens_concurrent_in_process)
{
    pthread_t th[TOKEN_THREADS], meddler;
    pthread_create(&meddler, NULL, token_meddler, NULL);
    for (int i = 0; i < TOKEN_THREADS; i++)
        pthread_create(&th[i], NULL, token_churn, (void *)(intptr_t)i);
    for (int i = 0; i < TOKEN_THREADS; i++)
        pthread_join(th[i], NULL);
    __atomic_store_n(&token_stop, 1, __ATOMIC_RELEASE);
    pthread_join(meddler, NULL);
    ml_token *t = ml_token_create();
    cr_assert_not_null(t);
    cr_expect_eq(ml_token_is_set(t), 0, "a new token reads set");
    ml_token_set(t);
    cr_expect_neq(ml_token_is_set(t), 0);
    ml_token_destroy(t);
    cr_expect_eq(ml_token_is_set(t), 0, "a destroyed token reads set");
}
