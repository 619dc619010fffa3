# The fast paths of issue 12 (tests/test_fast_*.c, tests/test_sampler_large.c): C++'s operator
# new and delete and jemalloc's own API exported by libmemlimits.so, and the sampler's cost on
# blocks of any size. The C++ target programs need a C++ compiler (g++), for the tests only: the
# library itself stays C and links no C++ runtime, which test_fast_cxx checks.
enable_language(CXX)

# A target program in C++: tests/targets/NAME.cc, like ml_target.
function(ml_cxx_target name)
  add_executable(${name} targets/${name}.cc)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${ML_TARGET_DIR}
                                           CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON)
  # The project's warning flags include C-only ones, which g++ warns about.
  get_target_property(opts ${name} COMPILE_OPTIONS)
  list(REMOVE_ITEM opts -Wstrict-prototypes -Wmissing-prototypes)
  set_target_properties(${name} PROPERTIES COMPILE_OPTIONS "${opts}")
  target_link_libraries(${name} PRIVATE Threads::Threads ${ARGN})
  set_property(GLOBAL APPEND PROPERTY ML_TARGETS ${name})
endfunction()

ml_cxx_target(fast_cxx ${CMAKE_DL_LIBS})
ml_test(fast_cxx)

# A program linked with Debian's libjemalloc (libjemalloc-dev) that uses jemalloc's own API.
find_library(ML_DEBIAN_JEMALLOC NAMES jemalloc PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE})
find_path(ML_DEBIAN_JEMALLOC_INCLUDE jemalloc/jemalloc.h)
if(NOT ML_DEBIAN_JEMALLOC OR NOT ML_DEBIAN_JEMALLOC_INCLUDE)
  message(FATAL_ERROR "libjemalloc.so or jemalloc/jemalloc.h not found: install libjemalloc-dev")
endif()
ml_target(fast_jemalloc ${ML_DEBIAN_JEMALLOC} ${CMAKE_DL_LIBS})
target_include_directories(fast_jemalloc PRIVATE ${ML_DEBIAN_JEMALLOC_INCLUDE})
ml_test(fast_jemalloc)

# The sampler's statistics on large blocks, and its cost in random numbers (unit test).
ml_test(sampler_large)

# The entry points that end in a tail call to jemalloc, under real exhaustion, and the blocks of
# the aligned ones.
ml_target(fast_oom)
ml_target(fast_aligned ${CMAKE_DL_LIBS})
ml_test(fast_entries)
