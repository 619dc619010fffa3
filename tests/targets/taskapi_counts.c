/* Target for tests/test_taskapi.c: ml_is_masked (outside and inside tasks, in resources and
 * cleanups, from a signal handler) and a task's own counts, ml_task_allocated and
 * ml_task_remaining (exact, nested, refused and masked allocations, from signal handlers).
 * Linked with -lmemlimits, built with -fno-builtin; `taskapi_counts NAME` runs one scenario
 * (tasks_common.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "tasks_common.h"

/* ---------------------------------------------------------------------------------------------
 * ml_is_masked. */

/* The mask depth's rise and fall, where the caller is. */
static void expect_mask_nesting(const char *where)
{
    EXPECT(!ml_is_masked(), "%s: masked before ml_mask", where);
    ml_mask();
    EXPECT(ml_is_masked(), "%s: not masked after ml_mask", where);
    ml_mask();
    EXPECT(ml_is_masked(), "%s: not masked at depth 2", where);
    ml_unmask();
    EXPECT(ml_is_masked(), "%s: not masked at depth 1", where);
    ml_unmask();
    EXPECT(!ml_is_masked(), "%s: masked after the outermost ml_unmask", where);
    ml_unmask(); /* without ml_mask: no effect */
    EXPECT(!ml_is_masked(), "%s: masked after an extra ml_unmask", where);
    ml_mask();
    EXPECT(ml_is_masked(), "%s: an extra ml_unmask made the next ml_mask count less", where);
    ml_unmask();
}

static int masked_inside;

static void task_mask_nesting(void *arg)
{
    (void)arg;
    expect_mask_nesting("in a task");
}

static void task_record_masked(void *arg)
{
    (void)arg;
    masked_inside = ml_is_masked();
}

/* Another thread, masked and in a task with allocations, while this one looks. */
static int other_ready, other_release;

static void other_task(void *arg)
{
    (void)arg;
    void *p = malloc(5000);
    __atomic_store_n(&other_ready, 1, __ATOMIC_RELEASE);
    wait_flag(&other_release, 10);
    free(p);
}

static void *other_masked_thread(void *arg)
{
    (void)arg;
    ml_mask();
    ml_limit_allocations(100000, other_task, NULL, NULL);
    ml_unmask();
    return NULL;
}

static void is_masked_follows_mask_and_unmask(void)
{
    /* per thread: another thread's mask, task and counts do not show here */
    pthread_t th;
    other_ready = other_release = 0;
    pthread_create(&th, NULL, other_masked_thread, NULL);
    EXPECT(wait_flag(&other_ready, 10), "the other thread did not start");
    EXPECT(!ml_is_masked(), "another thread's mask shows here");
    EXPECT(ml_task_allocated() == 0 && ml_task_remaining() == ML_UNLIMITED,
           "another thread's task shows here: %llu, %llu", (unsigned long long)ml_task_allocated(),
           (unsigned long long)ml_task_remaining());
    __atomic_store_n(&other_release, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);

    expect_mask_nesting("outside tasks");
    EXPECT_STATUS(ml_limit_allocations(1 * MIB, task_mask_nesting, NULL, NULL), ML_OK);

    /* a task started masked runs masked, and the mask depth is what it was afterwards */
    ml_mask();
    masked_inside = 0;
    EXPECT_STATUS(ml_limit_allocations(1 * MIB, task_record_masked, NULL, NULL), ML_OK);
    EXPECT(masked_inside, "a task started while masked ran unmasked");
    EXPECT(ml_is_masked(), "ml_run unmasked its caller");
    ml_unmask();
    EXPECT(!ml_is_masked(), "still masked");
    masked_inside = 1;
    EXPECT_STATUS(ml_limit_allocations(1 * MIB, task_record_masked, NULL, NULL), ML_OK);
    EXPECT(!masked_inside, "a task started unmasked ran masked");
}

/* Resources and cleanups: acquire and release masked, scope as its caller. */
static int acquire_masked = -1, scope_masked = -1, release_masked = -1, release_runs;
static int cleanup_masked = -1, cleanup_runs;

