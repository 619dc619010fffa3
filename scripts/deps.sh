#!/bin/sh
# Installs what memlimits needs to build and test on Debian 12, when missing. Needs root (or
# sudo). Idempotent: a machine that has everything runs no apt-get at all.
set -eu
packages="build-essential cmake pkg-config libjemalloc-dev libjemalloc2 libcriterion-dev clang
libclang-rt-14-dev clang-format gnuplot-nox python3 perl git libunwind-dev"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "deps.sh: installing:$missing" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
