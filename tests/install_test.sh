#!/bin/sh
# Installs the build into a temporary prefix and builds two clients against the installed copy:
# one with pkg-config, one with CMake's find_package. Both must run with memlimits owning malloc
# (linked with -lmemlimits, no LD_PRELOAD) and see their allocations counted.
# Usage: install_test.sh BUILD_DIR WORK_DIR
set -eu
build=$1 work=$2
rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$(find "$prefix" -name memlimits.pc -printf '%h\n' | head -n 1)
libdir=${libdir%/pkgconfig}
cat > "$work/client.c" <<'C'
#include <memlimits.h>
#include <stdio.h>
#include <stdlib.h>
int main(void)
{
    uint64_t before = ml_thread_allocated();
    void *volatile p = malloc(1000);
    uint64_t counted = ml_thread_allocated() - before;
    free(p);
    printf("active=%d counted=%llu\n", ml_active(), (unsigned long long)counted);
    return !(ml_active() && counted == 1000);
}
C
PKG_CONFIG_PATH="$libdir/pkgconfig" cc -o "$work/client" "$work/client.c" \
    $(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --cflags --libs memlimits)
LD_LIBRARY_PATH="$libdir" "$work/client"
mkdir -p "$work/cmake-client"
cp "$work/client.c" "$work/cmake-client/"
cat > "$work/cmake-client/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.20)
project(client C)
find_package(memlimits REQUIRED)
add_executable(client client.c)
target_link_libraries(client PRIVATE memlimits::memlimits)
CM
cmake -S "$work/cmake-client" -B "$work/cmake-client/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cmake-client/build" >/dev/null
LD_LIBRARY_PATH="$libdir" "$work/cmake-client/build/client"
test -x "$prefix/bin/memlimit"
test -f "$prefix/share/man/man1/memlimit.1"
echo "install test: pkg-config and CMake clients built and ran against $prefix"
