#!/usr/bin/env bash
# run_purge_study.sh: the bounds on jemalloc's purging (lib/host_purge.c) measured where they act:
# large-block churn of several shapes (wl_bigblocks OPS SLOTS MIN_KIB MAX_KIB) and thread churn
# (wl_mstress, wl_mleak). Runs each under glibc, bare jemalloc, memlimits with never-firing limits
# and, if BASELINE_LIB is set, another libmemlimits.so (an earlier build: the before of a change),
# interleaved round-robin; prints per workload and configuration the median time (the workload's
# own elapsed_s), peak RSS (GNU time's %M) and page faults, with the two-core speedup check at
# the start and the end (design.md, "Measuring on these machines"). Needs bash, awk, sort, GNU
# time; no python.
set -euo pipefail

prog=${0##*/}

usage() {
    cat >&2 <<EOF
usage: $prog BUILD_DIR [RUNS=5]

Environment:
  MEMLIMITS_LIB  the library to preload      (default: BUILD_DIR/libmemlimits.so)
  JEMALLOC_LIB   bare jemalloc               (default: $default_jemalloc)
  BASELINE_LIB   another libmemlimits.so, run as "baseline+limits" (default: none)
  SPIN_ITERS     iterations of the throttling check's loop (default: 200000000)
EOF
    exit 2
}

die() {
    echo "$prog: error: $*" >&2
    exit 1
}

default_jemalloc=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2

[[ $# -ge 1 && $# -le 2 ]] || usage
build_dir=$1
runs=${2:-5}
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, got '$runs'"
bench=$build_dir/bench
memlimits_lib=${MEMLIMITS_LIB:-$build_dir/libmemlimits.so}
jemalloc_lib=${JEMALLOC_LIB:-$default_jemalloc}
baseline_lib=${BASELINE_LIB:-}
for b in wl_bigblocks wl_mstress wl_mleak malloc_bench; do
    [[ -x $bench/$b ]] || die "missing $bench/$b: build with -DMEMLIMITS_BUILD_BENCH=ON"
done
[[ -f $memlimits_lib ]] || die "libmemlimits.so not found: $memlimits_lib"
[[ -f $jemalloc_lib ]] || die "bare jemalloc not found: $jemalloc_lib (apt-get install libjemalloc2)"
[[ -z $baseline_lib || -f $baseline_lib ]] || die "BASELINE_LIB not found: $baseline_lib"
[[ -x /usr/bin/time ]] || die "GNU time not found at /usr/bin/time (apt-get install time)"
memlimits_lib=$(realpath -- "$memlimits_lib")
jemalloc_lib=$(realpath -- "$jemalloc_lib")
[[ -z $baseline_lib ]] || baseline_lib=$(realpath -- "$baseline_lib")

# Nothing inherited may change a configuration.
unset LD_PRELOAD MALLOC_CONF
for var in $(compgen -e | grep -E '^(MEMLIMITS_|MALLOC_)' || true); do unset "$var"; done

workloads=(
    "wl_bigblocks 600 4 1024 16384"
    "wl_bigblocks 600 16 256 8192"
    "wl_bigblocks 2000 8 64 4096"
    "wl_bigblocks 300 2 4096 65536"
    "wl_mstress 4 50"
    "wl_mleak 2 1000"
)
configs=(glibc jemalloc memlimits+limits)
[[ -z $baseline_lib ]] || configs+=(baseline+limits)

spin_check() {
    local out
    out=$("$bench/malloc_bench" --spin "${SPIN_ITERS:-200000000}") || die "speedup check failed"
    echo "speedup check ($1): $out"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/purge_study.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
spin_check start
for ((r = 0; r < runs; r++)); do
    printf 'round %d/%d\n' $((r + 1)) "$runs"
    for w in "${workloads[@]}"; do
        n=${#configs[@]}
        for ((k = 0; k < n; k++)); do
            c=${configs[$(((k + r) % n))]}
            env=()
            case $c in
            glibc) ;;
            jemalloc) env=(LD_PRELOAD="$jemalloc_lib") ;;
            memlimits+limits) env=(LD_PRELOAD="$memlimits_lib") ;;
            baseline+limits) env=(LD_PRELOAD="$baseline_lib") ;;
            esac
            [[ $c != *+limits ]] || env+=(MEMLIMITS_HEAP=64G MEMLIMITS_ALLOC=1000T)
            # shellcheck disable=SC2086 # the workload's arguments split on purpose
            out=$(env "${env[@]}" /usr/bin/time -f 'rss_kb=%M faults=%R' -o "$work/time" \
                "$bench/"$w) || die "$c: $w failed"
            elapsed=$(sed -n 's/.*elapsed_s=\([0-9.]*\).*/\1/p' <<<"$out")
            [[ -n $elapsed ]] || die "$c: $w printed no elapsed_s"
            printf '%s\t%s\t%s\t%s\n' "$w" "$c" "$elapsed" "$(tr '\n' ' ' <"$work/time")" \
                >>"$work/raw.tsv"
        done
    done
done
spin_check end

# Medians per workload and configuration (runs is small: sort and take the middle).
echo
printf '%-34s %-17s %9s %10s %10s\n' workload config "time (s)" "RSS (MB)" faults
for w in "${workloads[@]}"; do
    for c in "${configs[@]}"; do
        awk -F'\t' -v w="$w" -v c="$c" '$1 == w && $2 == c {
                split($4, f, /[= ]/); print $3, f[2], f[4] }' "$work/raw.tsv" >"$work/cell"
        t=$(cut -d' ' -f1 "$work/cell" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
        m=$(cut -d' ' -f2 "$work/cell" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
        p=$(cut -d' ' -f3 "$work/cell" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
        printf '%-34s %-17s %9.3f %10.1f %10d\n' "$w" "$c" "$t" "$(awk -v m="$m" 'BEGIN {print m / 1000}')" "$p"
    done
done
echo "(medians of $runs interleaved runs; limits: MEMLIMITS_HEAP=64G MEMLIMITS_ALLOC=1000T)"
