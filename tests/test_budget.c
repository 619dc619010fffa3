/* Leases of the allocation budget (lib/budget.c): how much a lease takes from the pool, when an
 * extension is refused, what a release gives back, and that concurrent extensions never lease
 * more than the budget. Threads are zero-initialised ml_thread structs (thread.h), never
 * registered: budget.c only touches their lease_left. Criterion runs each test in a fresh
 * process, so the pool starts unset in each. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

#include "budget.h"

#define MIB ((uint64_t)1 << 20)

/* The pool holds exactly `bytes`: an extension by bytes + 1 is refused and one by `bytes` is
 * granted exactly (nothing is left to top it up with). The bytes go back afterwards. */
static void expect_pool(uint64_t bytes)
{
    ml_thread probe;
    memset(&probe, 0, sizeof probe);
    cr_assert_eq(ml__budget_extend(&probe, bytes + 1), 0, "the pool holds more than %lu", bytes);
    cr_assert_eq(probe.lease_left, 0, "a refused extension leased something");
    cr_assert_eq(ml__budget_extend(&probe, bytes), 1, "the pool holds less than %lu", bytes);
    cr_assert_eq(probe.lease_left, bytes);
    ml__budget_release(&probe);
}

Test(budget, lease_tops_up_by_ML_LEASE_BYTES_when_the_pool_is_large)
{
    ml_thread t;
    memset(&t, 0, sizeof t);
    ml__budget_set((uint64_t)1 << 30);
    cr_assert_eq(ml__budget_total(), (uint64_t)1 << 30);
    cr_assert_eq(ml__budget_extend(&t, 100), 1);
    cr_assert_eq(t.lease_left, 100 + ML_LEASE_BYTES);
    expect_pool(((uint64_t)1 << 30) - 100 - ML_LEASE_BYTES);
}

Test(budget, lease_tops_up_by_at_most_a_sixteenth_of_the_rest)
{
    ml_thread t;
    memset(&t, 0, sizeof t);
    ml__budget_set(16 * 1000 + 100);
    cr_assert_eq(ml__budget_extend(&t, 100), 1);
    cr_assert_eq(t.lease_left, 100 + 1000);
    expect_pool(15 * 1000);
}

Test(budget, extension_adds_to_what_the_thread_holds)
{
    ml_thread t;
    memset(&t, 0, sizeof t);
    t.lease_left = 7; /* the unspent rest of an earlier lease */
    ml__budget_set(16 * 64);
    cr_assert_eq(ml__budget_extend(&t, 64), 1);
    cr_assert_eq(t.lease_left, 7 + 64 + (16 * 64 - 64) / 16);
}

Test(budget, every_lease_respects_both_bounds_until_the_pool_is_empty)
{
    /* A model of the pool follows the leases: each takes `need` plus a top-up of at most
     * ML_LEASE_BYTES and at most 1/16 of what the pool holds beyond `need`; an extension is
     * refused exactly when the pool holds less than `need`. The needs come from a fixed-seed
     * LCG: mostly up to 64 KiB, every eighth up to 3 MiB (more than a lease); once refusals
     * start, up to one more than the pool holds, until it is empty. */
    const uint64_t budget = 100 * MIB + 12345;
    uint64_t pool = budget, x = 42, refusals = 0, full_topups = 0, sixteenth_topups = 0;
    ml_thread t;
    memset(&t, 0, sizeof t);
    ml__budget_set(budget);
    for (int i = 0; pool > 0; i++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        uint64_t range = i % 8 == 0 ? 3 * MIB : 64 << 10;
        if (refusals > 0) range = pool + 1;
        uint64_t need = 1 + (x >> 33) % range;
        uint64_t before = t.lease_left;
        int ok = ml__budget_extend(&t, need);
        cr_assert_eq(ok, pool >= need, "need %lu with %lu in the pool: %d", need, pool, ok);
        if (!ok) {
            cr_assert_eq(t.lease_left, before, "a refused extension changed the lease");
            refusals++;
            continue;
        }
        uint64_t topup = t.lease_left - before - need;
        cr_assert_leq(topup, ML_LEASE_BYTES, "top-up %lu", topup);
        cr_assert_leq(topup, (pool - need) / 16, "top-up %lu of %lu", topup, pool - need);
        full_topups += topup == ML_LEASE_BYTES;
        sixteenth_topups += topup == (pool - need) / 16 && topup < ML_LEASE_BYTES;
        pool -= need + topup;
        t.lease_left = 0; /* spent */
    }
    /* Both bounds were reached, and some extensions refused: the test saw every case. */
    cr_assert_gt(full_topups, 0);
    cr_assert_gt(sixteenth_topups, 0);
    cr_assert_gt(refusals, 0);
    expect_pool(0);
}

