/* The allocation sampler (the Memprof engine): every allocated byte is sampled independently with
 * probability 1/mean, drawn as geometric gaps carried across allocations, per thread. A block of
 * n bytes thus carries Binomial(n, 1/mean) samples. Limits do not depend on it; it feeds the
 * report's sample count and estimate, and is the base a heap profiler would build on. */
#ifndef ML_SAMPLER_H
#define ML_SAMPLER_H

#include <stdint.h>

#include "common.h"

typedef struct ml_rng {
    uint64_t s[4]; /* xoshiro256** state */
} ml_rng;

/* Seeds a generator for stream `index` of `seed`: streams of one seed are independent. */
void ml__rng_seed(ml_rng *r, uint64_t seed, uint64_t index);
uint64_t ml__rng_next(ml_rng *r);
/* A uniform double in (0, 1]. */
double ml__rng_unit(ml_rng *r);

/* Sets the process's seed: thread i draws from stream i of it (ml__sampler_thread_start). Init
 * only, before any thread starts sampling. */
void ml__sampler_set_seed(uint64_t seed);
/* Seeds the generator of the thread registered as `index` and draws its first gap into *left. */
void ml__sampler_thread_start(ml_rng *r, uint64_t *left, uint32_t index);

/* Sets the mean gap (bytes, >= 1) for every thread's sampler. Call before any draw. */
void ml__sampler_set_mean(uint64_t mean);
uint64_t ml__sampler_mean(void);
/* A gap: Geometric(1/mean) on {1, 2, ...}, the distance to the next sampled byte. */
uint64_t ml__sampler_gap(ml_rng *r);
/* Consumes n allocated bytes against *left (bytes up to and including the next sampled byte,
 * >= 1) and returns the number of sampled bytes among them; *left is refreshed. The cost does
 * not grow with n: no sampled byte among them is a subtraction, inline; past the first sampled
 * byte the bytes left are sampled independently (memoryless gaps), so their count is drawn
 * exactly as Binomial(rest, 1/mean): gap by gap when fewer than ML_SAMPLER_LOOP_MAX samples are
 * expected, by Hormann's BTRD rejection sampler (ml__sampler_binomial) otherwise, and the gap
 * to the next sampled byte after the block is a fresh draw. A block of n bytes thus carries
 * Binomial(n, 1/mean) samples, whatever n. */
#define ML_SAMPLER_LOOP_MAX 10
uint64_t ml__sampler_take_hit(ml_rng *r, uint64_t *left, uint64_t n);
static inline uint64_t ml__sampler_take(ml_rng *r, uint64_t *left, uint64_t n)
{
    if (ML_LIKELY(n < *left)) {
        *left -= n;
        return 0;
    }
    return ml__sampler_take_hit(r, left, n);
}
/* Blocks of ML_SAMPLER_DEFER_BYTES or more: their bytes are not sampled gap by gap on the
 * allocating thread but counted apart (ml__sampler_defer, one atomic add), and their samples are
 * drawn when a total is read (ml__sampler_deferred_samples), as one Binomial(bytes deferred since
 * the last read, 1/mean) from a generator of the process seed's own. Bytes are sampled
 * independently, so which of them a count is drawn for changes nothing in the total's
 * distribution: over any set of bytes it is Binomial(bytes, 1/mean), as if drawn gap by gap. A
 * thread's gap skips the deferred blocks (memoryless gaps: the next sampled byte of its other
 * allocations is as far as before). Only totals (statistics, reports) count these samples: a
 * profile (Memprof) draws its own, per block. */
#define ML_SAMPLER_DEFER_BYTES ((uint64_t)64 << 10)
extern ML_HIDDEN uint64_t ml__sampler_deferred_bytes;
static inline void ml__sampler_defer(uint64_t n)
{
    __atomic_add_fetch(&ml__sampler_deferred_bytes, n, __ATOMIC_RELAXED);
}
/* Draws the samples of the bytes deferred since the last call and returns every deferred byte's
 * samples so far. Reproducible with the seed: the draws depend only on the bytes deferred at each
 * call. The caller serialises the calls (thread.c: under the registry lock). */
uint64_t ml__sampler_deferred_samples(void);

/* Binomial(n, 1/mean), exactly, in expected constant time (mean >= 2, n / mean >=
 * ML_SAMPLER_LOOP_MAX): algorithm BTRD, the transformed rejection with decomposition of W.
 * Hormann, "The generation of binomial random variates", J. Statist. Comput. Simul. 46 (1993).
 * Most draws take one uniform and no logarithm. */
uint64_t ml__sampler_binomial(ml_rng *r, uint64_t n);

/* The same for a stream with its own mean (a profile's): `inv` is ml__sampler_param(mean). */
double ml__sampler_param(uint64_t mean);
uint64_t ml__sampler_gap_with(ml_rng *r, uint64_t mean, double inv);
uint64_t ml__sampler_take_with(ml_rng *r, uint64_t *left, uint64_t n, uint64_t mean, double inv);
/* The process seed set by ml__sampler_set_seed. */
uint64_t ml__sampler_process_seed(void);

#endif
