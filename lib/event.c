/* The slow path: everything an allocation can trigger, folded behind one countdown.
 *
 * An event happens when an allocation takes the countdown to zero or below. The countdown was
 * armed with the smallest of: the bytes to the next sampled byte, to the next flush of heap
 * accounting, to the end of the thread's lease of the process budget, and (tasks) to the end of
 * the innermost task's budget. So at an event we know exactly how many bytes were allocated
 * since arming, bring every component up to date, decide about the allocation at hand (budget,
 * heap cap), and re-arm.
 *
 * Re-entrancy: `busy` is set for the whole slow path. Anything it calls that allocates (glibc's
 * pthread key blocks, jemalloc's first-time setup) re-enters malloc, whose charge lands on a
 * zero countdown and comes back here, where busy sends it straight through: it is neither
 * sampled nor checked against limits, but jemalloc's counters still see it in the live heap. */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "budget.h"
#include "heap.h"
#include "init.h"
#include "ledger.h"
#include "memprof.h"
#include "profile.h"
#include "report.h"
#include "sampler.h"
#include "task.h"

/* The largest request that can succeed: the user address space is 47 bits on x86-64. */
#define ML_MAX_REQUEST ((uint64_t)1 << 47)

/* The sampler runs on the countdown's units: each request's n bytes, then its units beyond them
 * (1, and an aligned request's alignment), whose samples are dropped. Every byte is still
 * sampled with probability 1 / mean, independently, but the countdown, armed with sample_left,
 * now runs out exactly at the request that holds the sampled unit, not a few hundred units
 * before the sampled byte (one unit per request), which was an event of its own. Returns the
 * samples of the bytes. */
static inline uint64_t sample(ml_thread *t, uint64_t bytes, uint64_t units)
{
    uint64_t k = ml__sampler_take(&t->rng, &t->sample_left, bytes);
    ml__sampler_take(&t->rng, &t->sample_left, units > bytes ? units - bytes : 0);
    return k;
}

/* Brings every component of the countdown up to date with `bytes` requested, charged as `units`
 * (n + 1 per request of n bytes). The thread's count and the budget lease count bytes; the
 * sampler and the heap's flush interval count units, the countdown's own measure, so that
 * requests of 0 bytes, which jemalloc gives 8 usable bytes, move the interval too (heap.h). */
static inline void consume(ml_thread *t, uint64_t bytes, uint64_t units)
{
    t->allocated += bytes;
    t->samples += sample(t, bytes, units);
    t->flush_left = t->flush_left > units ? t->flush_left - units : 0;
    if (t->lease_left != ML_NONE) t->lease_left -= bytes;
}

/* The samples of the block at hand, n bytes charged `charged` units: a block of
 * ML_SAMPLER_DEFER_BYTES or more is counted apart, its samples drawn when a total is read
 * (sampler.h), and its units leave the countdown to the next sampled unit where it was (each
 * unit is sampled independently, so skipping them changes no distribution). */
static inline uint64_t sample_block(ml_thread *t, uint64_t n, uint64_t charged)
{
    if (n >= ML_SAMPLER_DEFER_BYTES) {
        ml__sampler_defer(n);
        return 0;
    }
    return sample(t, n, charged);
}

/* Arms the countdown with the smallest component. The heap's interval is armed by
 * ml__heap_admit; at 0 (a new thread, a refusal, an interval used up by one block) the next
 * allocation is an event, which arms a new one after checking it. */
static void arm(ml_thread *t)
{
    uint64_t next = 0;
    if (t->state == ML_THREAD_READY) {
        next = ML_MIN(t->sample_left, t->flush_left);
        next = ML_MIN(next, t->lease_left);
        if (t->task != NULL) next = ML_MIN(next, ml__task_left(t));
        if (ML_MEMPROF_STARTED()) next = ML_MIN(next, ml__memprof_left());
    }
    /* Armed before the thread's first allocation (ml__thread_ensure; its flush interval is 0 so
     * far, so next is too): that allocation takes one unit less off the countdown (thread.h), so
     * the countdown is one unit shorter, and runs out where the components' units do. */
    if (next != 0 && ml__thread_allocations(t) == 0) next--;
    t->armed = next;
    ml__thread_mark_arm(t);
    ML_STORE(&t->until_event, next);
}

static void thread_start(ml_thread *t)
{
    if (!ml__initialised()) ml__init();
    ml__thread_register(t);
    ml__sampler_thread_start(&t->rng, &t->sample_left, t->index);
    t->lease_left = ml__budget_total() == ML_NONE ? ML_NONE : 0;
}

