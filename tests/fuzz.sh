#!/bin/sh
# Builds the option parsers' libFuzzer harness with clang (AddressSanitizer and UBSan on) and
# runs it for a bounded time. Usage: fuzz.sh SOURCE_DIR WORK_DIR SECONDS. Exits nonzero when
# clang is missing (the test must not pass without fuzzing) or the fuzzer finds a crash.
set -eu
src=$1 work=$2 seconds=$3
cc=$(command -v clang || command -v clang-14 || true)
if [ -z "$cc" ]; then
    echo "fuzz.sh: clang not found (install clang and libclang-rt-14-dev)" >&2
    exit 1
fi
mkdir -p "$work/corpus"
for seed in 64M 1 4k 18446744073709551614 16777215T exit:3 signal:USR1 signal:RTMIN+2 enomem abort \
    SIGTERM RTMAX-1 "exit:" "1KB" "-1"; do
    printf '%s' "$seed" > "$work/corpus/$(printf '%s' "$seed" | od -An -tx1 | tr -d ' \n')"
done
"$cc" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$src/lib" -I"$src/include" "$src/tests/fuzz_options.c" "$src/lib/options.c" \
    "$src/lib/fmt.c" "$src/lib/host.c" -o "$work/fuzz_options"
cd "$work"
./fuzz_options -max_total_time="$seconds" -max_len=64 -seed=1 -print_final_stats=1 corpus 2>&1 |
    tail -n 12