static int acquire_rec(void *arg, void **resource)
{
    *resource = arg;
    acquire_masked = ml_is_masked();
    return 0;
}

static void release_rec(void *resource)
{
    (void)resource;
    release_masked = ml_is_masked();
    release_runs++;
}

static int scope_rec(void *resource, void *ctx)
{
    (void)resource;
    scope_masked = ml_is_masked();
    if (ctx != NULL) { /* unwind out of the scope: an allocation past the task's limit */
        void *p = malloc(4096);
        free(p);
    }
    return 7;
}

static void cleanup_rec_masked(void *arg)
{
    (void)arg;
    cleanup_masked = ml_is_masked();
    cleanup_runs++;
}

static void task_resource(void *arg)
{
    ml_with_resource(acquire_rec, NULL, release_rec, scope_rec, arg);
}

static void task_cleanup_unwound(void *arg)
{
    (void)arg;
    ML_CLEANUP_PUSH(cleanup_rec_masked, NULL);
    void *p = malloc(4096); /* past the limit: unwinds */
    free(p);
    ML_CLEANUP_POP(0);
}

static void reset_recs(void)
{
    acquire_masked = scope_masked = release_masked = cleanup_masked = -1;
    release_runs = cleanup_runs = 0;
}

static void is_masked_in_resources_and_cleanups(void)
{
    /* outside tasks, and in a task that returns */
    reset_recs();
    EXPECT(ml_with_resource(acquire_rec, NULL, release_rec, scope_rec, NULL) == 7, "scope's value");
    EXPECT(acquire_masked == 1 && scope_masked == 0 && release_masked == 1,
           "outside tasks: acquire %d scope %d release %d", acquire_masked, scope_masked,
           release_masked);
    reset_recs();
    EXPECT_STATUS(ml_limit_allocations(1 * MIB, task_resource, NULL, NULL), ML_OK);
    EXPECT(acquire_masked == 1 && scope_masked == 0 && release_masked == 1 && release_runs == 1,
           "in a task: acquire %d scope %d release %d (%d runs)", acquire_masked, scope_masked,
           release_masked, release_runs);

    /* the scope runs with its caller's mask */
    reset_recs();
    ml_mask();
    ml_with_resource(acquire_rec, NULL, release_rec, scope_rec, NULL);
    ml_unmask();
    EXPECT(scope_masked == 1, "a scope entered masked ran unmasked");

    /* release and cleanups run by an unwind */
    reset_recs();
    ml_limits limits = {1000, 0, NULL, ML_UNWIND};
    EXPECT_STATUS(ml_run(&limits, task_resource, &limits, NULL), ML_ALLOCATION_LIMIT);
    EXPECT(release_runs == 1 && release_masked == 1, "release on unwind: %d runs, masked %d",
           release_runs, release_masked);
    reset_recs();
    EXPECT_STATUS(ml_run(&limits, task_cleanup_unwound, NULL, NULL), ML_ALLOCATION_LIMIT);
    EXPECT(cleanup_runs == 1 && cleanup_masked == 1, "cleanup on unwind: %d runs, masked %d",
           cleanup_runs, cleanup_masked);
    EXPECT(!ml_is_masked(), "masked after an unwound task returned");

    /* ML_CLEANUP_POP(1) runs the cleanup masked; outside tasks too */
    reset_recs();
    ML_CLEANUP_PUSH(cleanup_rec_masked, NULL);
    EXPECT(!ml_is_masked(), "masked between push and pop");
    ML_CLEANUP_POP(1);
    EXPECT(cleanup_runs == 1 && cleanup_masked == 1, "ML_CLEANUP_POP(1): %d runs, masked %d",
           cleanup_runs, cleanup_masked);
    EXPECT(!ml_is_masked(), "masked after ML_CLEANUP_POP(1)");
}

/* From a signal handler: what the interrupted code was. */
static volatile sig_atomic_t handler_masked = -1;

