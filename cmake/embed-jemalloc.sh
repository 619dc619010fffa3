#!/bin/sh
# Makes the private copy of jemalloc that libmemlimits.so links: Debian's PIC archive without
# its C++ operators, every public name renamed to mlje_* (cmake/jemalloc-rename.txt) so that
# memlimits' own malloc and jemalloc's can live in one object. One name is kept: jemalloc's
# `free` is exported as memlimits' free itself (free has nothing to add, so it costs no extra
# jump), and gets more names at the same address: mlje_free for memlimits' own calls, and
# __libc_free and cfree, which glibc's API defines as free. That copy is for
# libmemlimits.so; with MODE=private (tests, which link the engine into programs whose malloc
# stays glibc's) free is renamed like every other name.
# In both copies, jemalloc's call of pthread_atfork is redirected to ml__host_jemalloc_atfork
# (lib/host_runtime.c), which only stores jemalloc's three fork handlers: memlimits' own handlers
# call them, in their order and only when the fork takes locks (lib/thread.c says when).
# Usage: SRC_ARCHIVE MAP OUT [shared|private].
set -eu
src=$1 map=$2 out=$3 mode=${4:-shared}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$src" "$work/je.a"
ar d "$work/je.a" jemalloc_cpp.pic.o
{ cat "$map"; echo "pthread_atfork ml__host_jemalloc_atfork"; } > "$work/map"
# Fail the build if jemalloc no longer registers its fork handlers through pthread_atfork: they
# would then run behind memlimits' back, or not at all.
if ! nm "$work/je.a" 2>/dev/null | grep -q ' U pthread_atfork$'; then
    echo "embed-jemalloc: jemalloc.pic.o does not call pthread_atfork" >&2
    exit 1
fi
# The same for the bounds on purging (below, and lib/host_purge.c): each redirected call must
# still be made from the object that makes it.
calls() { # OBJECT SYMBOL
    nm "$work/je.a" 2>/dev/null | awk -v o="$1:" '$0 == o {t = 1; next} /:$/ {t = 0} t' |
        grep -q " U $2\$"
}
for call in tcache.pic.o:je_arena_decay pac.pic.o:je_ecache_alloc_grow pa.pic.o:je_pac_init; do
    if ! calls "${call%%:*}" "${call#*:}"; then
        echo "embed-jemalloc: ${call%%:*} does not call ${call#*:}" >&2
        exit 1
    fi
done
# The profiler's tracked blocks (lib/host_tracked.c): jemalloc's entry points release a
# promoted or large block through two internal functions; their calls from jemalloc.pic.o go to
# memlimits' wrappers, which see tracked blocks and nothing else, then call the originals.
# And jemalloc's purging (lib/host_purge.c): tcache.pic.o's calls of arena_decay (the purge at
# thread exit), pac.pic.o's of ecache_alloc_grow (an arena takes new pages) and pa.pic.o's of
# pac_init (an arena's page allocator is made) go to memlimits' bounds.
redirect_tracked() {
    (cd "$work" && ar x "$1" jemalloc.pic.o &&
        objcopy --redefine-sym je_arena_dalloc_promoted=ml__host_dalloc_promoted \
            --redefine-sym je_large_dalloc=ml__host_large_dalloc jemalloc.pic.o &&
        ar r "$1" jemalloc.pic.o)
    (cd "$work" && ar x "$1" tcache.pic.o pac.pic.o pa.pic.o &&
        objcopy --redefine-sym je_arena_decay=ml__host_tcache_decay tcache.pic.o &&
        objcopy --redefine-sym je_ecache_alloc_grow=ml__host_grow pac.pic.o &&
        objcopy --redefine-sym je_pac_init=ml__host_pac_init pa.pic.o &&
        ar r "$1" tcache.pic.o pac.pic.o pa.pic.o)
}
if [ "$mode" = private ]; then
    echo "free mlje_free" >> "$work/map"
    objcopy --redefine-syms="$work/map" "$work/je.a" "$work/renamed.a"
    redirect_tracked renamed.a
    mv "$work/renamed.a" "$out"
    exit 0
