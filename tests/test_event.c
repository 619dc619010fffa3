/* The slow path's hub (lib/event.c), in process: exact counts across events, the countdown's
 * components, the refund of a failed allocation, the heap cap's refusal and the budget's action.
 * Allocations are simulated as the entry points make them: a charge, the event when it is due,
 * and the private jemalloc's malloc when allowed. The engine was initialised with the defaults
 * by its constructor; each Criterion test runs in a fresh process. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>

#include "budget.h"
#include "memlimits.h"
#include "engine.h"
#include "heap.h"
#include "host.h"
#include "options.h"
#include "sampler.h"

/* One allocation of n bytes as malloc makes it: NULL when the slow path refuses it. */
static void *allocate(uint64_t n)
{
    if (ml__charge(n) && ml__event(n, 0, NULL) != ML_ALLOW) return NULL;
    void *p = mlje_malloc(n);
    if (p == NULL)
        ml__event_refund(n);
    else if (n >= ML_FLUSH_NEAR)
        ml__event_after(n);
    return p;
}

/* The thread's exact count, through the API (which reads the same state): UBSan in GCC 12
 * flags ml__since_arm(&ml__self) taken in a test executable as a null member access. */
static uint64_t allocated_now(void)
{
    return ml_thread_allocated();
}

Test(event, counts_are_exact_across_events_and_zero_byte_requests)
{
    ml__thread_ensure();
    uint64_t start = allocated_now(), sum = 0;
    /* Sizes that cross many events: the sampler's gaps, the 1 MiB flush interval. */
    for (uint64_t i = 0; i < 20000; i++) {
        uint64_t n = (i * 7919) % 3000;
        void *p = allocate(n);
        cr_assert_not_null(p);
        mlje_free(p);
        sum += n;
    }
    cr_assert_eq(allocated_now() - start, sum);
    cr_assert_eq(0 - ml__self.allocations_down >= 20000, 1);
}

Test(event, a_mean_gap_of_one_samples_every_byte)
{
    ml__sampler_set_mean(1);
    ml__thread_ensure();
    ml__self.sample_left = 1;
    ml__thread_force_event(&ml__self);
    uint64_t before = ml__self.samples, bytes = 0;
    for (uint64_t n = 1; n <= 300; n++) {
        mlje_free(allocate(n));
        bytes += n;
    }
    /* Every byte is sampled, and each allocation is an event (sample_left is 1 after it), so
     * the samples are all counted by now. */
    cr_assert_eq(ml__self.samples - before, bytes);
}

Test(event, the_countdown_is_armed_with_its_smallest_component)
{
    ml__thread_ensure();
    ml__thread_force_event(&ml__self);
    mlje_free(allocate(1)); /* an event: it re-arms the countdown after its own charge */
    ml_thread *t = &ml__self;
    uint64_t expect = t->sample_left < t->flush_left ? t->sample_left : t->flush_left;
    if (t->lease_left < expect) expect = t->lease_left;
    cr_assert_eq(t->armed, expect);
    cr_assert_eq(t->until_event, expect);
}

Test(event, a_refund_takes_the_bytes_back)
{
    ml__thread_ensure();
    uint64_t before = allocated_now();
    /* A request jemalloc cannot serve: admitted by the limits (none), refused by jemalloc. */
    uint64_t huge = ((uint64_t)1 << 47) - ((uint64_t)1 << 20); /* above what is left */
    errno = 0;
    cr_assert_null(allocate(huge));
    cr_assert_eq(allocated_now(), before, "a failed allocation was counted");
}

Test(event, requests_beyond_the_address_space_are_refused_uncounted)
{
    ml__thread_ensure();
    uint64_t before = allocated_now();
    cr_assert_eq(ml__charge((uint64_t)1 << 48) ? ml__event((uint64_t)1 << 48, 0, NULL) : ML_ALLOW,
                 ML_REFUSE);
    cr_assert_eq(allocated_now(), before);
}

Test(event, the_heap_cap_refuses_before_the_live_heap_passes_it)
{
    ml__thread_ensure();
    mlje_free(allocate(1));
    uint64_t cap = ml__heap_live() + ((uint64_t)8 << 20);
    ml__heap_set_cap(cap);
    void *blocks[512];
    int n = 0;
    uint64_t usable = 0;
    while (n < 512) {
        void *p = allocate(64 << 10);
        if (p == NULL) break;
        usable += mlje_malloc_usable_size(p);
        blocks[n++] = p;
    }
    cr_assert_lt(n, 512, "the cap never refused");
    /* One thread, exact near the cap: the last admitted block fits, the next would not. */
    cr_assert_leq(ml__heap_live(), cap);
    cr_assert_gt(ml__heap_live() + (64 << 10), cap - (64 << 10),
                 "refused with room for the block left");
    while (n > 0)
        mlje_free(blocks[--n]);
    (void)usable;
}

