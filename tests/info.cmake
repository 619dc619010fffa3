# glibc's statistics calls and mallopt answered from memlimits' accounting (test_info.c), with
# their target programs in tests/targets/info_*.c.
ml_target(info_mallinfo)
ml_target(info_report)
ml_target(info_mallopt)
ml_test(info)
