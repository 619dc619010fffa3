# Reports (lib/report.c): the JSON and text forms tested in process, and the destination's life in
# preloaded target programs: descriptors used up, closed or reused by the program, stderr closed
# before exit, relative paths in a process tree whose processes change directory, fork and %p.
ml_target(report_fds)
ml_target(report_tree)
ml_test(report)
