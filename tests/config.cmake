# The configuration as the preloaded library reads it: refusals before main and the verbose
# listing's round trip (test_config); the target is limits_main (limits.cmake's area).
ml_test(config)
