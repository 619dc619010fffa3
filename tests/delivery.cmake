# Task delivery (issue 9): tokens set on the task's own thread, what ml_run reports, and task
# functions that leave ml_run by longjmp or a C++ exception. The targets are linked with
# -lmemlimits (the library owns malloc without LD_PRELOAD) and built with -fno-builtin, so that
# no malloc/free pair is folded away.
ml_target(delivery_interrupts memlimits)
target_compile_options(delivery_interrupts PRIVATE -fno-builtin)
ml_test(delivery)