Test(budget, extension_is_refused_exactly_when_the_pool_cannot_cover_need)
{
    ml_thread a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    ml__budget_set(1000);
    cr_assert_eq(ml__budget_extend(&a, 1001), 0);
    cr_assert_eq(a.lease_left, 0);
    cr_assert_eq(ml__budget_extend(&a, 995), 1); /* 5 left: a top-up of 5/16 rounds to 0 */
    cr_assert_eq(a.lease_left, 995);
    cr_assert_eq(ml__budget_extend(&b, 6), 0);
    cr_assert_eq(b.lease_left, 0);
    cr_assert_eq(ml__budget_extend(&b, 5), 1);
    cr_assert_eq(b.lease_left, 5);
    cr_assert_eq(ml__budget_extend(&b, 1), 0);
    cr_assert_eq(b.lease_left, 5);
}

Test(budget, release_returns_the_unspent_lease_to_the_pool)
{
    const uint64_t budget = (uint64_t)1 << 30;
    ml_thread t;
    memset(&t, 0, sizeof t);
    ml__budget_set(budget);
    cr_assert_eq(ml__budget_extend(&t, 100), 1);
    uint64_t leased = t.lease_left;
    ml__budget_release(&t);
    cr_assert_eq(t.lease_left, 0);
    expect_pool(budget);

    /* Of a lease partly spent, only the rest goes back. */
    cr_assert_eq(ml__budget_extend(&t, 100), 1);
    cr_assert_eq(t.lease_left, leased);
    t.lease_left = 40;
    ml__budget_release(&t);
    cr_assert_eq(t.lease_left, 0);
    expect_pool(budget - leased + 40);
}

Test(budget, release_without_a_budget_or_a_lease_changes_nothing)
{
    ml_thread t;
    memset(&t, 0, sizeof t);
    t.lease_left = 123; /* no budget was ever set */
    ml__budget_release(&t);
    cr_assert_eq(t.lease_left, 123);

    ml__budget_set(1000);
    t.lease_left = ML_NONE; /* a thread that holds no lease */
    ml__budget_release(&t);
    cr_assert_eq(t.lease_left, ML_NONE);
    expect_pool(1000);
}

/* Two threads drain the same budget round after round, spending each lease as it comes; the
 * main thread sets the budget and checks that the grants of a round add up to it exactly: no
 * byte leased twice (the sum would exceed the budget) and none lost. The budget is large, so a
 * round is some 2^18 extensions, long enough for the two threads to overlap. */
#define ROUNDS 4
#define ROUND_BUDGET (((uint64_t)1 << 38) + 777)

typedef struct drainer {
    pthread_barrier_t *start, *done;
    uint64_t seed;
    uint64_t granted[ROUNDS];
} drainer;

static void *drain(void *arg)
{
    drainer *d = arg;
    ml_thread t;
    memset(&t, 0, sizeof t);
    uint64_t x = d->seed;
    for (int r = 0; r < ROUNDS; r++) {
        pthread_barrier_wait(d->start);
        uint64_t granted = 0;
        for (;;) {
            x = x * 6364136223846793005u + 1442695040888963407u;
            uint64_t need = 1 + (x >> 33) % 4096;
            /* When `need` no longer fits, 1 byte still does unless the pool is empty (and the
             * pool never grows back within a round). */
            if (!ml__budget_extend(&t, need) && !ml__budget_extend(&t, 1)) break;
            granted += t.lease_left;
            t.lease_left = 0; /* spent */
        }
        d->granted[r] = granted;
        pthread_barrier_wait(d->done);
    }
    return NULL;
}

Test(budget, concurrent_extensions_never_lease_more_than_the_budget)
{
    pthread_barrier_t start, done;
    pthread_barrier_init(&start, NULL, 3);
    pthread_barrier_init(&done, NULL, 3);
    static drainer d[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        d[i].start = &start;
        d[i].done = &done;
        d[i].seed = 1000 + (uint64_t)i;
        cr_assert_eq(pthread_create(&th[i], NULL, drain, &d[i]), 0);
    }
    for (int r = 0; r < ROUNDS; r++) {
        ml__budget_set(ROUND_BUDGET);
        pthread_barrier_wait(&start);
        pthread_barrier_wait(&done);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    uint64_t both = 0;
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t sum = d[0].granted[r] + d[1].granted[r];
        cr_assert_eq(sum, ROUND_BUDGET, "round %d: leased %lu + %lu of %lu", r, d[0].granted[r],
                     d[1].granted[r], (uint64_t)ROUND_BUDGET);
        both += d[0].granted[r] > 0 && d[1].granted[r] > 0;
    }
    /* Not asserted (scheduling decides it): in how many rounds both threads took leases. */
    cr_log_info("rounds in which both threads leased: %lu of %d", both, ROUNDS);
    pthread_barrier_destroy(&start);
    pthread_barrier_destroy(&done);
}
