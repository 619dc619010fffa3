# The launcher (tools/memlimit): tests/test_launcher.c runs it in child processes on real
# programs (python3, sh, sort) and on the small targets below.
ml_target(launcher_env ${CMAKE_DL_LIBS})

# A user's own preload library, to check that memlimit keeps an existing LD_PRELOAD.
add_library(launcher_marker SHARED targets/launcher_marker.c)
set_target_properties(launcher_marker PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${ML_TARGET_DIR})
set_property(GLOBAL APPEND PROPERTY ML_TARGETS launcher_marker)

# A library with memlimits' identification text of another version (the launcher refuses it).
add_library(launcher_foreign_ident SHARED targets/launcher_foreign_ident.c)
set_target_properties(launcher_foreign_ident PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${ML_TARGET_DIR})
set_property(GLOBAL APPEND PROPERTY ML_TARGETS launcher_foreign_ident)

# A static executable, when the C library's static archive is installed (Debian: libc6-dev).
find_file(ML_LIBC_STATIC libc.a PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE} /usr/lib
          NO_DEFAULT_PATH)
set(ML_HAVE_STATIC 0)
if(ML_LIBC_STATIC)
  ml_target(launcher_static)
  target_link_options(launcher_static PRIVATE -static)
  set(ML_HAVE_STATIC 1)
endif()

ml_test(launcher)
target_compile_definitions(test_launcher PRIVATE
  ML_TEST_LAUNCHER="$<TARGET_FILE:memlimit>" ML_TEST_VERSION="${PROJECT_VERSION}"
  ML_TEST_MARKER_LIB="$<TARGET_FILE:launcher_marker>"
  ML_TEST_FOREIGN_LIB="$<TARGET_FILE:launcher_foreign_ident>"
  ML_TEST_MULTIARCH="${CMAKE_LIBRARY_ARCHITECTURE}" ML_TEST_HAVE_STATIC=${ML_HAVE_STATIC})
add_dependencies(test_launcher memlimit)
