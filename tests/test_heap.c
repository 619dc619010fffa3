/* The heap cap and its bound (README "Accounting").
 *
 * Unit tests of lib/heap.c, in process: fake threads (ml_thread structs whose jemalloc counters
 * are the test's own variables) flushed and admitted directly.
 *
 * Child-process tests, measured on the blocks themselves: each target sums malloc_usable_size
 * of the blocks it holds, adds the live heap it started from (read while no other thread
 * allocates, when ml_heap_live is exact), and the test compares that with the cap. Target
 * programs: tests/targets/heap_*.c, run preloaded. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "child.h"
#include "heap.h"
#include "host.h"

#define KIB ((uint64_t)1 << 10)
#define MIB ((uint64_t)1 << 20)

/* The bound of README "Accounting": after its last checked event a thread allocates at most one
 * flush interval of charged units (n + 1 per request of n bytes) before its next check; a block
 * of n bytes takes at most RATIO(n) = usable(n) / (n + 1) bytes of heap per unit (8 at most, for
 * n = 0). The interval is FLUSH_NEAR units when the thread armed it within the near zone of the
 * cap, FLUSH_FAR units otherwise. */
#define FLUSH_NEAR (16 * KIB)
#define FLUSH_FAR (256 * KIB)
/* The near zone: ZONE per registered thread, plus one. */
#define ZONE (2 * MIB)

/* Heap bytes per charged unit for requests of n bytes. */
static double ratio(size_t n)
{
    return (double)mlje_nallocx(n ? n : 1, 0) / (double)(n + 1);
}

/* --- lib/heap.c in process ------------------------------------------------------------------- */

/* Fake threads: their jemalloc counters are these variables. Each test runs in its own process,
 * so the heap's globals start at zero. */
static uint64_t fake_allocated[4], fake_deallocated[4];
static ml_thread fakes[4];

static ml_thread *fake(int i, uint64_t flush_left)
{
    ml_thread *t = &fakes[i];
    memset(t, 0, sizeof *t);
    t->state = ML_THREAD_READY;
    t->je_allocated = &fake_allocated[i];
    t->je_deallocated = &fake_deallocated[i];
    t->flush_left = flush_left;
    return t;
}

Test(heap_unit, flush_adds_balance_changes_and_the_peak_keeps_the_highest_sum)
{
    ml_thread *a = fake(0, 0), *b = fake(1, 0);
    fake_allocated[0] = 1000;
    ml__heap_flush(a);
    cr_expect_eq(ml__heap_live(), 1000);
    fake_deallocated[0] = 400;
    ml__heap_flush(a);
    cr_expect_eq(ml__heap_live(), 600);
    cr_expect_eq(ml__heap_peak(), 1000);
    fake_allocated[0] = 3000;
    ml__heap_flush(a);
    cr_expect_eq(ml__heap_live(), 2600);
    cr_expect_eq(ml__heap_peak(), 2600);
    /* b frees a's blocks: b's balance goes below zero, and the sum down. */
    fake_deallocated[1] = 2000;
    ml__heap_flush(b);
    cr_expect_eq(ml__heap_live(), 600);
    cr_expect_eq(ml__heap_peak(), 2600);
    /* A second flush with nothing new changes nothing. */
    ml__heap_flush(a);
    ml__heap_flush(b);
    cr_expect_eq(ml__heap_live(), 600);
}

Test(heap_unit, far_below_the_cap_a_request_inside_the_interval_is_admitted_without_a_flush)
{
    ml__heap_set_cap(64 * MIB);
    ml_thread *t = fake(0, 100000);
    fake_allocated[0] = 50000; /* not flushed yet */
    cr_expect(ml__heap_admit(t, 1000, 0, NULL));
    cr_expect_eq(ml__heap_live(), 0, "the far shortcut flushed");
    cr_expect_eq(t->flush_left, 100000, "the far shortcut re-armed the interval");
    cr_expect_eq(t->heap_reserved, 0);
}

/* The thread's growth not yet in the sum, in these tests, when the interval that runs out must
 * end in a flush: more than ML_REARM_MAX. */
#define GROWN (ML_REARM_MAX + 1000)

Test(heap_unit, the_request_that_ends_an_interval_flushes_reserves_its_block_and_arms_the_next)
{
    ml__heap_set_cap(64 * MIB);
    ml_thread *t = fake(0, 1000);
    fake_allocated[0] = GROWN;
    /* 1000 bytes are 1001 units: more than the 1000 left. */
    cr_expect(ml__heap_admit(t, 1000, 0, NULL));
    cr_expect_eq(t->heap_reserved, 1024, "malloc(1000) gets 1024 usable bytes");
    cr_expect_eq(ml__heap_live(), GROWN + 1024);
    cr_expect_eq(t->flush_left, ML_FLUSH_FAR);
    /* jemalloc allocates the block; the flush after it settles the reservation. */
    fake_allocated[0] += 1024;
    ml__heap_flush(t);
    cr_expect_eq(t->heap_reserved, 0);
    cr_expect_eq(ml__heap_live(), GROWN + 1024);
}

/* The same interval's end when the thread has grown little since its flush (its requests replaced
 * blocks: reallocs, frees): re-armed from the exact growth, at ML_FLUSH_FAR units less the
 * growth, without a flush, so the thread's lag stays within R * ML_FLUSH_FAR for requests of any
 * ratio R >= 1. */