static void on_usr1_masked(int sig)
{
    (void)sig;
    handler_masked = ml_is_masked();
}

static void task_raise_both(void *arg)
{
    int *seen = arg;
    raise(SIGUSR1);
    seen[0] = handler_masked;
    ml_mask();
    raise(SIGUSR1);
    seen[1] = handler_masked;
    ml_unmask();
}

static void is_masked_from_signal_handler(void)
{
    set_handler(SIGUSR1, on_usr1_masked, 0);
    raise(SIGUSR1);
    EXPECT(handler_masked == 0, "handler over unmasked code: %d", (int)handler_masked);
    ml_mask();
    raise(SIGUSR1);
    EXPECT(handler_masked == 1, "handler over masked code: %d", (int)handler_masked);
    ml_unmask();
    int seen[2] = {-1, -1};
    EXPECT_STATUS(ml_limit_allocations(1 * MIB, task_raise_both, seen, NULL), ML_OK);
    EXPECT(seen[0] == 0 && seen[1] == 1, "in a task: unmasked %d, masked %d", seen[0], seen[1]);
    signal(SIGUSR1, SIG_DFL);
}

/* ---------------------------------------------------------------------------------------------
 * ml_task_allocated and ml_task_remaining. */

typedef struct counts {
    uint64_t limit;
    uint64_t at_start, after_malloc, after_calloc, after_realloc, after_zero, after_free;
    uint64_t thread_delta, last;
    uint64_t remaining_start, remaining_after;
    int all_ok;
} counts;

static void task_counts(void *arg)
{
    counts *c = arg;
    uint64_t thread_start = ml_thread_allocated();
    c->at_start = ml_task_allocated();
    c->remaining_start = ml_task_remaining();
    char *p = malloc(1000);
    c->after_malloc = ml_task_allocated();
    char *q = calloc(10, 30);
    c->after_calloc = ml_task_allocated();
    p = realloc(p, 5000);
    c->after_realloc = ml_task_allocated();
    void *z = malloc(0);
    c->after_zero = ml_task_allocated();
    free(p);
    free(q);
    free(z);
    c->after_free = ml_task_allocated();
    c->remaining_after = ml_task_remaining();
    c->thread_delta = ml_thread_allocated() - thread_start;
    c->last = ml_task_allocated();
    c->all_ok = p != NULL && q != NULL;
}

static void task_allocated_counts_exactly(void)
{
    EXPECT_U64(ml_task_allocated(), 0); /* outside tasks */
    counts c = {0};
    uint64_t allocated = 0;
    EXPECT_STATUS(ml_run(&(ml_limits){0, 0, NULL, 0}, task_counts, &c, &allocated), ML_OK);
    EXPECT(c.all_ok, "an allocation failed");
    EXPECT_U64(c.at_start, 0);
    EXPECT_U64(c.after_malloc, 1000);
    EXPECT_U64(c.after_calloc, 1300);   /* count times size */
    EXPECT_U64(c.after_realloc, 6300);  /* realloc counts its new size */
    EXPECT_U64(c.after_zero, 6300);     /* a zero-byte request counts 0 */
    EXPECT_U64(c.after_free, 6300);     /* frees do not count */
    EXPECT_U64(c.last, c.thread_delta); /* counted as ml_thread_allocated counts */
    EXPECT_U64(allocated, c.last);      /* what ml_run then stores */
    EXPECT_U64(ml_task_allocated(), 0); /* outside again */
}

/* Nested: an inner task counts from its own start; the outer's count includes the inner's;
 * refused allocations are not counted, masked ones are. */
typedef struct nestc {
    uint64_t inner_limit;
    uint64_t outer_before, inner_start, inner_after, inner_run, outer_after;
    uint64_t inner_refused_seen, masked_seen;
    ml_status inner_status;
} nestc;