/* Runs a process-wide limit's action. Returns only when the allocation is to fail (enomem, or
 * a signal the program handled or ignored). */
static ML_COLD void act(const ml_action *action)
{
    switch (action->kind) {
    case ML_ACTION_ENOMEM:
        return;
    case ML_ACTION_EXIT:
        ml__report_write("limit", action->arg, 0);
        _exit(action->arg);
    case ML_ACTION_ABORT:
        ml__report_write("limit", -1, SIGABRT);
        abort();
    case ML_ACTION_SIGNAL:
        ml__report_write("limit", -1, action->arg);
        raise(action->arg);
        return;
    }
}

/* A process-wide limit refused an allocation: record it, announce the action, act. The enomem
 * action writes nothing (the exit report has the record and the count); every other action is
 * taken at each refusal that survives the previous one. */
static ML_COLD void fire(ml_thread *t, ml_limit_kind kind, uint64_t size)
{
    const ml_config *cfg = ml__config();
    const ml_action *action = kind == ML_LIMIT_HEAP ? &cfg->on_heap : &cfg->on_alloc;
    ml__report_record(kind, t->index, ml__thread_allocations(t), size);
    ml__profile_note_firing(kind);
    ml__profile_write_limit();
    /* A process tree's. */
    ml__ledger_fired((int)kind, t->index, ml__thread_allocations(t), size, action);
    /* enomem: the program goes on, and its exit report records the refusal (with the firing's
     * callstack): one block, not a second near-identical one written at the refusal. */
    if (action->kind == ML_ACTION_ENOMEM) return;
    ml__report_announce(kind, t->index, ml__thread_allocations(t), size, action);
    act(action);
}

/* Whether the process-wide limits let the allocation at hand proceed. */
static ml_verdict decide(ml_thread *t, uint64_t n, size_t align, void *old)
{
    /* Larger than the user address space (jemalloc's largest size class is far above): fails
     * anyway, no limit is involved, and it is not counted. */
    if (n > ML_MAX_REQUEST) return ML_REFUSE;
    if (n > t->lease_left && !ml__budget_extend(t, n - t->lease_left)) {
        fire(t, ML_LIMIT_ALLOC, n);
        return ML_REFUSE;
    }
    if (ml__heap_watched()) { /* a global-memory task runs: flush at every event */
        ml__heap_flush(t);
        if (ml__heap_live() > ml__global_limit()) ml__task_global_exceeded();
    }
    if (!ml__heap_admit(t, n, align, old)) {
        ml__task_heap_refused(t); /* ml_run's ML_HEAP_CAP */
        fire(t, ML_LIMIT_HEAP, n);
        return ML_REFUSE;
    }
    return ML_ALLOW;
}

/* The common event: the countdown ran out on the sampler's component alone (or early on the
 * lease's, which counts bytes, each allocation having taken one unit more). No flush is due
 * (the units fit in the interval, or the far interval ran out on a thread that grew little and
 * ml__heap_rearm re-armed it), the lease covers the bytes (or was extended to, as decide would:
 * a lease that cannot be leaves the decision, and the firing, to event_full), no task runs, no
 * global-memory task watches the heap, and no profile samples the allocation or has anything else
 * to do (ml__memprof_pass, which then moves the profiles' streams past the units and sets *profiles
 * to their component of the next arming), so the allocation needs no decision: it lies within
 * the flush interval as a fast-path allocation would, and the heap cap's bound covers it the
 * same way (heap.h: an interval armed far below the cap is the far tier). Only the counts, the
 * samples and the countdown move. ml__memprof_pass is last: it acts only when the rest holds
 * (a re-armed interval stays re-armed if it does not: event_full's admission then finds the
 * request inside it). */
static inline int only_sampler(ml_thread *t, uint64_t spent, uint64_t units, uint64_t charged,
                               uint64_t n, uint64_t *profiles)
{
    /* n past the address space charges units that wrap (SIZE_MAX: 2^64): decide refuses it. */
    return t->state == ML_THREAD_READY && t->task == NULL && n <= ML_MAX_REQUEST &&
           !ml__heap_watched() &&
           (spent <= t->lease_left || ml__budget_extend(t, spent - t->lease_left)) &&
           (units < t->flush_left || ml__heap_rearm(t, units, charged)) &&
           (!ML_MEMPROF_STARTED() || (*profiles = ml__memprof_pass(units)) != 0);
}