Test(heap_unit, an_interval_that_ends_with_little_growth_is_rearmed_from_it_without_a_flush)
{
    ml__heap_set_cap(64 * MIB);
    ml_thread *t = fake(0, 1000);
    fake_allocated[0] = 900 * KIB; /* 880 KiB freed again: 20 KiB of growth */
    fake_deallocated[0] = 880 * KIB;
    cr_expect(ml__heap_admit(t, 1000, 0, NULL));
    cr_expect_eq(ml__heap_live(), 0, "no flush");
    cr_expect_eq(t->heap_reserved, 0, "no reservation");
    cr_expect_eq(t->flush_left, ML_FLUSH_FAR - 20 * KIB);
    /* Growth at most ML_REARM_MAX is re-armed; beyond it the thread flushes. */
    fake_allocated[0] = 880 * KIB + ML_REARM_MAX;
    t->flush_left = 10;
    cr_expect(ml__heap_admit(t, 1000, 0, NULL));
    cr_expect_eq(ml__heap_live(), 0);
    cr_expect_eq(t->flush_left, ML_FLUSH_FAR - ML_REARM_MAX);
    fake_allocated[0] += 1;
    t->flush_left = 10;
    cr_expect(ml__heap_admit(t, 1000, 0, NULL));
    cr_expect_eq(ml__heap_live(), ML_REARM_MAX + 1 + 1024, "flushed and reserved");
    cr_expect_eq(t->flush_left, ML_FLUSH_FAR);
}

/* A thread that freed a little more than it allocated since its flush is re-armed a whole far
 * interval, not more; one that freed more than ML_REARM_MAX flushes its frees; a request that
 * does not fit in the re-armed interval is checked and reserved. */
Test(heap_unit, a_rearmed_interval_is_at_most_a_far_one_and_must_hold_the_request)
{
    ml__heap_set_cap(64 * MIB);
    ml_thread *t = fake(0, 0);
    fake_allocated[0] = 4 * MIB;
    ml__heap_flush(t);
    fake_deallocated[0] = ML_REARM_MAX;
    t->flush_left = 5;
    cr_expect(ml__heap_admit(t, 100, 0, NULL));
    cr_expect_eq(ml__heap_live(), 4 * MIB, "no flush");
    cr_expect_eq(t->flush_left, ML_FLUSH_FAR);
    /* 300 KiB: more units than a far interval. */
    t->flush_left = 5;
    cr_expect(ml__heap_admit(t, 300 * KIB, 0, NULL));
    cr_expect_eq(t->heap_reserved, (int64_t)mlje_nallocx(300 * KIB, 0));
    cr_expect_eq(ml__heap_live(), 4 * MIB - ML_REARM_MAX + mlje_nallocx(300 * KIB, 0));
    fake_allocated[0] += mlje_nallocx(300 * KIB, 0);
    ml__heap_flush(t);
    fake_deallocated[0] += ML_REARM_MAX + 1;
    t->flush_left = 5;
    cr_expect(ml__heap_admit(t, 100, 0, NULL));
    cr_expect_eq(ml__heap_live(), 4 * MIB - 2 * ML_REARM_MAX - 1 + mlje_nallocx(300 * KIB, 0) + 112,
                 "the frees flushed");
}

/* The event's short path re-arms the same way (ml__heap_rearm): the interval is set so that
 * taking the event's units off leaves the re-armed interval less the request; near the cap, or
 * with too much growth, it declines and changes nothing. */
Test(heap_unit, the_short_path_rearms_far_below_the_cap_only)
{
    ml__heap_set_cap(64 * MIB);
    ml_thread *t = fake(0, 1000);
    fake_allocated[0] = 30 * KIB;
    fake_deallocated[0] = 20 * KIB;
    /* 1500 units since arming, 1001 of them the request at hand (1000 bytes). */
    cr_expect(ml__heap_rearm(t, 1500, 1001));
    cr_expect_eq(t->flush_left - 1500, ML_FLUSH_FAR - 10 * KIB - 1001);
    cr_expect_eq(ml__heap_live(), 0, "no flush");
    fake_allocated[0] += ML_REARM_MAX;
    t->flush_left = 1000;
    cr_expect_not(ml__heap_rearm(t, 1500, 1001), "grew by more than ML_REARM_MAX");
    cr_expect_eq(t->flush_left, 1000);
    fake_allocated[0] -= ML_REARM_MAX;
    ml__heap_set_cap(ZONE);
    cr_expect_not(ml__heap_rearm(t, 1500, 1001), "near the cap");
    cr_expect_eq(t->flush_left, 1000);
}

/* Counters that went back (jemalloc recreating a thread's state after its teardown) are settled
 * only by a flush: the interval's end flushes. */
Test(heap_unit, counters_that_went_back_end_the_interval_in_a_flush)
{
    ml__heap_set_cap(64 * MIB);
    ml_thread *t = fake(0, 0);
    fake_allocated[0] = 4000;
    ml__heap_flush(t);
    fake_allocated[0] = 100; /* went back: 4000 + 100 in all */
    t->flush_left = 5;
    cr_expect(ml__heap_admit(t, 100, 0, NULL));
    cr_expect_eq(ml__heap_live(), 4100 + 112, "flushed, and the block reserved");
}

/* After a slow-path allocation of 64 KiB or more, event.c flushes when the thread grew by that
 * much (a new block), not for a realloc that grew its block a little (the old block is in the
 * sum): the growth it reads. */
