# The heap cap and its accounting (test_heap.c: unit tests of lib/heap.c and child-process tests
# of the cap's bound), with target programs in tests/targets/heap_*.c; the sampler's large-block
# path (test_sampling.c).
ml_target(heap_fill ${CMAKE_DL_LIBS})
ml_target(heap_cases ${CMAKE_DL_LIBS})
ml_test(heap)
ml_test(sampling)
