# The engine's layers (docs/ARCHITECTURE.md, "Layers"): `layers` reads the table and checks the
# built objects of lib/ and preload/ with nm, so it needs the build done first (ctest runs after
# it); `layers_selftest` runs the checker on doctored copies of the table.
find_package(Python3 COMPONENTS Interpreter)
if(NOT Python3_Interpreter_FOUND)
  message(FATAL_ERROR "python3 not found: install python3 (scripts/deps.sh does)")
endif()
set(ML_NM ${CMAKE_NM})
if(NOT ML_NM)
  set(ML_NM nm)
endif()
set(ML_LAYERS ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/check_layers.py --nm ${ML_NM})
add_test(NAME layers COMMAND ${ML_LAYERS} ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR})
add_test(NAME layers_selftest COMMAND ${ML_LAYERS} --self-test ${CMAKE_SOURCE_DIR}
                                      ${CMAKE_BINARY_DIR})
set_tests_properties(layers layers_selftest PROPERTIES TIMEOUT 120)
