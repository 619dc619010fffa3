# The profiler: the tracker API (test_memprof.c over targets/memprof_api.c) and heap profiles of
# an unmodified program read by jeprof (test_profile.c over targets/memprof_heap.c).
ml_target(memprof_api memlimits m)
ml_target(memprof_heap ${CMAKE_DL_LIBS})
# Exported symbols, so that the report's dladdr names the program's functions.
set_target_properties(memprof_heap PROPERTIES ENABLE_EXPORTS ON)
target_compile_options(memprof_heap PRIVATE -O1 -fno-omit-frame-pointer -fno-inline)
ml_test(memprof)
ml_test(profile)
find_program(ML_JEPROF jeprof)
target_compile_definitions(test_profile PRIVATE ML_JEPROF="${ML_JEPROF}")
