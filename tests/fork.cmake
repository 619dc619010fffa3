# fork (issue 9): fork from signal handlers in a single-threaded program busy in malloc
# (fork_signal, preloaded); which of jemalloc's locks a fork takes (fork_locks, which links the
# engine and its private jemalloc to read jemalloc's lock statistics); and ML_WAKE tasks in a
# forked child (fork_wake, linked with -lmemlimits and built with -fno-builtin, as the tasks'
# targets are). The fork tests of a multithreaded parent are in robust.cmake.
ml_target(fork_signal ${CMAKE_DL_LIBS})
ml_target(fork_locks ml_jemalloc_private m ${CMAKE_DL_LIBS})
target_sources(fork_locks PRIVATE $<TARGET_OBJECTS:memlimits_engine>)
target_include_directories(fork_locks PRIVATE ${CMAKE_SOURCE_DIR}/lib)
ml_target(fork_wake memlimits)
target_compile_options(fork_wake PRIVATE -fno-builtin)
ml_test(fork)
ml_target(fork_state memlimits)
target_compile_options(fork_state PRIVATE -fno-builtin)
