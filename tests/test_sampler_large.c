/* The sampler on blocks of any size (issue 12): a block of n bytes carries Binomial(n, 1/mean)
 * samples whether its count is drawn gap by gap (fewer than ML_SAMPLER_LOOP_MAX expected) or at
 * once (ml__sampler_binomial), and the random numbers one block uses do not grow with its size.
 * Fixed seeds; every statistical bound is 5 standard errors wide (a correct sampler fails one
 * with probability below 1e-6). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"

#define SEED 20260101u

/* log P(K = k) for K ~ Binomial(n, p). */
static double log_pmf(double n, double p, double k)
{
    return lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1) + k * log(p) + (n - k) * log1p(-p);
}

/* The chi-square statistic's critical value at 5 standard normal deviates (Wilson-Hilferty). */
static double chi2_critical(double df)
{
    double t = 2 / (9 * df);
    return df * pow(1 - t + 5 * sqrt(t), 3);
}

/* Draws of a block's count: a thread's (the gap carried from block to block) or the deferred
 * account's (sampler.h: the block deferred, then the total read). */
typedef struct block_draws {
    ml_rng r;
    uint64_t left, total;
    int deferred;
} block_draws;

static uint64_t draw(block_draws *d, uint64_t n)
{
    if (!d->deferred) return ml__sampler_take(&d->r, &d->left, n);
    ml__sampler_defer(n);
    uint64_t total = ml__sampler_deferred_samples(), k = total - d->total;
    d->total = total;
    return k;
}

/* Draws `blocks` consecutive blocks of n bytes at `mean` and tests their counts against
 * Binomial(n, 1/mean) by a chi-square test over bins of expected count >= 20 (the tails
 * merged). */
static void assert_binomial_draws(uint64_t mean, uint64_t n, int blocks, uint64_t stream,
                                  int deferred)
{
    const double p = 1.0 / (double)mean, dn = (double)n;
    block_draws d = {.deferred = deferred};
    ml__sampler_set_mean(mean);
    ml__sampler_set_seed(SEED + stream);
    ml__rng_seed(&d.r, SEED, stream);
    d.left = ml__sampler_gap(&d.r);
    d.total = ml__sampler_deferred_samples();
    double mu = dn * p, sd = sqrt(dn * p * (1 - p));
    int lo = (int)fmax(0, floor(mu - 8 * sd)), hi = (int)ceil(mu + 8 * sd) + 1;
    int width = hi - lo + 1;
    long *observed = calloc((size_t)width, sizeof *observed);
    cr_assert_not_null(observed);
    double sum = 0, sumsq = 0;
    for (int i = 0; i < blocks; i++) {
        uint64_t k = draw(&d, n);
        cr_assert((int)k >= lo && (int)k <= hi, "count %lu beyond 8 sd of %f", k, mu);
        observed[k - (uint64_t)lo]++;
        sum += (double)k;
        sumsq += (double)k * (double)k;
    }
    /* Bins from the left, each closed once its expectation reaches 20; a last bin short of 20
     * (the right tail) is merged into the one before it. */
    double bin_e[512], bin_g[512], expected = 0, got = 0;
    int bins = 0;
    for (int k = lo; k <= hi; k++) {
        expected += blocks * exp(log_pmf(dn, p, k));
        got += (double)observed[k - lo];
        if (expected >= 20 && bins < 512) {
            bin_e[bins] = expected;
            bin_g[bins++] = got;
            expected = got = 0;
        }
    }
    cr_assert_gt(bins, 1);
    bin_e[bins - 1] += expected;
    bin_g[bins - 1] += got;
    double chi2 = 0;
    for (int i = 0; i < bins; i++)
        chi2 += (bin_g[i] - bin_e[i]) * (bin_g[i] - bin_e[i]) / bin_e[i];
    free(observed);
    double mean_k = sum / blocks, var_k = sumsq / blocks - mean_k * mean_k;
    cr_assert_lt(fabs(mean_k - mu), 5 * sd / sqrt(blocks), "n=%lu mean %f, expected %f", n, mean_k,
                 mu);
    cr_assert_lt(fabs(var_k / (sd * sd) - 1), 5 * sqrt(2.0 / blocks) + 0.01,
                 "n=%lu variance %f, expected %f", n, var_k, sd * sd);
    cr_assert_lt(chi2, chi2_critical(bins - 1), "n=%lu (mean %lu): chi-square %f over %d bins", n,
                 mean, chi2, bins);
}

static void assert_binomial_counts(uint64_t mean, uint64_t n, int blocks, uint64_t stream)
{
    assert_binomial_draws(mean, n, blocks, stream, 0);
}

