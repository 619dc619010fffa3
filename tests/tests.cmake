# Criterion test executables (one line each).
ml_test(sampler)
ml_test(options)