static void task_inner_counts(void *arg)
{
    nestc *n = arg;
    n->inner_start = ml_task_allocated();
    void *a = malloc(300);
    void *b = malloc(n->inner_limit); /* past the inner limit: refused, not counted */
    n->inner_refused_seen = ml_task_allocated();
    ml_mask();
    void *c = malloc(700); /* masked: admitted past the limit, and counted */
    ml_unmask();
    n->masked_seen = ml_task_allocated();
    n->inner_after = ml_task_allocated();
    free(a);
    free(b);
    free(c);
}

static void task_outer_counts(void *arg)
{
    nestc *n = arg;
    void *p = malloc(2000);
    n->outer_before = ml_task_allocated();
    n->inner_status = ml_limit_allocations(n->inner_limit, task_inner_counts, n, &n->inner_run);
    n->outer_after = ml_task_allocated();
    free(p);
}

static void task_allocated_nested_refused_and_masked(void)
{
    nestc n = {.inner_limit = 500};
    uint64_t allocated = 0;
    EXPECT_STATUS(ml_limit_allocations(1 * MIB, task_outer_counts, &n, &allocated), ML_OK);
    EXPECT_STATUS(n.inner_status, ML_ALLOCATION_LIMIT);
    EXPECT_U64(n.outer_before, 2000);
    EXPECT_U64(n.inner_start, 0);
    EXPECT_U64(n.inner_refused_seen, 300);
    EXPECT_U64(n.masked_seen, 1000);
    EXPECT_U64(n.inner_run, n.inner_after);
    EXPECT_U64(n.outer_after, 3000);
    EXPECT_U64(allocated, 3000);
}

/* The remaining budget: the limit minus the count, an allocation of exactly that size admitted,
 * one byte more refused; 0 past the limit; ML_UNLIMITED without a limit. */
typedef struct rem {
    uint64_t at_start, after_100, before_exact, after_exact, after_masked;
    int exact_ok, one_more_refused, one_more_err;
    uint64_t sum_violations, steps;
} rem;

static void task_remaining(void *arg)
{
    rem *r = arg;
    uint64_t limit = ml_task_remaining();
    r->at_start = limit;
    void *a = malloc(100);
    r->after_100 = ml_task_remaining();
    /* allocated + remaining == limit along a sequence of sizes */
    static void *keep[64];
    for (int i = 0; i < 64; i++) {
        keep[i] = malloc((size_t)(i * 37 % 200));
        r->steps++;
        if (ml_task_allocated() + ml_task_remaining() != limit) r->sum_violations++;
    }
    r->before_exact = ml_task_remaining();
    void *b = malloc(r->before_exact); /* exactly what is left */
    r->exact_ok = b != NULL;
    r->after_exact = ml_task_remaining();
    errno = 0;
    void *c = malloc(1); /* one byte more */
    r->one_more_refused = c == NULL;
    r->one_more_err = errno;
    ml_mask();
    void *d = malloc(10); /* masked, past the limit */
    ml_unmask();
    r->after_masked = ml_task_remaining();
    for (int i = 0; i < 64; i++)
        free(keep[i]);
    free(a);
    free(b);
    free(c);
    free(d);
}

static void task_remaining_is_limit_minus_allocated(void)
{
    EXPECT_U64(ml_task_remaining(), ML_UNLIMITED); /* outside tasks */
    rem r = {0};
    uint64_t allocated = 0;
    EXPECT_STATUS(ml_limit_allocations(50000, task_remaining, &r, &allocated), ML_ALLOCATION_LIMIT);
    EXPECT_U64(r.at_start, 50000);
    EXPECT_U64(r.after_100, 49900);
    EXPECT(r.sum_violations == 0, "allocated + remaining != limit at %llu of %llu steps",
           (unsigned long long)r.sum_violations, (unsigned long long)r.steps);
    EXPECT(r.exact_ok, "an allocation of exactly the remaining %llu bytes was refused",
           (unsigned long long)r.before_exact);
    EXPECT_U64(r.after_exact, 0);
    EXPECT(r.one_more_refused && r.one_more_err == ENOMEM, "one byte more: refused %d errno %d",
           r.one_more_refused, r.one_more_err);
    EXPECT_U64(r.after_masked, 0); /* a masked allocation took the count past the limit */
    EXPECT_U64(allocated, 50010);
}