Test(sampler_large, blocks_below_the_switch_are_binomial)
{
    /* 9.75 samples expected: gap by gap. */
    assert_binomial_counts(80000, 780000, 20000, 1);
}

Test(sampler_large, blocks_above_the_switch_are_binomial)
{
    /* 10.25 and 12 samples expected: drawn at once (the rest after the first sample decides,
     * so blocks near the switch take either way). */
    assert_binomial_counts(80000, 820000, 20000, 2);
    assert_binomial_counts(80000, 960000, 20000, 3);
}

Test(sampler_large, four_mebibyte_blocks_are_binomial)
{
    /* The large block: 52.4 samples expected at the default mean. */
    assert_binomial_counts(80000, (uint64_t)4 << 20, 20000, 4);
}

Test(sampler_large, large_blocks_at_other_means_are_binomial)
{
    assert_binomial_counts(8000, (uint64_t)1 << 20, 20000, 5);   /* 131 expected */
    assert_binomial_counts(80000, (uint64_t)64 << 20, 20000, 6); /* 839 expected */
    assert_binomial_counts(2, 4000, 20000, 7);                   /* p = 1/2 */
    assert_binomial_counts(3, 1 << 16, 20000, 8);                /* p = 1/3, 21845 expected */
}

Test(sampler_large, huge_blocks_have_binomial_mean_and_variance)
{
    /* 2^40 bytes at the default mean: 1.37e7 samples expected per block. */
    const double n = 1099511627776.0, p = 1.0 / 80000, blocks = 2000;
    ml_rng r;
    ml__sampler_set_mean(80000);
    ml__rng_seed(&r, SEED, 9);
    uint64_t left = ml__sampler_gap(&r);
    double mu = n * p, var = n * p * (1 - p), sum = 0, sumsq = 0;
    for (int i = 0; i < (int)blocks; i++) {
        double k = (double)ml__sampler_take(&r, &left, (uint64_t)n);
        sum += k - mu;
        sumsq += (k - mu) * (k - mu);
    }
    double mean_dev = sum / blocks, var_k = sumsq / blocks - mean_dev * mean_dev;
    cr_assert_lt(fabs(mean_dev), 5 * sqrt(var / blocks), "mean off by %f", mean_dev);
    cr_assert_lt(fabs(var_k / var - 1), 5 * sqrt(2 / blocks), "variance ratio %f", var_k / var);
}

Test(sampler_large, one_block_or_many_carry_the_same_distribution)
{
    /* 10 MB as one block (drawn at once) or as 100000 blocks of 100 bytes (gap by gap) at mean
     * 5000: both totals are Binomial(10^7, 1/5000), mean 2000, sd 44.7; 400 seeds each. */
    const int seeds = 400;
    const double mu = 2000, sd = sqrt(1e7 / 5000.0 * (1 - 1 / 5000.0));
    double one = 0, many = 0;
    ml__sampler_set_mean(5000);
    for (int s = 0; s < seeds; s++) {
        ml_rng a, b;
        ml__rng_seed(&a, SEED + (uint64_t)s, 10);
        ml__rng_seed(&b, SEED + (uint64_t)s, 11);
        uint64_t la = ml__sampler_gap(&a), lb = ml__sampler_gap(&b);
        one += (double)ml__sampler_take(&a, &la, 10000000);
        for (int i = 0; i < 100000; i++)
            many += (double)ml__sampler_take(&b, &lb, 100);
    }
    one /= seeds;
    many /= seeds;
    double se = sd / sqrt(seeds);
    cr_assert_lt(fabs(one - mu), 5 * se, "one block: mean %f", one);
    cr_assert_lt(fabs(many - mu), 5 * se, "many blocks: mean %f", many);
    cr_assert_lt(fabs(one - many), 5 * se * sqrt(2), "one %f, many %f", one, many);
}

/* Random numbers drawn between two states of a generator: steps of `before` until it equals
 * `after`, at most `limit` (limit + 1 if not reached). */
static int draws_between(ml_rng before, const ml_rng *after, int limit)
{
    for (int i = 0; i <= limit; i++) {
        if (memcmp(&before, after, sizeof before) == 0) return i;
        ml__rng_next(&before);
    }
    return limit + 1;
}

