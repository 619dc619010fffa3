# Task delivery (issue 9): tokens set on the task's own thread, what ml_run reports, and task
# functions that leave ml_run by longjmp or a C++ exception. The targets are linked with
# -lmemlimits (the library owns malloc without LD_PRELOAD) and built with -fno-builtin, so that
# no malloc/free pair is folded away.
# They share tasks_common's reporting and clocks (tasks.cmake).
ml_target(delivery_interrupts memlimits)
target_compile_options(delivery_interrupts PRIVATE -fno-builtin)
target_sources(delivery_interrupts PRIVATE $<TARGET_OBJECTS:tasks_common>)
ml_test(delivery)
ml_target(delivery_jumps memlimits)
target_compile_options(delivery_jumps PRIVATE -fno-builtin)
target_sources(delivery_jumps PRIVATE $<TARGET_OBJECTS:tasks_common>)
# C++ exceptions out of a task: only with a C++ compiler (the project itself is C).
include(CheckLanguage)
check_language(CXX)
if(CMAKE_CXX_COMPILER)
  enable_language(CXX)
  add_executable(delivery_exceptions targets/delivery_exceptions.cc
                                     $<TARGET_OBJECTS:tasks_common>)
  set_target_properties(delivery_exceptions PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${ML_TARGET_DIR})
  target_include_directories(delivery_exceptions PRIVATE ${CMAKE_SOURCE_DIR}/include)
  target_link_libraries(delivery_exceptions PRIVATE Threads::Threads memlimits)
  target_compile_options(delivery_exceptions PRIVATE -fno-builtin)
  get_target_property(ml_cxx_options delivery_exceptions COMPILE_OPTIONS)
  list(REMOVE_ITEM ml_cxx_options -Wstrict-prototypes -Wmissing-prototypes) # C only
  set_property(TARGET delivery_exceptions PROPERTY COMPILE_OPTIONS ${ml_cxx_options})
  set_property(GLOBAL APPEND PROPERTY ML_TARGETS delivery_exceptions)
  target_compile_definitions(test_delivery PRIVATE ML_TEST_HAVE_CXX=1)
else()
  message(STATUS "No C++ compiler: the delivery tests of C++ exceptions are not built")
endif()