/* No allocation limit: ML_UNLIMITED, also for a limit of ML_UNLIMITED, and a task's count. */
static uint64_t seen_remaining, seen_allocated;

static void task_see(void *arg)
{
    (void)arg;
    void *p = malloc(123);
    seen_remaining = ml_task_remaining();
    seen_allocated = ml_task_allocated();
    free(p);
}

/* A pending interrupt of another kind leaves the budget arithmetic alone. */
static ml_token *pending_token;

static void task_token_then_remaining(void *arg)
{
    (void)arg;
    void *p = malloc(100);
    ml_token_set(pending_token);
    seen_remaining = ml_task_remaining();
    seen_allocated = ml_task_allocated();
    free(p);
}

static void task_counts_without_allocation_limit(void)
{
    pending_token = ml_token_create();
    ml_limits with_token = {1000, 0, pending_token, 0};
    EXPECT_STATUS(ml_run(&with_token, task_token_then_remaining, NULL, NULL), ML_TOKEN);
    EXPECT(seen_remaining == 900 && seen_allocated == 100,
           "token set: remaining %llu allocated %llu", (unsigned long long)seen_remaining,
           (unsigned long long)seen_allocated);
    ml_token_destroy(pending_token);

    ml_token *tok = ml_token_create();
    ml_limits limits[] = {{0, 0, NULL, 0}, {ML_UNLIMITED, 0, NULL, 0}, {0, 1, tok, 0}};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        seen_remaining = seen_allocated = 0;
        EXPECT_STATUS(ml_run(&limits[i], task_see, NULL, NULL), ML_OK);
        EXPECT(seen_remaining == ML_UNLIMITED, "limits %zu: remaining %llu", i,
               (unsigned long long)seen_remaining);
        EXPECT(seen_allocated == 123, "limits %zu: allocated %llu", i,
               (unsigned long long)seen_allocated);
    }
    ml_token_destroy(tok);
}

/* Nested: the tightest of the task's and its enclosing tasks' budgets. */
typedef struct nestr {
    uint64_t inner_limit;
    uint64_t inner_start, inner_after;
    uint64_t outer_after;
} nestr;

static void task_inner_remaining(void *arg)
{
    nestr *n = arg;
    n->inner_start = ml_task_remaining();
    void *p = malloc(1000);
    n->inner_after = ml_task_remaining();
    free(p);
}

static void task_outer_remaining(void *arg)
{
    nestr *n = arg;
    void *p = malloc(3000); /* outer: 10000 - 3000 = 7000 left */
    ml_limits inner = {n->inner_limit, 0, NULL, 0};
    ml_run(&inner, task_inner_remaining, n, NULL);
    n->outer_after = ml_task_remaining();
    free(p);
}

static void task_remaining_nested_is_tightest(void)
{
    struct {
        uint64_t inner_limit, inner_start, inner_after;
    } cases[] = {
        {100000, 7000, 6000}, /* the outer's is tighter */
        {500, 500, 500},      /* the inner's is tighter; its 1000 bytes are refused */
        {0, 7000, 6000},      /* the inner has none: the outer's */
        {7000, 7000, 6000},   /* equal */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nestr n = {.inner_limit = cases[i].inner_limit};
        ml_limit_allocations(10000, task_outer_remaining, &n, NULL);
        EXPECT(n.inner_start == cases[i].inner_start && n.inner_after == cases[i].inner_after,
               "inner limit %llu: remaining %llu at start, %llu after 1000 bytes",
               (unsigned long long)cases[i].inner_limit, (unsigned long long)n.inner_start,
               (unsigned long long)n.inner_after);
        uint64_t outer = 7000 - (cases[i].inner_limit == 500 ? 0 : 1000);
        EXPECT(n.outer_after == outer, "inner limit %llu: the outer has %llu left, expected %llu",
               (unsigned long long)cases[i].inner_limit, (unsigned long long)n.outer_after,
               (unsigned long long)outer);
    }
    /* an outer task without a limit, an inner one with: the inner's */
    nestr n = {.inner_limit = 2500};
    ml_limits outer = {0, 0, NULL, 0};
    ml_run(&outer, task_outer_remaining, &n, NULL);
    EXPECT(n.inner_start == 2500 && n.inner_after == 1500 && n.outer_after == ML_UNLIMITED,
           "outer unlimited: inner %llu then %llu, outer %llu", (unsigned long long)n.inner_start,
           (unsigned long long)n.inner_after, (unsigned long long)n.outer_after);
}

