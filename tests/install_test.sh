#!/bin/sh
# Installs the build into a temporary prefix and builds two clients against the installed copy:
# one with pkg-config, one with CMake's find_package. Both must run with memlimits owning malloc
# (linked with -lmemlimits, no LD_PRELOAD) and see their allocations counted. The prefix is not
# one the dynamic loader searches: the pkg-config client is run with LD_LIBRARY_PATH, and built
# again with an rpath from `pkg-config --variable=libdir` (README, "Building and installing"),
# which must run with no help and load the prefix's copy; without either, it must not start.
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
#define _GNU_SOURCE
#include <dlfcn.h>
#include <memlimits.h>
#include <stdio.h>
#include <stdlib.h>
int main(void)
{
    uint64_t before = ml_thread_allocated();
    void *volatile p = malloc(1000);
    uint64_t counted = ml_thread_allocated() - before;
    free(p);
    Dl_info info;
    const char *from = dladdr((void *)ml_active, &info) && info.dli_fname ? info.dli_fname : "?";
    printf("active=%d counted=%llu masked=%d from=%s\n", ml_active(), (unsigned long long)counted,
           ml_is_masked(), from);
    return !(ml_active() && counted == 1000 && !ml_is_masked());
}
C
export PKG_CONFIG_PATH="$libdir/pkgconfig"
pc_libdir=$(pkg-config --variable=libdir memlimits)
cc -o "$work/client" "$work/client.c" $(pkg-config --cflags --libs memlimits)
LD_LIBRARY_PATH="$libdir" "$work/client"
# The rpath form: runs as it is, and loads the library from the prefix.
cc -o "$work/client-rpath" "$work/client.c" $(pkg-config --cflags --libs memlimits) \
    -Wl,-rpath,"$pc_libdir"
out=$(env -u LD_LIBRARY_PATH "$work/client-rpath")
echo "$out"
case "$out" in
*"from=$pc_libdir/libmemlimits.so"*) ;;
*) echo "install test: the rpath client did not load $pc_libdir/libmemlimits.so" >&2; exit 1 ;;
esac
# Without rpath or LD_LIBRARY_PATH the loader cannot find it (unless a copy is installed where
# it looks, which is then what runs).
if ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libmemlimits\.so\.0 '; then
    if env -u LD_LIBRARY_PATH "$work/client" >/dev/null 2>&1; then
        echo "install test: a client without rpath found libmemlimits.so.0 by itself" >&2
        exit 1
    fi
fi
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
echo "install test: pkg-config (LD_LIBRARY_PATH and rpath) and CMake clients built and ran against $prefix"