Test(event, the_budget_fires_its_action_at_the_crossing_allocation, .exit_code = 124)
{
    ml__budget_set(10000);
    ml__thread_ensure();
    for (int i = 0; i < 99; i++)
        mlje_free(allocate(100));
    mlje_free(allocate(100)); /* exactly the budget: still allowed */
    allocate(1);              /* crosses it: the default action is exit:124 */
    cr_assert_fail("the budget did not fire");
}

/* Leases that run out on events with nothing else to decide are extended on the short path
 * (event.c's only_sampler), and shrink as the budget runs out (1/16 of what is left): many ends,
 * many of them on sampler events; the budget still fires at exactly the crossing allocation. */
Test(event, the_budget_fires_at_the_crossing_allocation_after_many_lease_ends, .exit_code = 124)
{
    ml__budget_set(4000000);
    ml__sampler_set_mean(4096);
    ml__thread_ensure();
    for (int i = 0; i < 39999; i++)
        mlje_free(allocate(100));
    cr_assert_eq(allocated_now(), 3999900);
    mlje_free(allocate(100)); /* exactly the budget: still allowed */
    allocate(0);              /* adds nothing: still allowed */
    allocate(1);              /* crosses it: the default action is exit:124 */
    cr_assert_fail("the budget did not fire");
}

/* Large blocks (ML_PEAK_BLOCK bytes or more) take their own one-pass event (event.c's
 * event_large): the same limits, decided at the same allocation. */
Test(event, the_budget_fires_at_the_crossing_large_block, .exit_code = 124)
{
    ml__budget_set(((uint64_t)10 << 20) + 100);
    ml__thread_ensure();
    mlje_free(allocate(100));
    for (int i = 0; i < 10; i++)
        mlje_free(allocate((uint64_t)1 << 20)); /* exactly the budget: still allowed */
    allocate(1);                                /* crosses it: the default action is exit:124 */
    cr_assert_fail("the budget did not fire");
}

Test(event, a_large_block_is_counted_exactly_and_reaches_the_peak)
{
    ml__thread_ensure();
    ml__heap_set_cap((uint64_t)1 << 40);
    uint64_t before = allocated_now(), live = ml__heap_live();
    void *p = allocate((uint64_t)4 << 20);
    cr_assert_not_null(p);
    cr_assert_eq(allocated_now() - before, (uint64_t)4 << 20);
    cr_assert_eq(ml__self.heap_reserved, 0, "settled after the allocation");
    cr_assert_geq(ml__heap_peak(), live + ((uint64_t)4 << 20));
    mlje_free(p);
    /* The interval the block's event armed is not charged with the block (it is in the sum):
     * the next small allocation takes the fast path. */
    cr_assert_gt(ml__self.flush_left, 0);
}

Test(event, large_blocks_samples_reach_the_totals_drawn_when_read)
{
    /* Every byte sampled: a large block's bytes are deferred (sampler.h) and drawn at the read,
     * so the totals still count every byte, while the thread's own count skips them. */
    ml__sampler_set_mean(1);
    ml__thread_ensure();
    uint64_t a0, n0, s0, a1, n1, s1;
    ml__totals(&a0, &n0, &s0);
    uint64_t own = ml__self.samples;
    for (uint64_t i = 0; i < 10; i++)
        mlje_free(allocate(((uint64_t)1 << 20) + i));
    ml__totals(&a1, &n1, &s1);
    cr_assert_eq(a1 - a0, 10 * ((uint64_t)1 << 20) + 45);
    cr_assert_eq(s1 - s0, a1 - a0);
    cr_assert_eq(ml__self.samples, own, "the blocks' samples were not deferred");
}

