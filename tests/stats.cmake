# Statistics, C's Gc.stat (test_stats.c): ml_stat, ml_quick_stat and ml_print_stats, with their
# target programs in tests/targets/stats_*.c, linked with -lmemlimits (they call the API), built
# with -fno-builtin (no malloc/free pair folded away) and run preloaded.
foreach(program counts tasks)
  ml_target(stats_${program} memlimits)
  target_compile_options(stats_${program} PRIVATE -fno-builtin)
endforeach()
ml_test(stats)