fi
objcopy --redefine-syms="$work/map" "$work/je.a" "$work/renamed.a"
redirect_tracked renamed.a
# The other names of free, at the same place in jemalloc.pic.o.
(cd "$work" && ar x renamed.a jemalloc.pic.o)
line=$(nm "$work/jemalloc.pic.o" | awk '$2 == "T" && $3 == "free" {print $1}')
if [ -z "$line" ]; then
    echo "embed-jemalloc: no free in jemalloc.pic.o" >&2
    exit 1
fi
for name in mlje_free __libc_free cfree; do
    objcopy --add-symbol "$name=.text:0x$line,global,function" "$work/jemalloc.pic.o"
done
(cd "$work" && ar r renamed.a jemalloc.pic.o)
# Fail the build if any public (default-visibility) jemalloc name but free was not renamed.
left=$(nm -g --defined-only "$work/renamed.a" 2>/dev/null |
    awk 'NF==3 && $3 !~ /^(mlje_|je_)/ && $3 !~ /^(free|__libc_free|cfree)$/ {print $3}' | sort -u)
if [ -n "$left" ]; then
    echo "embed-jemalloc: names not renamed: $left" >&2
    exit 1
fi
# jemalloc's C++ operators (jemalloc_cpp.pic.o, taken out above), for libmemlimits.so's operator
# new and new[] (preload/new.c): after memlimits' charge they jump to jemalloc's own operator
# code, whose inline fast path is malloc's, so a C++ allocation costs what a malloc costs. Their
# names are renamed by cmake/jemalloc-cxx-rename.txt (beside MAP): the operators become mlje_cxx_*,
# the fast path's miss (je_malloc_default) becomes memlimits' ml__cxx_fallback, which never
# returns NULL (it runs the standard's new-handler loop or throws), and the C++ runtime names
# used only behind a NULL from there become ml__cxx_unreachable, so libmemlimits.so never links
# libstdc++. jemalloc's unsized operator delete is free: free's address gets those names.
cxxmap=$(dirname "$map")/jemalloc-cxx-rename.txt
(cd "$work" && ar x "$src" jemalloc_cpp.pic.o)
objcopy --redefine-syms="$cxxmap" "$work/jemalloc_cpp.pic.o"
objcopy --redefine-syms="$map" "$work/jemalloc_cpp.pic.o"
bad=$(nm "$work/jemalloc_cpp.pic.o" | awk '
    $1 == "U" && $2 !~ /^(mlje_|je_|ml__cxx_)/ && $2 !~ /^(free|ffs|pthread_mutex_(un)?lock|_GLOBAL_OFFSET_TABLE_)$/ {print $2}
    NF == 3 && $2 ~ /^[A-Z]$/ && $3 !~ /^mlje_/ {print $3}' | sort -u)
if [ -n "$bad" ]; then
    echo "embed-jemalloc: jemalloc_cpp.pic.o names outside jemalloc-cxx-rename.txt: $bad" >&2
    exit 1
fi
(cd "$work" && ar r renamed.a jemalloc_cpp.pic.o && ar x renamed.a jemalloc.pic.o)
for name in _ZdlPv _ZdaPv _ZdlPvRKSt9nothrow_t _ZdaPvRKSt9nothrow_t _ZdlPvSt11align_val_t \
    _ZdaPvSt11align_val_t _ZdlPvSt11align_val_tRKSt9nothrow_t _ZdaPvSt11align_val_tRKSt9nothrow_t; do
    objcopy --add-symbol "$name=.text:0x$line,global,function" "$work/jemalloc.pic.o"
done
(cd "$work" && ar r renamed.a jemalloc.pic.o)
mv "$work/renamed.a" "$out"
