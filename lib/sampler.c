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

/* xoshiro256** (Blackman and Vigna), inline here: the draws of one event are a handful. */
static inline uint64_t next(ml_rng *r)
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

/* 53 random bits; adding one maps [0, 2^53) onto (0, 1]. */
static inline double unit(ml_rng *r)
{
    return (double)(int64_t)((next(r) >> 11) + 1) * 0x1.0p-53; /* signed: one cvtsi2sd */
}

uint64_t ml__rng_next(ml_rng *r)
{
    return next(r);
}

double ml__rng_unit(ml_rng *r)
{
    return unit(r);
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

/* Per mean (set with the mean): p, the bytes from which a block's count is drawn at once, and
 * the tail of Stirling's series of log k! for k < 10, where the series is not yet accurate. */
static double sample_p = 1.0 / 80000, sample_ratio = 1.0 / 79999, stirling_small[10];
static uint64_t loop_bytes = ML_SAMPLER_LOOP_MAX * (uint64_t)80000;

/* fc(k) = log k! - ((k + 1/2) log(k + 1) - (k + 1) + log sqrt(2 pi)): the tail of Stirling's
 * series, 1/12z - 1/360z^3 + 1/1260z^5 with z = k + 1 (error below 1e-11 from k = 10). */
static double stirling_tail(double k)
{
    if (k < 10) return stirling_small[(int)k];
    double z = k + 1, zz = z * z;
    return (1.0 / 12 - (1.0 / 360 - 1.0 / 1260 / zz) / zz) / z;
}

static void set_binomial(uint64_t mean)
{
    sample_p = mean <= 1 ? 1.0 : 1.0 / (double)mean;
    sample_ratio = mean <= 1 ? 0.0 : 1.0 / (double)(mean - 1); /* p / (1 - p) */
    loop_bytes = mean <= 1 ? UINT64_MAX : ML_SAMPLER_LOOP_MAX * mean;
    for (int k = 0; k < 10; k++)
        stirling_small[k] =
            lgamma(k + 1.0) - ((k + 0.5) * log(k + 1.0) - (k + 1.0) + 0.9189385332046728);
}

void ml__sampler_set_mean(uint64_t mean)
{
    if (log_table[256] == 0) fill_log_table();
    mean_gap = mean;
    inv_log_q = mean <= 1 ? 0.0 : 1.0 / log1p(-1.0 / (double)mean);
    set_binomial(mean);
}

uint64_t ml__sampler_mean(void)
{
    return mean_gap;
}

/* The deferred blocks' account (sampler.h): bytes deferred, bytes already drawn for, the samples
 * drawn, and the generator, stream ML_DEFERRED_STREAM of the process seed (threads use the
 * streams of their 32-bit registration indexes). */
#define ML_DEFERRED_STREAM ((uint64_t)1 << 32)
uint64_t ml__sampler_deferred_bytes;
static uint64_t deferred_drawn, deferred_samples;
static ml_rng deferred_rng;
static int deferred_seeded;

static uint64_t process_seed;

void ml__sampler_set_seed(uint64_t seed)
{
    process_seed = seed;
    deferred_seeded = 0;
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
    return (uint64_t)(int64_t)(fast_log(unit(r)) * inv_log_q) + 1;
}

/* floor(x) for 0 <= x < 2^63, without libm (no SSE4.1 rounding in the x86-64 baseline). */
static inline double floor_nonneg(double x)
{
    return (double)(int64_t)x;
}

/* Binomial(n, p) for 0 < p <= 1/2 and n p >= ML_SAMPLER_LOOP_MAX (ml__sampler_binomial's
 * contract, with p passed in: a profile's streams have their own mean). */
static uint64_t binomial_p(ml_rng *r, uint64_t n, double p, double ratio)
{
    /* Hormann's BTRD, p <= 1/2. A proposal k from a transformed uniform u, under a hat of
     * area alpha; most draws fall in the region of the hat known to lie under the distribution
     * and are taken at once (step 1). The others are tested against f(k)/f(m), f the binomial
     * probabilities and m the mode: by the recurrence of f when k is near m, otherwise after a
     * squeeze from the normal approximation, by logarithms of ratios (Stirling's series for the
     * factorials), so that nothing cancels at large n. */
    const double dn = (double)(int64_t)n;
    const double npq = dn * p * (1 - p), spq = sqrt(npq);
    const double b = 1.15 + 2.53 * spq, inv_b = 1 / b, a = -0.0873 + 0.0248 * b + 0.01 * p;
    const double c = dn * p + 0.5, alpha = (2.83 + 5.1 * inv_b) * spq;
    const double v_r = 0.92 - 4.2 * inv_b, urvr = 0.86 * v_r, inv_v_r = 1 / v_r;
    const double m = floor_nonneg((dn + 1) * p), nr = (dn + 1) * ratio;
    for (;;) {
        double v = unit(r), u;
        if (v <= urvr) { /* step 1: inside the hat's region under f */
            u = v * inv_v_r - 0.43;
            double x = (2 * a / (0.5 - fabs(u)) + b) * u + c;
            if (x >= 0 && x < dn + 1) return (uint64_t)x;
            continue;
        }
        if (v >= v_r) { /* step 2 */
            u = unit(r) - 0.5;
        } else {
            u = v * inv_v_r - 0.93;
            u = (u < 0 ? -0.5 : 0.5) - u;
            v = unit(r) * v_r;
        }
        double us = 0.5 - fabs(u); /* step 3.0 */
        if (!(us > 0)) continue;
        double x = (2 * a / us + b) * u + c;
        if (!(x >= 0 && x < dn + 1)) continue;
        double k = floor_nonneg(x);
        v = v * alpha / (a / (us * us) + b);
        double km = fabs(k - m);
        if (km <= 15) { /* step 3.1: f(k)/f(m) by the recurrence f(i)/f(i-1) = nr/i - ratio */
            double f = 1;
            if (m < k) {
                for (double i = m + 1; i <= k; i++)
                    f *= nr / i - ratio;
            } else {
                for (double i = k + 1; i <= m; i++)
                    v *= nr / i - ratio;
            }
            if (v <= f) return (uint64_t)k;
            continue;
        }
        v = log(v); /* step 3.2: squeeze */
        double rho = (km / npq) * (((km / 3 + 0.625) * km + 1.0 / 6) / npq + 0.5);
        double t = -km * km / (2 * npq);
        if (v < t - rho) return (uint64_t)k;
        if (v > t + rho) continue;
        double nm = dn - m + 1, nk = dn - k + 1; /* step 3.3 */
        double h =
            (m + 0.5) * log((m + 1) / (ratio * nm)) + stirling_tail(m) + stirling_tail(dn - m);
        if (v <= h + (dn + 1) * log(nm / nk) + (k + 0.5) * log(nk * ratio / (k + 1)) -
                     stirling_tail(k) - stirling_tail(dn - k))
            return (uint64_t)k;
    }
}

uint64_t ml__sampler_binomial(ml_rng *r, uint64_t n)
{
    return binomial_p(r, n, sample_p, sample_ratio);
}

uint64_t ml__sampler_take_hit(ml_rng *r, uint64_t *left, uint64_t n)
{
    /* n >= *left: the byte at *left is sampled; the rest after it are independent. */
    uint64_t count = 1, rest = n - *left, gap;
    if (mean_gap <= 1) { /* every byte */
        *left = 1;
        return count + rest;
    }
    if (rest >= loop_bytes) {
        count += ml__sampler_binomial(r, rest);
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

uint64_t ml__sampler_deferred_samples(void)
{
    uint64_t bytes = ML_LOAD(&ml__sampler_deferred_bytes), rest = bytes - deferred_drawn;
    if (rest == 0) return deferred_samples;
    if (!deferred_seeded) {
        ml__rng_seed(&deferred_rng, process_seed, ML_DEFERRED_STREAM);
        deferred_seeded = 1;
    }
    /* Binomial(rest, 1/mean): the bytes up to a first gap hold no sample; from that sampled
     * byte on, ml__sampler_take_hit counts the rest exactly (by BTRD when they are many). */
    uint64_t left = ml__sampler_gap(&deferred_rng);
    if (left <= rest) deferred_samples += ml__sampler_take_hit(&deferred_rng, &left, rest);
    deferred_drawn = bytes;
    return deferred_samples;
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
    if (mean > 1 && rest / mean >= ML_SAMPLER_LOOP_MAX) {
        double p = 1.0 / (double)mean;
        count += binomial_p(r, rest, p, p / (1 - p));
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
