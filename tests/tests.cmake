# Criterion test executables (one line each).
ml_test(sampler)
ml_test(options)
ml_test(fmt)
ml_test(budget)
ml_test(thread)
ml_test(event)
# The option parsers under libFuzzer for a bounded time (clang from Debian).
add_test(NAME fuzz_options
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/fuzz.sh ${CMAKE_SOURCE_DIR}
                 ${CMAKE_CURRENT_BINARY_DIR}/fuzz 20)
set_tests_properties(fuzz_options PROPERTIES TIMEOUT 300)
# Install into a temporary prefix and build clients with pkg-config and find_package.
add_test(NAME install COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/install_test.sh ${CMAKE_BINARY_DIR}
                              ${CMAKE_CURRENT_BINARY_DIR}/install-test)
# One formatting style (.clang-format), checked on every C source of the project.
find_program(ML_CLANG_FORMAT NAMES clang-format clang-format-14)
if(NOT ML_CLANG_FORMAT)
  message(FATAL_ERROR "clang-format not found: install clang-format (scripts/deps.sh does)")
endif()
add_test(NAME format
         COMMAND sh -c "${ML_CLANG_FORMAT} --dry-run --Werror lib/*.c lib/*.h preload/*.c include/*.h tools/*.c tools/*.h tests/*.c tests/*.h tests/targets/*.c tests/targets/*.h tests/examples/*.c bench/*.c bench/*.h"
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