Test(heap_unit, after_a_large_block_the_growth_not_yet_in_the_sum_is_read_exactly)
{
    ml_thread *t = fake(0, 0);
    fake_allocated[0] = 100 * KIB; /* realloc(100 KiB block, 100 KiB + 64) in place */
    ml__heap_flush(t);
    fake_allocated[0] += 100 * KIB + 4 * KIB;
    fake_deallocated[0] += 100 * KIB;
    cr_expect_eq(ml__heap_unflushed(t), 4 * KIB, "a growth of 4 KiB: no flush");
    fake_allocated[0] += ML_PEAK_BLOCK - 4 * KIB;
    cr_expect_eq(ml__heap_unflushed(t), ML_PEAK_BLOCK, "a growth of 64 KiB: a flush");
    /* What a reservation holds is in the sum. */
    t->heap_reserved = 16 * KIB;
    cr_expect_eq(ml__heap_unflushed(t), ML_PEAK_BLOCK - 16 * KIB);
    t->heap_reserved = 0;
    /* A flush in progress, or counters that went back: unknown, so a flush. */
    t->reported = ML_REPORTED_LOCKED;
    cr_expect_eq(ml__heap_unflushed(t), INT64_MAX);
    t->reported = 100 * KIB;
    fake_allocated[0] = 50 * KIB; /* below the 100 KiB the flush saw */
    cr_expect_eq(ml__heap_unflushed(t), INT64_MAX);
}

Test(heap_unit, a_large_block_is_reserved_with_one_flush_and_marked_without_another)
{
    ml__heap_set_cap(64 * MIB);
    ml_thread *t = fake(0, 1000);
    fake_allocated[0] = 50000;
    cr_assert(ml__heap_admit_large(t, 4 * MIB));
    cr_expect_eq(t->heap_reserved, 4 * MIB);
    cr_expect_eq(ml__heap_live(), 50000 + 4 * MIB, "the flush and the reservation");
    cr_expect_eq(t->flush_left, ML_FLUSH_FAR, "the block is in the sum: not charged");
    /* jemalloc allocates it; the mark leaves the sum as it is, and the peak sees it. */
    fake_allocated[0] += 4 * MIB;
    ml__heap_allocated(t);
    cr_expect_eq(t->reserve_allocated, 1);
    cr_expect_eq(ml__heap_live(), 50000 + 4 * MIB);
    cr_expect_eq(ml__heap_peak(), 50000 + 4 * MIB, "the peak sees the block at the mark");
    /* The next flush settles the reservation: nothing new. */
    ml__heap_flush(t);
    cr_expect_eq(t->heap_reserved, 0);
    cr_expect_eq(ml__heap_live(), 50000 + 4 * MIB);
    /* Freed before the next event: the sum keeps it until a flush, as any free. */
    fake_deallocated[0] += 4 * MIB;
    ml__heap_flush(t);
    cr_expect_eq(ml__heap_live(), 50000);
    cr_expect_eq(ml__heap_peak(), 50000 + 4 * MIB);
}

Test(heap_unit, a_large_block_is_reserved_without_a_cap_so_that_the_peak_sees_it)
{
    ml_thread *t = fake(0, 0);
    cr_assert(ml__heap_admit_large(t, 100 * KIB));
    cr_expect_eq(t->heap_reserved, 112 * KIB, "malloc(100 KiB) gets 112 KiB");
    fake_allocated[0] += 112 * KIB;
    ml__heap_allocated(t);
    fake_deallocated[0] += 112 * KIB;
    ml__heap_flush(t);
    cr_expect_eq(ml__heap_live(), 0);
    cr_expect_eq(ml__heap_peak(), 112 * KIB);
}

Test(heap_unit, a_large_block_past_the_cap_reserves_nothing)
{
    ml__heap_set_cap(4 * MIB);
    ml_thread *t = fake(0, 0);
    fake_allocated[0] = 100;
    cr_expect_not(ml__heap_admit_large(t, 4 * MIB));
    cr_expect_eq(t->heap_reserved, 0);
    cr_expect_eq(ml__heap_live(), 100, "the thread was flushed, nothing reserved");
    cr_expect(ml__heap_admit_large(t, 3 * MIB + 512 * KIB)); /* a class of its own */
}

Test(heap_unit, the_large_usable_size_is_jemallocs)
{
    /* Every large class boundary up to 2^46 and its neighbours, and a pseudo-random spread. */
    for (uint64_t n = ML_PEAK_BLOCK; n <= ((uint64_t)1 << 46); n += n / 4) {
        for (uint64_t m = n - 1; m <= n + 1; m++) {
            if (m < ML_PEAK_BLOCK) continue;
            cr_assert_eq(ml__heap_large_usable(m), mlje_nallocx(m, 0), "n = %lu", m);
        }
    }
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t m = ML_PEAK_BLOCK + x % ((uint64_t)1 << (16 + i % 24));
        cr_assert_eq(ml__heap_large_usable(m), mlje_nallocx(m, 0), "n = %lu", m);
    }
}

Test(heap_unit, the_interval_is_counted_in_units_so_zero_byte_requests_end_it)
{
    ml__heap_set_cap(64 * MIB);
    ml_thread *t = fake(0, 1);
    fake_allocated[0] = 8 * GROWN; /* malloc(0)s, 8 usable bytes each */
    cr_expect(ml__heap_admit(t, 0, 0, NULL));
    cr_expect_eq(ml__heap_live(), 8 * GROWN + 8, "malloc(0) is one unit, the last one left");
}

