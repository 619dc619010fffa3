# Tasks (issue 3): ml_run under allocation, global-memory and token limits, masking, cleanups,
# resources and the wake-up signal (test_tasks), and the stress of interrupt delivery across
# threads (test_stress). Their target programs are linked with -lmemlimits, so that the library
# owns malloc without LD_PRELOAD, and built with -fno-builtin so that no malloc/free pair or
# strdup is folded away.
ml_target(tasks_scenarios memlimits)
target_compile_options(tasks_scenarios PRIVATE -fno-builtin)
ml_test(tasks)
ml_target(tasks_stress memlimits)
target_compile_options(tasks_stress PRIVATE -fno-builtin)
ml_test(stress)
set_tests_properties(stress PROPERTIES TIMEOUT 300)