/* Every other event: the full decision. `spent` bytes and `units` charged units since arming,
 * the request at hand (n bytes, `charged` units) included. */
static ML_NOINLINE ml_verdict event_full(ml_thread *t, uint64_t spent, uint64_t units,
                                         uint64_t charged, uint64_t n, size_t align, void *old)
{
    t->armed = 0;
    ML_STORE(&t->until_event, 0);
    ml__thread_mark_arm(t);
    if (ML_UNLIKELY(t->state == ML_THREAD_NEW)) thread_start(t);
    consume(t, spent - n, units - charged);
    ml_verdict verdict = decide(t, n, align, old);
    if (verdict == ML_ALLOW && t->task != NULL) verdict = ml__task_decide(t, n);
    if (verdict == ML_ALLOW) {
        t->allocated += n;
        t->samples += sample_block(t, n, charged);
        t->flush_left = t->flush_left > charged ? t->flush_left - charged : 0;
        if (t->lease_left != ML_NONE) t->lease_left -= n;
    } else if (ML_LOAD(&t->heap_reserved) != 0)
        ml__heap_flush(t); /* the block the heap admitted will not be allocated */
    if (ML_MEMPROF_STARTED())
        ml__memprof_take(t, units - charged, verdict == ML_ALLOW ? n : 0,
                         verdict == ML_ALLOW ? charged - n : 0);
    arm(t);
    ml__busy_leave(t);
    return verdict;
}

/* Arms the countdown after a short or large event, whose components are known to need no
 * check: the sampler's, the interval's, the lease's and the profiles' (ML_NONE: none). */
static inline void arm_short(ml_thread *t, uint64_t profiles)
{
    uint64_t next = ML_MIN(t->sample_left, t->flush_left);
    next = ML_MIN(next, t->lease_left);
    next = ML_MIN(next, profiles);
    t->armed = next;
    ml__thread_mark_arm(t);
    ML_STORE(&t->until_event, next);
}

/* The common event's bookkeeping, once only_sampler holds: the counts, the samples and the
 * countdown. */
static inline void event_short(ml_thread *t, uint64_t spent, uint64_t units, uint64_t charged,
                               uint64_t n, uint64_t profiles)
{
    /* consume(spent - n), then consume(n): the units before this allocation hold no sampled
     * unit (they were all below the countdown), so the samples are this block's. */
    t->allocated += spent;
    t->flush_left -= units;
    if (t->lease_left != ML_NONE) t->lease_left -= spent;
    t->sample_left -= units - charged;
    t->samples += sample_block(t, n, charged);
    arm_short(t, profiles);
}

/* The ordinary paths, from the state alone (busy): the short event or the full one. */
static inline __attribute__((always_inline)) ml_verdict event_ordinary(ml_thread *t, uint64_t n,
                                                                       size_t align, void *old)
{
    uint64_t units = ml__units_since_arm(t);       /* units, n's included */
    uint64_t spent = ml__bytes_of_units(t, units); /* bytes, n included */
    uint64_t charged = ml__charged_units(n, align), profiles = ML_NONE;
    if (ML_UNLIKELY(!only_sampler(t, spent, units, charged, n, &profiles)))
        return event_full(t, spent, units, charged, n, align, old);
    event_short(t, spent, units, charged, n, profiles);
    ml__busy_leave(t);
    return ML_ALLOW;
}

/* The same, out of line, for event_large's fallbacks. */
static ML_NOINLINE ml_verdict event_any(ml_thread *t, uint64_t n, size_t align, void *old)
{
    return event_ordinary(t, n, align, old);
}

/* A large block's event (ML_PEAK_BLOCK bytes or more, malloc's alignment, no old block: ml__event
 * sends it here), in one pass when the block needs only the process-wide limits and the peak: no
 * task, no global-memory task, no profile, no process tree. The lease is extended if short; the
 * heap admits the block with one flush that reserves it (ml__heap_admit_large), which
 * ml__event_after marks allocated instead of a second flush (ml__heap_allocated); its samples are
 * deferred (sampler.h). When the budget or the cap would refuse it, the extension and the flush are
 * all that was done, and event_full decides (and fires). Every other large block takes the ordinary
 * paths. */
