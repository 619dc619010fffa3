/* The sampler's statistics, with fixed seeds and bounds derived from the distributions: each
 * bound is 5 standard errors wide, so a correct sampler fails one with probability < 1e-6. */
#include <criterion/criterion.h>
#include <math.h>

#include "sampler.h"

#define SEED 12345u

Test(sampler, same_seed_and_stream_reproduce_the_same_gaps)
{
    ml_rng a, b;
    ml__sampler_set_mean(80000);
    ml__rng_seed(&a, SEED, 3);
    ml__rng_seed(&b, SEED, 3);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(ml__sampler_gap(&a), ml__sampler_gap(&b));
}

Test(sampler, mean_and_variance_of_gaps_match_geometric)
{
    /* Geometric(p), p = 1/m: mean m, variance (1-p)/p^2 ~ m^2. The standard error of the sample
     * mean is sd/sqrt(N); that of the sample variance is about var*sqrt((kurtosis-1)/N), with
     * kurtosis ~ 9 as for the exponential. */
    const double m = 80000, N = 200000;
    ml_rng r;
    ml__sampler_set_mean((uint64_t)m);
    ml__rng_seed(&r, SEED, 0);
    double sum = 0, sumsq = 0;
    uint64_t below_mean = 0;
    for (int i = 0; i < (int)N; i++) {
        double g = (double)ml__sampler_gap(&r);
        cr_assert_geq(g, 1);
        sum += g;
        sumsq += g * g;
        below_mean += g <= m;
    }
    double mean = sum / N, var = sumsq / N - mean * mean;
    double sd = sqrt((1 - 1 / m) * m * m);
    cr_assert_lt(fabs(mean - m), 5 * sd / sqrt(N), "mean gap %f, expected %f", mean, m);
    cr_assert_lt(fabs(var / (sd * sd) - 1), 5 * sqrt(8 / N), "variance ratio %f", var / (sd * sd));
    /* P(G <= m) = 1 - (1 - 1/m)^m */
    double p = 1 - pow(1 - 1 / m, m), frac = (double)below_mean / N;
    cr_assert_lt(fabs(frac - p), 5 * sqrt(p * (1 - p) / N), "P(G<=m) %f, expected %f", frac, p);
}

Test(sampler, small_blocks_carry_binomial_samples)
{
    /* 10^6 blocks of 100 bytes, p = 1/1000: the total is Binomial(10^8, p); the fraction of
     * blocks with at least one sample is 1 - (1-p)^100. */
    const double p = 1.0 / 1000, blocks = 1e6, n = 100;
    ml_rng r;
    ml__sampler_set_mean(1000);
    ml__rng_seed(&r, SEED, 1);
    uint64_t left = ml__sampler_gap(&r), total = 0, hit = 0;
    for (int i = 0; i < (int)blocks; i++) {
        uint64_t k = ml__sampler_take(&r, &left, (uint64_t)n);
        total += k;
        hit += k > 0;
    }
    double mean = blocks * n * p, sd = sqrt(blocks * n * p * (1 - p));
    cr_assert_lt(fabs((double)total - mean), 5 * sd, "samples %lu, expected %f", total, mean);
    double q = 1 - pow(1 - p, n), frac = (double)hit / blocks;
    cr_assert_lt(fabs(frac - q), 5 * sqrt(q * (1 - q) / blocks), "fraction %f vs %f", frac, q);
}

Test(sampler, huge_blocks_carry_binomial_samples)
{
    /* 1 GiB blocks, p = 1/80000: Binomial(2^30, p), mean 13421.8, sd 115.8. Each of 40 draws is
     * within 5 sd, and their average within 5 sd/sqrt(40). */
    const double n = 1073741824.0, p = 1.0 / 80000;
    ml_rng r;
    ml__sampler_set_mean(80000);
    ml__rng_seed(&r, SEED, 2);
    uint64_t left = ml__sampler_gap(&r);
    double mean = n * p, sd = sqrt(n * p * (1 - p)), sum = 0;
    for (int i = 0; i < 40; i++) {
        double k = (double)ml__sampler_take(&r, &left, (uint64_t)n);
        cr_assert_lt(fabs(k - mean), 5 * sd, "draw %d: %f samples, expected %f", i, k, mean);
        sum += k;
    }
    cr_assert_lt(fabs(sum / 40 - mean), 5 * sd / sqrt(40));
}

Test(sampler, counts_do_not_depend_on_how_bytes_are_split)
{
    /* The same bytes taken as one block or as many carry the same samples (the gaps carry
     * across allocations): with equal seeds the totals are identical, as long as the block
     * expects fewer than ML_SAMPLER_LOOP_MAX samples and its gaps are drawn one by one (40000
     * bytes at mean 5000: 8). A larger block's count is drawn at once, from the same
     * distribution but not from the same random numbers: test_sampler_large.c compares the
     * distributions there. */
    ml_rng a, b;
    ml__sampler_set_mean(5000);
    ml__rng_seed(&a, SEED, 4);
    ml__rng_seed(&b, SEED, 4);
    uint64_t la = ml__sampler_gap(&a), lb = ml__sampler_gap(&b), ka = 0, kb = 0;
    for (int block = 0; block < 1000; block++) {
        ka += ml__sampler_take(&a, &la, 40000);
        for (int i = 0; i < 400; i++)
            kb += ml__sampler_take(&b, &lb, 100);
        cr_assert_eq(ka, kb);
        cr_assert_eq(la, lb);
    }
    cr_assert_gt(ka, 0);
}

Test(sampler, streams_of_one_seed_are_uncorrelated)
{
    /* Pearson correlation of paired gaps from streams 0 and 1: sd ~ 1/sqrt(N) under
     * independence. */
    const int N = 100000;
    ml_rng a, b;
    ml__sampler_set_mean(80000);
    ml__rng_seed(&a, SEED, 0);
    ml__rng_seed(&b, SEED, 1);
    double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
    int equal = 0;
    for (int i = 0; i < N; i++) {
        double x = (double)ml__sampler_gap(&a), y = (double)ml__sampler_gap(&b);
        equal += x == y;
        sa += x;
        sb += y;
        saa += x * x;
        sbb += y * y;
        sab += x * y;
    }
    double cov = sab / N - (sa / N) * (sb / N);
    double r = cov / sqrt((saa / N - (sa / N) * (sa / N)) * (sbb / N - (sb / N) * (sb / N)));
    cr_assert_lt(fabs(r), 5 / sqrt(N), "correlation %f", r);
    cr_assert_lt(equal, 100, "streams repeat each other");
}

Test(sampler, mean_of_one_samples_every_byte)
{
    ml_rng r;
    ml__sampler_set_mean(1);
    ml__rng_seed(&r, SEED, 0);
    uint64_t left = ml__sampler_gap(&r);
    cr_assert_eq(ml__sampler_take(&r, &left, 4096), 4096);
}
