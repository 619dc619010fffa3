/* The sampler's large-block path (issue 8): a block whose expected sample count after its first
 * sample reaches ML_SAMPLER_EXACT_MAX has that count drawn from the normal approximation of the
 * binomial (sampler.c). At the default mean gap only blocks of more than 5 GiB take it, so these
 * tests use a mean gap of 64 bytes, at which an 8 MiB block carries 131072 samples on average.
 * Bounds are derived from Binomial(n, p), p = 1/64, with a fixed seed: the sample mean within 5
 * standard errors, the sample variance within 5 of its standard errors, every single draw within
 * 6 standard deviations (for N draws a correct sampler fails these with probability < 1e-5). */
#include <criterion/criterion.h>
#include <math.h>

#include "sampler.h"

#define SEED 20240509u
#define MEAN_GAP 64

/* Draws `draws` blocks of n bytes in a row (the gap carried from block to block, as a thread
 * does) and checks their sample counts against Binomial(n, 1/MEAN_GAP). */
static void check_blocks(uint64_t n, int draws, uint64_t stream)
{
    const double p = 1.0 / MEAN_GAP, N = draws;
    const double mean = (double)n * p, var = mean * (1 - p), sd = sqrt(var);
    /* The path under test: the bytes after the first sample, n minus a gap of mean 64 (below
     * 40 means but with probability e^-40), carry at least ML_SAMPLER_EXACT_MAX expected
     * samples. */
    cr_assert_geq((double)(n - 40 * MEAN_GAP) * p, ML_SAMPLER_EXACT_MAX);
    ml_rng r;
    ml__sampler_set_mean(MEAN_GAP);
    ml__rng_seed(&r, SEED, stream);
    uint64_t left = ml__sampler_gap(&r);
    double sum = 0, sumsq = 0;
    for (int i = 0; i < draws; i++) {
        double k = (double)ml__sampler_take(&r, &left, n);
        cr_assert_lt(fabs(k - mean), 6 * sd, "block %d of %llu bytes: %.0f samples, expected %.1f",
                     i, (unsigned long long)n, k, mean);
        cr_assert_geq(left, 1);
        sum += k;
        sumsq += k * k;
    }
    double m = sum / N, v = (sumsq - N * m * m) / (N - 1);
    /* The count is close to normal (kurtosis 3): the sample variance has standard error
     * var * sqrt(2 / (N - 1)). */
    cr_expect_lt(fabs(m - mean), 5 * sd / sqrt(N),
                 "mean %.2f samples per %llu-byte block, "
                 "expected %.2f (standard error %.3f)",
                 m, (unsigned long long)n, mean, sd / sqrt(N));
    cr_expect_lt(fabs(v / var - 1), 5 * sqrt(2 / (N - 1)),
                 "variance %.1f, expected %.1f (ratio %.4f)", v, var, v / var);
}

Test(sampling, large_blocks_at_a_small_mean_gap_carry_binomial_samples)
{
    check_blocks((uint64_t)8 << 20, 20000, 1);
}

Test(sampling, blocks_just_past_the_exact_limit_carry_binomial_samples)
{
    /* 6 MiB: after the first sample, about 98300 expected samples, 1.5 times the limit. */
    check_blocks((uint64_t)6 << 20, 20000, 2);
}

Test(sampling, large_blocks_between_small_ones_keep_the_total_binomial)
{
    /* Small blocks (exact path) and large ones (normal path) interleaved: the total over all of
     * them is Binomial(total bytes, p). */
    const double p = 1.0 / MEAN_GAP;
    const uint64_t small = 1000, large = (uint64_t)8 << 20;
    const int rounds = 2000, smalls = 100;
    ml_rng r;
    ml__sampler_set_mean(MEAN_GAP);
    ml__rng_seed(&r, SEED, 3);
    uint64_t left = ml__sampler_gap(&r), total = 0;
    for (int i = 0; i < rounds; i++) {
        for (int j = 0; j < smalls; j++)
            total += ml__sampler_take(&r, &left, small);
        total += ml__sampler_take(&r, &left, large);
    }
    double bytes = (double)rounds * (double)(smalls * small + large);
    double mean = bytes * p, sd = sqrt(bytes * p * (1 - p));
    cr_expect_lt(fabs((double)total - mean), 5 * sd, "%llu samples, expected %.0f (sd %.1f)",
                 (unsigned long long)total, mean, sd);
}