static ML_NOINLINE ml_verdict event_large(ml_thread *t, uint64_t n)
{
    if (!ml__busy_enter(t)) return ML_ALLOW;
    if (ML_UNLIKELY(t->state != ML_THREAD_READY || t->task != NULL || ml__heap_watched() ||
                    ML_MEMPROF_STARTED() || ml__ledger_attached()))
        return event_any(t, n, 0, NULL);
    uint64_t units = ml__units_since_arm(t), lease = t->lease_left;
    uint64_t spent = ml__bytes_of_units(t, units);
    /* Values kept across the calls, not the six they are computed from. */
    __asm__("" : "+r"(spent), "+r"(units));
    /* No tree (checked above): the process's own pool. */
    if ((spent > lease && !ml__budget_lease_pool(t, spent - lease)) || !ml__heap_admit_large(t, n))
        return event_any(t, n, 0, NULL);
    t->allocated += spent;
    if (t->lease_left != ML_NONE) t->lease_left -= spent;
    ml__sampler_defer(n);
    if (units != n + 1) t->samples += sample(t, spent - n, units - (n + 1)); /* before it */
    arm_short(t, ML_NONE);
    ml__busy_leave(t);
    return ML_ALLOW;
}

/* Whether a request of n bytes (malloc's alignment, no old block) takes event_large: one compare
 * for both ends, requests past the address space taking the ordinary paths, whose decision
 * refuses them. */
static inline int large_pass(uint64_t n)
{
    return n - ML_PEAK_BLOCK <= ML_MAX_REQUEST - ML_PEAK_BLOCK;
}

ml_verdict ml__event(uint64_t n, size_t align, void *old)
{
    ml_thread *t = &ml__self;
    if (large_pass(n) && (align | (uintptr_t)old) == 0) return event_large(t, n);
    if (!ml__busy_enter(t)) return ML_ALLOW;
    return event_ordinary(t, n, align, old);
}

ml_verdict ml__event_plain(uint64_t n)
{
    if (large_pass(n)) return event_large(&ml__self, n);
    return ml__event(n, 0, NULL);
}

_Static_assert(ML_QUICK_BELOW == ML_PEAK_BLOCK, "ml__event_quick's blocks need no flush after");

int ml__event_quick_small(uint64_t n)
{
    ml_thread *t = &ml__self;
    if (!ml__busy_enter(t)) return 0;
    uint64_t units = ml__units_since_arm(t);
    uint64_t spent = ml__bytes_of_units(t, units);
    uint64_t profiles = ML_NONE;
    /* Queued free callbacks run after the allocation, in the slow half: not a quick one. */
    int quick = !(ML_MEMPROF_STARTED() && ml__memprof_pending()) &&
                only_sampler(t, spent, units, n + 1, n, &profiles);
    if (ML_LIKELY(quick)) event_short(t, spent, units, n + 1, n, profiles);
    ml__busy_leave(t);
    return quick;
}

void ml__event_refund(uint64_t n)
{
    ml_thread *t = &ml__self;
    if (!ml__busy_enter(t)) return; /* a nested allocation was never counted */
    t->allocated -= n;
    if (t->lease_left != ML_NONE) t->lease_left += n;
    ml__heap_flush(t);         /* gives back the block's reservation */
    ml__thread_force_event(t); /* re-arm the task limits against the corrected count */
    ml__busy_leave(t);
}

static ML_NOINLINE void flush_after(ml_thread *t)
{
    if (!ml__busy_enter(t)) return;
    ml__heap_flush(t);
    ml__busy_leave(t);
}

void ml__event_after(uint64_t n)
{
    ml_thread *t = &ml__self;
    /* A reservation is marked allocated (heap.h: it stays in the sum until a flush settles it,
     * and the peak sees it now); in a process tree, whose ledger hears of the figures at
     * flushes, it is flushed. A large block without one is flushed if it grew the thread by
     * that much (ml__heap_unflushed: not a realloc that grew it a little), so that the peak
     * sees it even if it is freed before the thread's next event. The mark is a store and a
     * compare (inline), the flush out of line: this is called after every admitted allocation
     * of the slow path. */
    int64_t reserved = ML_LOAD(&t->heap_reserved);
    if (reserved != 0 && !ml__ledger_attached()) return ml__heap_allocated(t);
    if (t->state == ML_THREAD_NEW || (reserved == 0 && n < ML_PEAK_BLOCK)) return;
    if (reserved == 0 && !ml__ledger_attached() && ml__heap_unflushed(t) < (int64_t)ML_PEAK_BLOCK)
        return; /* a realloc that grew its block by less */
    flush_after(t);
}

void ml__thread_ensure(void)
{
    ml_thread *t = &ml__self;
    if (t->state != ML_THREAD_NEW || !ml__busy_enter(t)) return;
    thread_start(t);
    arm(t);
    ml__busy_leave(t);
}