Test(heap_unit, near_the_cap_every_event_flushes_and_arms_the_near_interval)
{
    ml__heap_set_cap(ZONE); /* within the zone of one thread from the start */
    ml_thread *t = fake(0, 100000);
    fake_allocated[0] = 500000;
    cr_expect(ml__heap_admit(t, 1000, 0, NULL));
    cr_expect_eq(ml__heap_live(), 500000 + 1024);
    cr_expect_eq(t->flush_left, ML_FLUSH_NEAR);
}

Test(heap_unit, the_heap_coming_near_ends_a_far_interval_at_the_next_event)
{
    ml__heap_set_cap(64 * MIB);
    ml_thread *t = fake(0, 100000), *other = fake(1, 0);
    fake_allocated[1] = 63 * MIB; /* another thread's flush takes the sum within the zone */
    ml__heap_flush(other);
    cr_expect(ml__heap_admit(t, 1000, 0, NULL));
    cr_expect_eq(t->heap_reserved, 1024, "the request was not checked");
    cr_expect_eq(t->flush_left, ML_FLUSH_NEAR);
}

Test(heap_unit, a_request_past_the_cap_is_refused_and_the_next_one_checked)
{
    ml__heap_set_cap(MIB);
    ml_thread *t = fake(0, 100000);
    fake_allocated[0] = MIB - 512;
    cr_expect_not(ml__heap_admit(t, 1000, 0, NULL), "1024 bytes more than the cap admitted");
    cr_expect_eq(ml__heap_live(), MIB - 512, "refused, yet flushed and nothing reserved");
    cr_expect_eq(t->heap_reserved, 0);
    cr_expect_eq(t->flush_left, 0, "after a refusal the next allocation must be an event");
    /* Exactly up to the cap: 500 bytes get 512. */
    cr_expect(ml__heap_admit(t, 500, 0, NULL));
    cr_expect_eq(ml__heap_live(), MIB);
}

Test(heap_unit, two_threads_cannot_both_take_the_same_room)
{
    /* The block admitted to one thread is in the sum before jemalloc allocates it. */
    ml__heap_set_cap(MIB);
    ml_thread *a = fake(0, 0), *b = fake(1, 0);
    cr_expect(ml__heap_admit(a, 600000, 0, NULL));
    cr_expect_not(ml__heap_admit(b, 600000, 0, NULL), "two blocks of 640 KiB under a 1 MiB cap");
    /* a's allocation failed in jemalloc: its reservation goes back, and b fits. */
    ml__heap_flush(a);
    cr_expect_eq(ml__heap_live(), 0);
    cr_expect(ml__heap_admit(b, 600000, 0, NULL));
}

Test(heap_unit, realloc_near_the_cap_counts_the_old_block_out)
{
    const uint64_t cap = 16 * MIB;
    ml__heap_set_cap(cap);
    void *old = mlje_malloc(cap / 10 * 6);
    cr_assert_not_null(old);
    ml_thread *t = fake(0, 0);
    fake_allocated[0] = mlje_malloc_usable_size(old);
    ml__heap_flush(t);
    cr_expect(ml__heap_admit(t, cap / 10 * 9, 0, old),
              "60%% of the cap realloc'ed to 90%% refused");
    cr_expect_eq(t->heap_reserved,
                 (int64_t)mlje_nallocx(cap / 10 * 9, 0) - (int64_t)mlje_malloc_usable_size(old));
    /* Without the old block given back it would not fit. */
    ml_thread *u = fake(1, 0);
    cr_expect_not(ml__heap_admit(u, cap / 10 * 9, 0, NULL));
    mlje_free(old);
}

/* An aligned request is charged its alignment too (n + 1 + align units): within the far
 * interval it takes the shortcut on those units, and one whose units do not fit is checked. */
Test(heap_unit, aligned_requests_are_admitted_on_their_charged_units)
{
    ml__heap_set_cap(64 * MIB);
    ml_thread *t = fake(0, 100000);
    cr_expect(ml__heap_admit(t, 0, 4096, NULL));
    cr_expect_eq(t->heap_reserved, 0, "memalign(4096, 0): 4097 units fit in the interval");
    cr_expect(ml__heap_admit(t, 0, 16, NULL));
    cr_expect_eq(t->heap_reserved, 0, "alignment 16: the far shortcut");
    cr_expect(ml__heap_admit(t, 0, (size_t)1 << 19, NULL));
    cr_expect_eq(t->heap_reserved, (int64_t)mlje_nallocx(1, MLJE_MALLOCX_ALIGN((size_t)1 << 19)),
                 "memalign(512 KiB, 0): 524289 units past a far interval, checked and reserved "
                 "(reserved %lld)",
                 (long long)t->heap_reserved);
}

Test(heap_unit, while_a_global_memory_task_runs_every_event_flushes)
{
    ml_thread *t = fake(0, 100000);
    ml__heap_watch(+1);
    fake_allocated[0] = 4096;
    cr_expect(ml__heap_admit(t, 100, 0, NULL));
    cr_expect_eq(ml__heap_live(), 4096);
    cr_expect_leq(t->flush_left, ML_FLUSH_WATCHED);
    ml__heap_watch(-1);
}

