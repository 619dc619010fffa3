# The four examples of memprof-limits' documentation, in C (tests/examples/, shown in the
# README): ordinary programs linked with -lmemlimits, so memlimits owns malloc without
# LD_PRELOAD. Each checks its own outcome and exits 0; test_examples.c runs them.
set(ML_EXAMPLES_DIR ${CMAKE_CURRENT_BINARY_DIR}/examples)
set(ML_EXAMPLES global_memory allocation_limit token safe_mutex)
foreach(example ${ML_EXAMPLES})
  add_executable(example_${example} examples/example_${example}.c)
  set_target_properties(example_${example} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${ML_EXAMPLES_DIR})
  target_link_libraries(example_${example} PRIVATE memlimits Threads::Threads)
endforeach()
# Its tasks run with ML_UNWIND: a malloc that may leave by siglongjmp must not be the compiler's
# builtin, which is assumed to return and to leave program memory alone (see the example).
target_compile_options(example_safe_mutex PRIVATE -fno-builtin-malloc)

ml_test(examples)
target_compile_definitions(test_examples PRIVATE ML_EXAMPLES_DIR="${ML_EXAMPLES_DIR}")
foreach(example ${ML_EXAMPLES})
  add_dependencies(test_examples example_${example})
endforeach()