/* The countdown runs on units (n + 1 per request) and so does the sampler (event.c): an event
 * falls where a sampled unit lies, and the unit beyond a request's bytes, when sampled, costs
 * one event and no sample. Counting in bytes instead, the countdown ran out one unit per
 * request before the sampled byte, an event of its own (here 41 requests between samples: about
 * 4 in 10 samples had one). The bound: the samples (at most one event each), the sampled units
 * beyond the bytes (Poisson, mean 100000 / 4096 = 24.4: 60 is more than 7 deviations above),
 * and the ends of the flush interval (101 units per request). The samples themselves are
 * Binomial(10^7, 1 / 4096), mean 2441.4, deviation 49.4: within 5 deviations. */
Test(event, sampler_events_fall_on_sampled_units)
{
    ml__sampler_set_mean(4096);
    ml__thread_ensure();
    ml__thread_force_event(&ml__self);
    uint64_t before = ml__self.samples, events = 0;
    const uint64_t requests = 100000;
    for (uint64_t i = 0; i < requests; i++) {
        int event = ml__charge(100);
        if (event) {
            events++;
            cr_assert_eq(ml__event(100, 0, NULL), ML_ALLOW);
        }
        mlje_free(mlje_malloc(100));
    }
    uint64_t samples = ml__self.samples - before;
    uint64_t flush_ends = requests * 101 / ML_FLUSH_FAR + 2;
    cr_expect_leq(events, samples + 60 + flush_ends, "%llu events for %llu samples",
                  (unsigned long long)events, (unsigned long long)samples);
    cr_expect(samples > 2441 - 247 && samples < 2441 + 247, "%llu samples",
              (unsigned long long)samples);
}

/* Every unit sampled (mean 1): zero-byte requests, all units beyond their bytes, get none. */
Test(event, zero_byte_requests_are_never_sampled)
{
    ml__sampler_set_mean(1);
    ml__thread_ensure();
    ml__thread_force_event(&ml__self);
    uint64_t before = ml__self.samples;
    for (int i = 0; i < 1000; i++)
        mlje_free(allocate(0));
    cr_assert_eq(ml__self.samples, before);
    mlje_free(allocate(3));
    cr_assert_eq(ml__self.samples, before + 3);
}

/* A thread's first allocation is charged n units, not n + 1 (thread.h's allocations_down): the
 * count adds the unit back, so it is exact from the first byte, whether the thread's first
 * allocation is its first event (from the zero state) or it was set up before (ml_run, a new
 * thread's trampoline: ml__thread_ensure). */
static void *first_allocations(void *ensure)
{
    if (ensure != NULL) ml__thread_ensure();
    uint64_t sizes[] = {100, 0, 7, 4096, 1}, sum = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        mlje_free(allocate(sizes[i]));
        sum += sizes[i];
        if (allocated_now() != sum) return (void *)(uintptr_t)(i + 1);
    }
    return NULL;
}

Test(event, a_new_threads_count_is_exact_from_its_first_allocation)
{
    for (int ensure = 0; ensure <= 1; ensure++) {
        pthread_t thread;
        void *failed = (void *)1;
        cr_assert_eq(pthread_create(&thread, NULL, first_allocations, ensure ? &thread : NULL), 0);
        cr_assert_eq(pthread_join(thread, &failed), 0);
        cr_assert_null(failed, "ensure %d: wrong count after allocation %zu", ensure,
                       (size_t)(uintptr_t)failed);
    }
}

/* A countdown armed before the thread's first allocation (ml__thread_ensure), which takes one
 * unit less off it, runs out at the same unit as its components: here a flush interval of 1000
 * units, reached by requests of 998 bytes (999 units) and 0 bytes (1 unit). */
static void *armed_before_the_first(void *arg)
{
    (void)arg;
    ml__self.flush_left = 1000; /* as if armed by the heap; the sampler's gap is far longer */
    ml__thread_ensure();
    if (ml__self.sample_left <= 1000) return NULL; /* about 1 in 10^6: nothing to check */
    int first = ml__charge(998), second = ml__charge(0);
    if (first || !second) return (void *)1;
    cr_assert_eq(ml__event(0, 0, NULL), ML_ALLOW);
    return NULL;
}

Test(event, a_countdown_armed_before_the_first_allocation_runs_out_on_time)
{
    ml__sampler_set_mean((uint64_t)1 << 30); /* the thread's first gap, far beyond the interval */
    pthread_t thread;
    void *late = (void *)2;
    cr_assert_eq(pthread_create(&thread, NULL, armed_before_the_first, NULL), 0);
    cr_assert_eq(pthread_join(thread, &late), 0);
    cr_assert_null(late, "the interval's last unit was no event");
}
