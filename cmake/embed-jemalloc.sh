#!/bin/sh
# Makes the private copy of jemalloc that libmemlimits.so links: Debian's PIC archive without
# its C++ operators, every public name renamed to mlje_* (cmake/jemalloc-rename.txt) so that
# memlimits' own malloc and jemalloc's can live in one object. Usage: SRC_ARCHIVE MAP OUT.
set -eu
src=$1 map=$2 out=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$src" "$work/je.a"
ar d "$work/je.a" jemalloc_cpp.pic.o
objcopy --redefine-syms="$map" "$work/je.a" "$work/renamed.a"
# Fail the build if any public (default-visibility) jemalloc name was not renamed.
left=$(nm -g --defined-only "$work/renamed.a" 2>/dev/null | awk 'NF==3 && $3 !~ /^(mlje_|je_)/ {print $3}' | sort -u)
if [ -n "$left" ]; then
    echo "embed-jemalloc: names not renamed: $left" >&2
    exit 1
fi
mv "$work/renamed.a" "$out"
