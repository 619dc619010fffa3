# Criterion test executables (one line each).
ml_test(sampler)
ml_test(options)
# The option parsers under libFuzzer for a bounded time (clang from Debian).
add_test(NAME fuzz_options
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/fuzz.sh ${CMAKE_SOURCE_DIR}
                 ${CMAKE_CURRENT_BINARY_DIR}/fuzz 20)
set_tests_properties(fuzz_options PROPERTIES TIMEOUT 300)