Test(sampler_large, the_random_numbers_a_block_uses_do_not_grow_with_its_size)
{
    /* Gap by gap costs one draw per sample; drawn at once about 2.2 per rejection round and one
     * for the next gap. At every size the count of draws stays small: here at most 64, which a
     * sampler looping over the samples of a 4 MiB block (52 expected) would already reach, and
     * one over a gibibyte (13422) never stay under. */
    static const uint64_t sizes[] = {100,
                                     4096,
                                     780000,
                                     820000,
                                     (uint64_t)4 << 20,
                                     123456789,
                                     (uint64_t)1 << 30,
                                     (uint64_t)1 << 46};
    ml__sampler_set_mean(80000);
    int worst = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (int trial = 0; trial < 200; trial++) {
            ml_rng r;
            ml__rng_seed(&r, SEED + (uint64_t)trial, 12 + i);
            uint64_t left = ml__sampler_gap(&r);
            ml_rng before = r;
            uint64_t k = ml__sampler_take(&r, &left, sizes[i]);
            int draws = draws_between(before, &r, 64);
            cr_assert_leq(draws, 64, "a block of %lu bytes (%lu samples) drew more than 64",
                          sizes[i], k);
            if (draws > worst) worst = draws;
        }
    }
    cr_assert_gt(worst, 0);
}

/* Deferred blocks (sampler.h): their samples are drawn when a total is read, from bytes
 * deferred since the last read. Each read here follows one block: its increment is the block's
 * count, Binomial(n, 1/mean), whether the draw is gap by gap (few samples) or BTRD. */
Test(sampler_large, deferred_blocks_are_binomial_when_the_total_is_read)
{
    assert_binomial_draws(80000, (uint64_t)64 << 10, 20000, 20, 1); /* 0.82 expected */
    assert_binomial_draws(80000, 780000, 20000, 21, 1);             /* 9.75: gap by gap */
    assert_binomial_draws(80000, (uint64_t)4 << 20, 20000, 22, 1);  /* 52.4: BTRD */
    assert_binomial_draws(80000, (uint64_t)64 << 20, 20000, 23, 1); /* 839 */
    assert_binomial_draws(3, (uint64_t)1 << 16, 20000, 24, 1);      /* p = 1/3 */
}

Test(sampler_large, deferred_blocks_read_together_have_the_binomial_total)
{
    /* 2000 rounds of 7 blocks of 1 MiB, read once per round: each increment is
     * Binomial(7 MiB, 1/80000), mean 91.75, sd 9.58; the sum of all of them
     * Binomial(14000 MiB, 1/80000). Bounds at 5 standard errors. */
    const double n = 7.0 * (1 << 20), p = 1.0 / 80000, rounds = 2000;
    ml__sampler_set_mean(80000);
    ml__sampler_set_seed(SEED);
    uint64_t total = ml__sampler_deferred_samples();
    double sum = 0, sumsq = 0;
    for (int i = 0; i < (int)rounds; i++) {
        for (int j = 0; j < 7; j++)
            ml__sampler_defer((uint64_t)1 << 20);
        uint64_t now = ml__sampler_deferred_samples();
        double k = (double)(now - total);
        total = now;
        sum += k;
        sumsq += k * k;
    }
    double mu = n * p, var = n * p * (1 - p), m = sum / rounds, v = sumsq / rounds - m * m;
    cr_assert_lt(fabs(m - mu), 5 * sqrt(var / rounds), "mean %f, expected %f", m, mu);
    cr_assert_lt(fabs(v / var - 1), 5 * sqrt(2 / rounds) + 0.01, "variance ratio %f", v / var);
}

Test(sampler_large, a_read_with_nothing_deferred_draws_nothing)
{
    ml__sampler_set_mean(80000);
    ml__sampler_set_seed(SEED);
    uint64_t a = ml__sampler_deferred_samples();
    cr_assert_eq(ml__sampler_deferred_samples(), a);
    ml__sampler_set_mean(1); /* every byte: the count is the bytes */
    ml__sampler_defer(12345);
    cr_assert_eq(ml__sampler_deferred_samples(), a + 12345);
}

Test(sampler_large, deferred_draws_are_reproducible_from_the_seed)
{
    /* The same seed and the same reads give the same counts: the generator is the seed's
     * own stream, restarted by ml__sampler_set_seed. Two runs of 100 reads, the second after
     * re-seeding; the increments must match one for one. */
    uint64_t first[100], prev;
    ml__sampler_set_mean(80000);
    for (int run = 0; run < 2; run++) {
        ml__sampler_set_seed(SEED);
        prev = ml__sampler_deferred_samples();
        for (int i = 0; i < 100; i++) {
            ml__sampler_defer((uint64_t)4 << 20);
            uint64_t now = ml__sampler_deferred_samples(), k = now - prev;
            prev = now;
            if (run == 0)
                first[i] = k;
            else
                cr_assert_eq(k, first[i], "read %d: %lu, then %lu", i, first[i], k);
        }
    }
}