/* A registered thread flushes itself in a loop while the test thread reconciles in a loop: a
 * reconcile must never leave the sum below what the thread's last completed flush put in it (the
 * thread only allocates). Before the flush lock, a reconcile that read the counters before a
 * flush could store its older balance after it. */
static uint64_t race_allocated;
static volatile uint64_t race_published, race_flushes;
static volatile int race_stop;

static void hook_noop(ml_thread *t)
{
    (void)t;
}

static void fork_noop(int multithreaded)
{
    (void)multithreaded;
}

static void fork_lost_noop(const ml_thread *t)
{
    (void)t;
}

static void noop(void) {}

static const ml_thread_hooks noop_hooks = {hook_noop,      hook_noop, fork_noop,
                                           fork_lost_noop, noop,      noop};

static void *race_owner(void *arg)
{
    (void)arg;
    ml_thread *t = &ml__self;
    t->busy = 1;
    ml__thread_register(t);
    t->je_allocated = &race_allocated;
    t->je_deallocated = &fake_deallocated[3];
    t->seen_allocated = t->seen_deallocated = 0;
    ml__heap_flush(t);
    __atomic_store_n(&race_published, 1, __ATOMIC_RELEASE);
    while (!race_stop) {
        __atomic_add_fetch(&race_allocated, 1000, __ATOMIC_RELEASE);
        ml__heap_flush(t);
        __atomic_store_n(&race_published, __atomic_load_n(&race_allocated, __ATOMIC_ACQUIRE),
                         __ATOMIC_RELEASE);
        race_flushes++;
    }
    t->busy = 0;
    return NULL;
}

Test(heap_unit, a_reconcile_never_undoes_a_newer_flush)
{
    cr_assert_eq(ml__thread_setup_key(&noop_hooks), 0);
    pthread_t owner;
    cr_assert_eq(pthread_create(&owner, NULL, race_owner, NULL), 0);
    while (__atomic_load_n(&race_published, __ATOMIC_ACQUIRE) == 0) {
    }
    /* Until the owner has flushed 30 million times while this thread reconciled (the two overlap
     * only when both are on a core), at most a billion reconciles. */
    uint64_t worst = 0, reconciles = 0;
    for (; reconciles < 1000000000 && race_flushes < 30000000; reconciles++) {
        ml__heap_reconcile();
        uint64_t flushed = __atomic_load_n(&race_published, __ATOMIC_ACQUIRE);
        uint64_t live = ml__heap_live();
        if (live < flushed && flushed - live > worst) worst = flushed - live;
    }
    race_stop = 1;
    pthread_join(owner, NULL);
    cr_log_info("%llu reconciles against %llu flushes", (unsigned long long)reconciles,
                (unsigned long long)race_flushes);
    cr_expect_eq(worst, 0, "the sum fell %llu bytes below the thread's last flush",
                 (unsigned long long)worst);
}

/* fake(0) in the registry, so that a reconcile flushes it. */
static ml_thread *registered_fake(void)
{
    cr_assert_eq(ml__thread_setup_key(&noop_hooks), 0);
    ml_thread *t = fake(0, 0);
    ml__thread_register(t); /* sets the calling thread's counters: the fake's again below */
    t->je_allocated = &fake_allocated[0];
    t->je_deallocated = &fake_deallocated[0];
    t->seen_allocated = t->seen_deallocated = 0;
    return t;
}

/* A peak far above what follows, so that no peak recheck (a reconcile) corrects the sum behind
 * the test's back. */
static void high_peak(ml_thread *t)
{
    fake_allocated[0] += 64 * MIB;
    ml__heap_flush(t);
    fake_deallocated[0] += 64 * MIB;
    ml__heap_flush(t);
    cr_assert_eq(ml__heap_peak(), 64 * MIB);
}

/* A registered fake thread, under a 64 MiB cap and a high peak, with 1000 bytes not yet flushed,
 * whose event admitted a 4 MiB block: reserved, not yet allocated. */
static ml_thread *admitted_large_block(void)
{
    ml__heap_set_cap(64 * MIB);
    ml_thread *t = registered_fake();
    high_peak(t);
    fake_allocated[0] += 1000;
    cr_assert(ml__heap_admit_large(t, 4 * MIB));
    return t;
}

/* A reconcile after jemalloc allocated the block and the owner marked it finds the block in the
 * balance while it is still reserved: it settles the reservation, or the block would count
 * twice until the owner's next flush. */
Test(heap_unit, a_reconcile_after_the_mark_settles_the_reservation_once)
{
    ml_thread *t = admitted_large_block();
    fake_allocated[0] += 4 * MIB;
    ml__heap_allocated(t);
    ml__heap_reconcile(); /* another thread's walk */
    cr_expect_eq(t->heap_reserved, 0);
    cr_expect_eq(ml__heap_live(), 1000 + 4 * MIB);
    ml__heap_flush(t);
    ml__heap_reconcile();
    cr_expect_eq(ml__heap_live(), 1000 + 4 * MIB);
}

Test(heap_unit, a_reconcile_before_the_block_is_allocated_keeps_it_reserved)
{
    ml_thread *t = admitted_large_block();
    ml__heap_reconcile(); /* reads the balance without the block: adds nothing */
    cr_expect_eq(t->heap_reserved, 4 * MIB);
    cr_expect_eq(ml__heap_live(), 1000 + 4 * MIB);
    fake_allocated[0] += 4 * MIB;
    ml__heap_allocated(t);
    ml__heap_reconcile();
    cr_expect_eq(ml__heap_live(), 1000 + 4 * MIB);
}

