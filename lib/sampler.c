/* Geometric-gap sampling (see sampler.h). With p = 1/mean, the gap G between sampled bytes is
 * 1 + floor(ln U / ln(1 - p)) for U uniform in (0, 1], so P(G = k) = (1 - p)^(k-1) p. Because
 * the geometric distribution is memoryless, the bytes of a block after its first sample are
 * sampled independently, which makes the count in an n-byte block Binomial(n, p). */
#include "sampler.h"

#include <math.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void ml__rng_seed(ml_rng *r, uint64_t seed, uint64_t index)
{
    /* Distinct streams: the index is mixed in before the state is expanded by splitmix64. */
    uint64_t x = seed ^ (index * 0xd1342543de82ef95ull + 0x2545f4914f6cdd1dull);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t ml__rng_next(ml_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double ml__rng_unit(ml_rng *r)
{
    /* 53 random bits; adding one maps [0, 2^53) onto (0, 1]. */
    return (double)(int64_t)((ml__rng_next(r) >> 11) + 1) * 0x1.0p-53; /* signed: one cvtsi2sd */
}

static uint64_t mean_gap = 80000;
static double inv_log_q = -1.0 / 1.25000781e-05; /* 1 / ln(1 - 1/80000) */

/* ln(1 + i/256) for i = 0..256: fast_log interpolates in it. One libm log per sample cost as
 * much as the rest of a realloc-heavy program's slow path; the table brings it to a few
 * multiplications. Linear interpolation over cells of 1/256 errs by at most 2e-6 in ln U, which
 * moves a gap of mean 80000 by less than a fifth of a byte. */
static double log_table[257];

static void fill_log_table(void)
{
    for (int i = 0; i <= 256; i++)
        log_table[i] = log1p(i / 256.0);
}

/* ln u for u in (0, 1], u a normal double. */
static double fast_log(double u)
{
    uint64_t bits;
    memcpy(&bits, &u, sizeof bits);
    int exponent = (int)((bits >> 52) & 0x7ff) - 1023;
    uint64_t mantissa = bits & (((uint64_t)1 << 52) - 1); /* u = 2^exponent * (1 + mantissa/2^52) */
    unsigned cell = (unsigned)(mantissa >> 44);
    double within = (double)(int64_t)(mantissa & (((uint64_t)1 << 44) - 1)) * 0x1p-44;
    double lo = log_table[cell], hi = log_table[cell + 1];
    return lo + (hi - lo) * within + exponent * 0.6931471805599453;
}

void ml__sampler_set_mean(uint64_t mean)
{
    if (log_table[256] == 0) fill_log_table();
    mean_gap = mean;
    inv_log_q = mean <= 1 ? 0.0 : 1.0 / log1p(-1.0 / (double)mean);
}

uint64_t ml__sampler_mean(void)
{
    return mean_gap;
}

static uint64_t process_seed;

void ml__sampler_set_seed(uint64_t seed)
{
    process_seed = seed;
}

void ml__sampler_thread_start(ml_rng *r, uint64_t *left, uint32_t index)
{
    ml__rng_seed(r, process_seed, index);
    *left = ml__sampler_gap(r);
}

uint64_t ml__sampler_gap(ml_rng *r)
{
    if (mean_gap <= 1) return 1;
    /* ln U <= 0 and inv_log_q < 0, so the product is >= 0 and truncation is floor. ln U >= -37
     * for 53-bit U, so it stays below 37 * mean: no overflow for mean <= 2^40. */
    return (uint64_t)(int64_t)(fast_log(ml__rng_unit(r)) * inv_log_q) + 1;
}

/* Binomial(n, p) by its normal approximation, for n p >= ML_SAMPLER_EXACT_MAX. */
static uint64_t binomial_normal(ml_rng *r, uint64_t n, double p)
{
    double mean = (double)n * p, sd = sqrt(mean * (1 - p));
    double z = sqrt(-2 * log(ml__rng_unit(r))) * cos(6.283185307179586 * ml__rng_unit(r));
    double k = floor(mean + sd * z + 0.5);
    return k < 0 ? 0 : k > (double)n ? n : (uint64_t)k;
}

uint64_t ml__sampler_take(ml_rng *r, uint64_t *left, uint64_t n)
{
    if (n < *left) {
        *left -= n;
        return 0;
    }
    uint64_t count = 1, rest = n - *left, gap;
    if (mean_gap > 1 && rest / mean_gap >= ML_SAMPLER_EXACT_MAX) {
        /* Memoryless gaps: the bytes after the first sample are independent, and the gap to the
         * next sample after the block is a fresh draw. */
        count += binomial_normal(r, rest, 1.0 / (double)mean_gap);
        *left = ml__sampler_gap(r);
        return count;
    }
    while ((gap = ml__sampler_gap(r)) <= rest) {
        rest -= gap;
        count++;
    }
    *left = gap - rest;
    return count;
}

/* Streams with their own mean (the profiler's profiles, each with its own gap): the same draws
 * as above with the mean passed in. */
double ml__sampler_param(uint64_t mean)
{
    if (log_table[256] == 0) fill_log_table();
    return mean <= 1 ? 0.0 : 1.0 / log1p(-1.0 / (double)mean);
}

uint64_t ml__sampler_process_seed(void)
{
    return process_seed;
}

static uint64_t gap_with(ml_rng *r, uint64_t mean, double inv)
{
    if (mean <= 1) return 1;
    return (uint64_t)(int64_t)(fast_log(ml__rng_unit(r)) * inv) + 1;
}

uint64_t ml__sampler_gap_with(ml_rng *r, uint64_t mean, double inv)
{
    return gap_with(r, mean, inv);
}

uint64_t ml__sampler_take_with(ml_rng *r, uint64_t *left, uint64_t n, uint64_t mean, double inv)
{
    if (n < *left) {
        *left -= n;
        return 0;
    }
    uint64_t count = 1, rest = n - *left, gap;
    if (mean > 1 && rest / mean >= ML_SAMPLER_EXACT_MAX) {
        count += binomial_normal(r, rest, 1.0 / (double)mean);
        *left = gap_with(r, mean, inv);
        return count;
    }
    while ((gap = gap_with(r, mean, inv)) <= rest) {
        rest -= gap;
        count++;
    }
    *left = gap - rest;
    return count;
}
