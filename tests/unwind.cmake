# Callstacks (lib/host_unwind.c): test_unwind.c runs targets/memprof_unwind.c, built with and
# without frame pointers, under each MEMLIMITS_UNWIND mode and compares the frames.
add_library(unwind_plugin SHARED targets/unwind_plugin.c)
target_compile_options(unwind_plugin PRIVATE -O2 -fno-omit-frame-pointer)
set_target_properties(unwind_plugin PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${ML_TARGET_DIR})
set_property(GLOBAL APPEND PROPERTY ML_TARGETS unwind_plugin)
foreach(variant fp nofp)
  set(name memprof_unwind_${variant})
  add_executable(${name} targets/memprof_unwind.c)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${ML_TARGET_DIR}
                                           ENABLE_EXPORTS ON)
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/include)
  target_compile_definitions(${name} PRIVATE PLUGIN_PATH="$<TARGET_FILE:unwind_plugin>")
  target_link_libraries(${name} PRIVATE memlimits Threads::Threads ${CMAKE_DL_LIBS})
  set_property(GLOBAL APPEND PROPERTY ML_TARGETS ${name})
endforeach()
target_compile_options(memprof_unwind_fp PRIVATE -O2 -fno-omit-frame-pointer)
target_compile_options(memprof_unwind_nofp PRIVATE -O2 -fomit-frame-pointer)
ml_test(unwind)
