# The task API completed by issue 13 (test_taskapi): ml_is_masked, a task's own counts
# (ml_task_allocated, ml_task_remaining), which level's limit fired and ML_HEAP_CAP, token
# handles (stale and forged), token descriptors (ml_token_fd), condition waits (ml_cond_wait),
# and storms of sets racing waits. Target programs are built like the tasks ones: linked with
# -lmemlimits, -fno-builtin, with the helpers of tasks_common.c (tasks.cmake).
foreach(program counts status handles cond storm)
  ml_target(taskapi_${program} memlimits)
  target_sources(taskapi_${program} PRIVATE $<TARGET_OBJECTS:tasks_common>)
  target_compile_options(taskapi_${program} PRIVATE -fno-builtin)
endforeach()
ml_test(taskapi)
set_tests_properties(taskapi PROPERTIES TIMEOUT 600)