/* From signal handlers. raise() runs the handler at a known point: the counts are exact there.
 * A timer storm lands anywhere, also inside allocations: every value is still a count the task
 * really had at some point (between its count at the task's start and at its end), never a torn
 * read. */
static volatile uint64_t handler_allocated, handler_remaining;

static void on_usr1_counts(int sig)
{
    (void)sig;
    handler_allocated = ml_task_allocated();
    handler_remaining = ml_task_remaining();
}

#define STORM_SAMPLES 4096
static uint64_t storm_allocated[STORM_SAMPLES], storm_remaining[STORM_SAMPLES];
static volatile int storm_n;

static void on_alarm_counts(int sig)
{
    (void)sig;
    int i = storm_n;
    if (i >= STORM_SAMPLES) return;
    storm_allocated[i] = ml_task_allocated();
    storm_remaining[i] = ml_task_remaining();
    storm_n = i + 1;
}

typedef struct hrec {
    uint64_t allocated_in_handler, remaining_in_handler, final;
    int raised_ok;
} hrec;

static void task_raise_counts(void *arg)
{
    hrec *h = arg;
    void *p = malloc(777);
    raise(SIGUSR1);
    h->allocated_in_handler = handler_allocated;
    h->remaining_in_handler = handler_remaining;
    free(p);
    /* the storm: allocate until 20 MB are counted, with the timer firing */
    for (int i = 0; ml_task_allocated() < 20000000; i++) {
        void *q = malloc((size_t)(16 + i % 4000));
        free(q);
    }
    h->final = ml_task_allocated();
}

static void task_counts_from_signal_handlers(void)
{
    set_handler(SIGUSR1, on_usr1_counts, 0);
    set_handler(SIGALRM, on_alarm_counts, SA_RESTART);
    struct itimerval every = {{0, 200}, {0, 200}};
    hrec h = {0};
    storm_n = 0;
    setitimer(ITIMER_REAL, &every, NULL);
    ml_status st = ml_limit_allocations(30000000, task_raise_counts, &h, NULL);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    EXPECT_STATUS(st, ML_OK);
    EXPECT_U64(h.allocated_in_handler, 777);
    EXPECT_U64(h.remaining_in_handler, 30000000 - 777);
    int n = storm_n, bad = 0;
    for (int i = 0; i < n; i++)
        if (storm_allocated[i] > h.final || storm_remaining[i] > 30000000 ||
            storm_remaining[i] < 30000000 - h.final) {
            if (bad++ < 5)
                EXPECT(0, "sample %d: allocated %llu remaining %llu (final %llu)", i,
                       (unsigned long long)storm_allocated[i],
                       (unsigned long long)storm_remaining[i], (unsigned long long)h.final);
        }
    say("info storm_samples %d\n", n);
    signal(SIGUSR1, SIG_DFL);
    signal(SIGALRM, SIG_IGN);
}

static const scenario scenarios[] = {
    SCENARIO(is_masked_follows_mask_and_unmask),
    SCENARIO(is_masked_in_resources_and_cleanups),
    SCENARIO(is_masked_from_signal_handler),
    SCENARIO(task_allocated_counts_exactly),
    SCENARIO(task_allocated_nested_refused_and_masked),
    SCENARIO(task_remaining_is_limit_minus_allocated),
    SCENARIO(task_counts_without_allocation_limit),
    SCENARIO(task_remaining_nested_is_tightest),
    SCENARIO(task_counts_from_signal_handlers),
};

SCENARIOS_MAIN(scenarios)
