# Process trees (issue 11): the ledger in process (test_ledger: leases, keys, repair, reuse of
# slots), and real trees run under the launcher (test_tree: python3 children sharing one heap cap
# and one budget, make -j2, kill -9, pid reuse, a thousand short processes, exec chains, fork,
# escapes, the report, --measure).
ml_target(tree_fill memlimits)
ml_target(tree_stat memlimits)
ml_target(tree_fork)
ml_target(tree_pid_reuse)
ml_target(tree_gofake)
set(ML_HAVE_TREE_STATIC 0)
find_file(ML_TREE_LIBC_STATIC libc.a PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE} /usr/lib
          NO_DEFAULT_PATH)
if(ML_TREE_LIBC_STATIC)
  ml_target(tree_static)
  target_link_options(tree_static PRIVATE -static)
  set(ML_HAVE_TREE_STATIC 1)
endif()

ml_test(ledger)

ml_test(tree)
target_compile_definitions(test_tree PRIVATE ML_TEST_LAUNCHER="$<TARGET_FILE:memlimit>"
                                             ML_TEST_HAVE_STATIC=${ML_HAVE_TREE_STATIC})
add_dependencies(test_tree memlimit)