/* The moment between jemalloc's return and the mark (heap.h): a reconcile there counts the
 * block twice, and the next flush of the thread, of either kind, takes it back. */
Test(heap_unit, a_reconcile_before_the_mark_is_undone_by_the_next_flush)
{
    ml_thread *t = admitted_large_block();
    fake_allocated[0] += 4 * MIB;
    ml__heap_reconcile();
    cr_expect_eq(ml__heap_live(), 1000 + 8 * MIB, "counted twice, high");
    ml__heap_allocated(t);
    ml__heap_reconcile();
    cr_expect_eq(ml__heap_live(), 1000 + 4 * MIB);
}

/* Large blocks against reconciles from another thread: an owner admits a 4 MiB block
 * (reserved), has it "allocated" (its fake counter), marks it, and frees and flushes it, and
 * after each step waits for this thread to run two whole reconciles, so that a reconcile falls
 * between every two steps. From the admission to the flush after the free the block is in the
 * sum, as a reservation or in the balance: a reconcile that settled the reservation before the
 * block was counted would leave the sum short of it. The owner publishes what the sum must hold,
 * with a generation count around each change; a check counts when the generation did not move
 * across it. */
static uint64_t large_allocated, large_freed;
static volatile uint64_t large_must, large_gen, large_reconciles;
static volatile int large_started, large_stop;

static void large_step(void)
{
    uint64_t seen = large_reconciles;
    while (large_reconciles < seen + 2)
        sched_yield();
}

static void large_publish(uint64_t must)
{
    __atomic_add_fetch(&large_gen, 1, __ATOMIC_SEQ_CST);
    large_must = must;
    __atomic_add_fetch(&large_gen, 1, __ATOMIC_SEQ_CST);
}

static void *large_owner(void *arg)
{
    (void)arg;
    ml_thread *t = &ml__self;
    t->busy = 1;
    ml__thread_register(t);
    t->je_allocated = &large_allocated;
    t->je_deallocated = &large_freed;
    t->seen_allocated = t->seen_deallocated = 0;
    ml__heap_flush(t);
    large_started = 1;
    for (int round = 0; round < 2000; round++) {
        cr_assert(ml__heap_admit_large(t, 4 * MIB));
        large_publish(4 * MIB);
        large_step();
        __atomic_add_fetch(&large_allocated, 4 * MIB, __ATOMIC_RELEASE);
        large_step();
        ml__heap_allocated(t);
        large_step();
        large_publish(0);
        __atomic_add_fetch(&large_freed, 4 * MIB, __ATOMIC_RELEASE);
        large_step();
        ml__heap_flush(t);
    }
    large_stop = 1;
    t->busy = 0;
    return NULL;
}

Test(heap_unit, reconciles_never_drop_a_large_block_from_the_sum)
{
    cr_assert_eq(ml__thread_setup_key(&noop_hooks), 0);
    pthread_t owner;
    cr_assert_eq(pthread_create(&owner, NULL, large_owner, NULL), 0);
    while (!large_started) {
    }
    uint64_t checks = 0, short_by = 0;
    while (!large_stop) {
        uint64_t gen = __atomic_load_n(&large_gen, __ATOMIC_SEQ_CST);
        uint64_t must = large_must;
        ml__heap_reconcile();
        uint64_t live = ml__heap_live();
        if (gen % 2 == 0 && __atomic_load_n(&large_gen, __ATOMIC_SEQ_CST) == gen) {
            checks++;
            if (live < must) short_by = must - live;
        }
        large_reconciles++;
        sched_yield(); /* the owner may share this core */
    }
    pthread_join(owner, NULL);
    cr_log_info("%llu checks", (unsigned long long)checks);
    cr_expect_eq(short_by, 0, "the sum lacked %llu bytes of an admitted block",
                 (unsigned long long)short_by);
    /* Every step was followed by a whole reconcile within one generation. */
    cr_expect_geq(checks, 2000 * 4);
    ml__heap_reconcile();
    cr_expect_eq(ml__heap_live(), 0);
}

#define HANG_GUARD_S 120

static void run(const char *name, const char *const *args, const char *const *env, ml_child *c)
{
    char target[4096];
    const char *argv[16] = {target};
    snprintf(target, sizeof target, "%s", ml_test_target(name));
    for (int i = 0; args != NULL && args[i] != NULL && i < 14; i++)
        argv[i + 1] = args[i];
    cr_assert_eq(ml_child_run(argv, env, 1, NULL, HANG_GUARD_S, c), 0, "cannot start %s", target);
    cr_assert(c->exited && c->status == 0, "%s: status %d signal %d\nstdout:\n%s\nstderr:\n%s",
              name, c->status, c->signal, c->out, c->err);
}

/* The signed number after "key " at the start of a line of `text`; fails the test if absent. */
static long long field(const char *text, const char *key)
{
    size_t len = strlen(key);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, key, len) == 0 && line[len] == ' ') return strtoll(line + len + 1, 0, 10);
        line = strchr(line, '\n');
        if (line != NULL) line++;
    }
    cr_assert_fail("no '%s' in output:\n%s", key, text);
    return 0;
}

/* --- Issue 9: many threads released together behind a barrier ------------------------------- */

