# Tasks (issue 3): ml_run under allocation, global-memory and token limits, masking, cleanups,
# resources and the wake-up signal (test_tasks), and the stress of interrupt delivery across
# threads (test_stress). Their target programs are linked with -lmemlimits, so that the library
# owns malloc without LD_PRELOAD, and built with -fno-builtin so that no malloc/free pair or
# strdup is folded away. test_tasks runs each scenario in the program of its concern, all built
# with the shared reporting and tasks of tasks_common.c.
add_library(tasks_common OBJECT targets/tasks_common.c)
target_include_directories(tasks_common PRIVATE ${CMAKE_SOURCE_DIR}/include)
target_compile_options(tasks_common PRIVATE -fno-builtin)
foreach(program allocation masking unwind tokens wake global threads)
  ml_target(tasks_${program} memlimits)
  target_sources(tasks_${program} PRIVATE $<TARGET_OBJECTS:tasks_common>)
  target_compile_options(tasks_${program} PRIVATE -fno-builtin)
endforeach()
ml_test(tasks)
ml_target(tasks_stress memlimits)
target_sources(tasks_stress PRIVATE $<TARGET_OBJECTS:tasks_common>)
target_compile_options(tasks_stress PRIVATE -fno-builtin)
ml_test(stress)
set_tests_properties(stress PROPERTIES TIMEOUT 300)
