# The heap cap and its accounting, and the sampler's large-block path (test_sampling.c).
ml_test(sampling)