/* Runs heap_fill: `threads` threads, `rounds` rounds, requests of `size` ("mix": sizes 0 to
 * 70000), under `cap` bytes, and asserts in every round: the live heap (baseline + the blocks'
 * usable sizes) is at most cap + threads * ratio * F, and above the cap minus the largest block
 * (the refusals were right: each came after an exact reconcile); every thread stopped on
 * ENOMEM. F is FLUSH_NEAR when the cap is within the near zone of an empty heap (the threads,
 * the main thread and one more, ZONE each), so that every interval is armed near; FLUSH_FAR
 * otherwise: a thread descheduled in the middle of a far interval may resume it at the cap.
 * `sample`: MEMLIMITS_SAMPLE; at 1T the sampler makes no events, so the threads run their whole
 * flush intervals unchecked: the worst case. */
static void fill_after(int threads, int rounds, const char *size, uint64_t cap, const char *sample,
                       const char *churn)
{
    char nthreads[16], nrounds[16], heap[64], mean[64];
    snprintf(nthreads, sizeof nthreads, "%d", threads);
    snprintf(nrounds, sizeof nrounds, "%d", rounds);
    snprintf(heap, sizeof heap, "MEMLIMITS_HEAP=%llu", (unsigned long long)cap);
    snprintf(mean, sizeof mean, "MEMLIMITS_SAMPLE=%s", sample);
    const char *args[] = {nthreads, nrounds, size, "20240509", churn, NULL};
    const char *env[] = {heap, mean, "MEMLIMITS_SEED=7", NULL};
    ml_child c;
    run("heap_fill", args, env, &c);
    double rho = strcmp(size, "mix") == 0 ? 8.0 : ratio(strtoull(size, NULL, 10));
    uint64_t interval = cap <= (uint64_t)(threads + 2) * ZONE ? FLUSH_NEAR : FLUSH_FAR;
    long long bound = (long long)(threads * rho * (double)interval);
    long long max_excess = field(c.out, "max_excess"), min_excess = field(c.out, "min_excess");
    cr_log_info("%d threads, %s-byte requests, cap %llu: %lld rounds, excess %lld..%lld, "
                "bound %lld",
                threads, size, (unsigned long long)cap, field(c.out, "rounds"), min_excess,
                max_excess, bound);
    cr_expect_eq(field(c.out, "rounds"), rounds);
    cr_expect_leq(max_excess, bound,
                  "%d threads, %s-byte requests: the live heap went %lld bytes past the cap "
                  "%llu; bound %lld (%d threads x %.3f x %llu units)\n%s",
                  threads, size, max_excess, (unsigned long long)cap, bound, threads, rho,
                  (unsigned long long)interval, c.out);
    cr_expect_gt(min_excess, -field(c.out, "max_usable"), "refused %lld bytes below the cap\n%s",
                 -min_excess, c.out);
    cr_expect_eq(field(c.out, "bad"), 0, "a thread stopped without ENOMEM\n%s", c.out);
    ml_child_free(&c);
}

static void fill(int threads, int rounds, const char *size, uint64_t cap, const char *sample)
{
    fill_after(threads, rounds, size, cap, sample, NULL);
}

/* Threads that first made many intervals of reallocs that add nothing to the heap (re-armed
 * from their growth, not flushed): the fill that follows keeps the same bound. */
Test(heap, cap_holds_after_reallocs_rearmed_the_intervals)
{
    fill_after(4, 20, "1000", 64 * MIB, "1T", "3000");
    fill_after(4, 20, "mix", 64 * MIB, "1T", "3000");
}

Test(heap, cap_holds_for_2_threads_released_together)
{
    fill(2, 2000, "1000", 4 * MIB, "1T");
}

Test(heap, cap_holds_for_4_threads_released_together)
{
    fill(4, 1500, "1000", 4 * MIB, "1T");
}

Test(heap, cap_holds_for_8_threads_released_together)
{
    fill(8, 1000, "1000", 4 * MIB, "1T");
}

Test(heap, cap_holds_for_16_threads_released_together)
{
    fill(16, 600, "1000", 4 * MIB, "1T");
}

Test(heap, cap_holds_for_mixed_sizes_zero_included)
{
    fill(2, 150, "mix", 4 * MIB, "80000");
    fill(4, 150, "mix", 4 * MIB, "80000");
    fill(8, 100, "mix", 4 * MIB, "1T");
    fill(16, 100, "mix", 4 * MIB, "1T");
}

Test(heap, cap_holds_in_the_issue_setting_64M)
{
    /* The issue's runs: 4 and 8 threads of malloc(1000) under 64M, default sampler. Here the
     * threads start far from the cap and cross the near zone on the way. */
    fill(4, 12, "1000", 64 * MIB, "80000");
    fill(8, 12, "1000", 64 * MIB, "80000");
}

/* --- Issue 9, item 7: request sizes, zero included -------------------------------------------- */

/* One thread calls malloc(size) until it fails (at most 20,000,000 times) under a 4 MiB cap:
 * it must fail with ENOMEM, and the live heap must stay within ratio(size) * FLUSH_NEAR of the
 * cap and above the cap minus one block. */
