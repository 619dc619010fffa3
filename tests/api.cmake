# The allocation API (test_api.c) and the process limits set from the environment
# (test_limits.c), with their target programs in tests/targets/api_*.c and limits_*.c.
ml_target(api_semantics ${CMAKE_DL_LIBS})
ml_target(api_linked memlimits)
ml_target(api_dlopen ${CMAKE_DL_LIBS})
ml_target(limits_main)
ml_target(limits_budget ${CMAKE_DL_LIBS})
ml_target(limits_heap ${CMAKE_DL_LIBS})
ml_target(limits_accounting ${CMAKE_DL_LIBS})
ml_target(limits_action ${CMAKE_DL_LIBS})
ml_test(api)
ml_test(limits)
