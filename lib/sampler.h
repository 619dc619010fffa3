/* The allocation sampler (the Memprof engine): every allocated byte is sampled independently with
 * probability 1/mean, drawn as geometric gaps carried across allocations, per thread. A block of
 * n bytes thus carries Binomial(n, 1/mean) samples. Limits do not depend on it; it feeds the
 * report's sample count and estimate, and is the base a heap profiler would build on. */
#ifndef ML_SAMPLER_H
#define ML_SAMPLER_H

#include <stdint.h>

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
 * >= 1) and returns the number of sampled bytes among them; *left is refreshed. The count is
 * drawn gap by gap, exactly, up to ML_SAMPLER_EXACT_MAX expected samples in a block; beyond
 * that (a block of more than 5 GiB at the default mean) the count after the first sample is
 * drawn from the normal approximation of the binomial, so the cost stays bounded. */
#define ML_SAMPLER_EXACT_MAX 65536
uint64_t ml__sampler_take(ml_rng *r, uint64_t *left, uint64_t n);

/* The same for a stream with its own mean (a profile's): `inv` is ml__sampler_param(mean). */
double ml__sampler_param(uint64_t mean);
uint64_t ml__sampler_gap_with(ml_rng *r, uint64_t mean, double inv);
uint64_t ml__sampler_take_with(ml_rng *r, uint64_t *left, uint64_t n, uint64_t mean, double inv);
/* The process seed set by ml__sampler_set_seed. */
uint64_t ml__sampler_process_seed(void);

#endif