static void single_size(size_t size)
{
    char arg[32];
    snprintf(arg, sizeof arg, "%zu", size);
    const char *args[] = {"size", arg, "20000000", NULL};
    const char *env[] = {"MEMLIMITS_HEAP=4M", "MEMLIMITS_SAMPLE=1T", NULL};
    ml_child c;
    run("heap_cases", args, env, &c);
    long long cap = field(c.out, "cap"), live = field(c.out, "base") + field(c.out, "usable");
    long long bound = (long long)(ratio(size) * (double)FLUSH_NEAR);
    cr_expect_eq(field(c.out, "failed"), 1,
                 "%zu-byte requests never failed: %lld blocks, %lld "
                 "bytes live under a %lld-byte cap",
                 size, field(c.out, "blocks"), live, cap);
    cr_expect_eq(field(c.out, "errno"), ENOMEM);
    cr_expect_leq(live - cap, bound, "%zu-byte requests: %lld bytes past the cap (bound %lld)\n%s",
                  size, live - cap, bound, c.out);
    cr_expect_gt(live - cap, -(long long)mlje_nallocx(size ? size : 1, 0), "refused early\n%s",
                 c.out);
    ml_child_free(&c);
}

Test(heap, zero_byte_requests_are_held_by_the_cap)
{
    single_size(0);
}

Test(heap, small_requests_are_held_by_the_cap)
{
    single_size(1);
    single_size(8);
    single_size(16);
    single_size(17);
    single_size(1000);
}

/* Aligned requests are charged their alignment on top of n + 1 (engine.h's
 * ml__charge_aligned), so a block jemalloc rounds up to the alignment or to its 16 KiB large
 * class is bound by the near interval like any other: at most ratio_aligned units per byte. */
static void single_aligned(size_t size, size_t align)
{
    char arg[32], arg_align[32];
    snprintf(arg, sizeof arg, "%zu", size);
    snprintf(arg_align, sizeof arg_align, "%zu", align);
    const char *args[] = {"aligned", arg, arg_align, "20000000", NULL};
    const char *env[] = {"MEMLIMITS_HEAP=4M", "MEMLIMITS_SAMPLE=1T", NULL};
    ml_child c;
    run("heap_cases", args, env, &c);
    long long cap = field(c.out, "cap"), live = field(c.out, "base") + field(c.out, "usable");
    long long blocks = field(c.out, "blocks");
    cr_assert_gt(blocks, 0, "%s", c.out);
    /* Heap bytes per charged unit for these requests, from the blocks themselves. */
    double ratio_aligned =
        (double)field(c.out, "usable") / (double)blocks / (double)(size + 1 + align);
    long long bound = (long long)(ratio_aligned * (double)FLUSH_NEAR);
    cr_expect_eq(field(c.out, "failed"), 1,
                 "posix_memalign(%zu, %zu) never failed: %lld blocks, %lld bytes live under a "
                 "%lld-byte cap",
                 align, size, blocks, live, cap);
    cr_expect_eq(field(c.out, "errno"), ENOMEM);
    cr_expect_leq(live - cap, bound,
                  "posix_memalign(%zu, %zu): %lld bytes past the cap (bound %lld)\n%s", align, size,
                  live - cap, bound, c.out);
    ml_child_free(&c);
}

Test(heap, aligned_requests_are_held_by_the_cap)
{
    single_aligned(0, 4096);
    single_aligned(0, 64);
    single_aligned(100, 4096);
    single_aligned(5000, 8192);
}

/* A thread that armed a far interval and then stayed idle while another filled the heap can
 * still allocate that interval unchecked: the far term of the bound (README). */
Test(heap, a_thread_idle_since_far_from_the_cap_stays_within_the_far_bound)
{
    const char *args[] = {"idle", "1000", NULL};
    const char *env[] = {"MEMLIMITS_HEAP=8M", "MEMLIMITS_SAMPLE=1T", NULL};
    ml_child c;
    run("heap_cases", args, env, &c);
    long long cap = field(c.out, "cap");
    long long live = field(c.out, "base") + field(c.out, "main") + field(c.out, "idle");
    long long bound = (long long)(ratio(1000) * (double)(FLUSH_FAR + FLUSH_NEAR));
    cr_expect_leq(live - cap, bound, "%lld bytes past the cap (bound %lld)\n%s", live - cap, bound,
                  c.out);
    ml_child_free(&c);
}

/* --- Admission (mutation targets of ml__heap_admit) ------------------------------------------- */

Test(heap, realloc_growing_a_large_block_near_the_cap_counts_the_old_block_out)
{
    /* 60% of the cap held, realloc'ed to 90%: 90% fits once the old block is given back. */
    const char *args[] = {"realloc", NULL};
    const char *env[] = {"MEMLIMITS_HEAP=16M", NULL};
    ml_child c;
    run("heap_cases", args, env, &c);
    cr_expect_not_null(strstr(c.out, "realloc ok errno 0 kept 1\n"), "%s", c.out);
    ml_child_free(&c);
}

Test(heap, frees_by_another_live_thread_are_seen_before_refusing)
{
    /* The freeing thread stays alive and makes no allocation, so its frees reach the live heap
     * only through the reconcile that precedes any refusal. */
    const char *args[] = {"free_elsewhere", NULL};
    const char *env[] = {"MEMLIMITS_HEAP=16M", NULL};
    ml_child c;
    run("heap_cases", args, env, &c);
    cr_expect_geq(field(c.out, "blocks"), 12, "%s", c.out);
    cr_expect_not_null(strstr(c.out, "again ok errno 0\n"), "%s", c.out);
    ml_child_free(&c);
}
