# Robustness of the preloaded library (design.md "Robustness requirements"): threads in the
# thousands, fork, TLS destructors, dlopen, early allocation, signal handlers, threads that only
# free, a non-PIE executable (test_robust), and real programs run preloaded with unchanged output
# (test_programs).

# A shared library that allocates in its constructor, in a function and frees in its destructor:
# dlopen'ed by robust_dlopen, and linked by robust_early so that its constructor runs before
# libmemlimits.so's own.
add_library(robust_dl SHARED targets/robust_dl_lib.c)
set_target_properties(robust_dl PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${ML_TARGET_DIR})
target_link_libraries(robust_dl PRIVATE ${CMAKE_DL_LIBS})
set_property(GLOBAL APPEND PROPERTY ML_TARGETS robust_dl)

ml_target(robust_threads ${CMAKE_DL_LIBS})
ml_target(robust_fork ${CMAKE_DL_LIBS})
ml_target(robust_tls_dtor ${CMAKE_DL_LIBS})
ml_target(robust_dlopen ${CMAKE_DL_LIBS})
ml_target(robust_early robust_dl ${CMAKE_DL_LIBS})
ml_target(robust_signal ${CMAKE_DL_LIBS})
ml_target(robust_free_only ${CMAKE_DL_LIBS})
ml_target(robust_purge ${CMAKE_DL_LIBS})
# Non-PIE, like Debian's python3: malloc's canonical address is the executable's PLT entry.
ml_target(robust_nopie ${CMAKE_DL_LIBS})
set_target_properties(robust_nopie PROPERTIES POSITION_INDEPENDENT_CODE OFF)
target_compile_options(robust_nopie PRIVATE -fno-pie)
target_link_options(robust_nopie PRIVATE -no-pie)

ml_test(robust)
add_dependencies(test_robust robust_dl)
target_compile_definitions(test_robust PRIVATE
  ML_TEST_ROBUST_DL="$<TARGET_FILE:robust_dl>")

ml_test(programs)
set_tests_properties(programs PROPERTIES TIMEOUT 300)
