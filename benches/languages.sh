#!/bin/sh
# budget-guard in every policy language, in one run: component size, build
# time (a rebuild after touching the source, toolchains installed), load from
# the compile cache, and decision latency through the host
# (`tollgate policy bench`, pooled instances, one thread), with the contract
# 0.1.0 build of the Rust policy (tests/fixtures) beside its 0.2.0 rebuild.
#
#   sh benches/languages.sh [seconds-per-bench]    (default 3)
#
# Run from the repository root after `cargo build --release`.
set -eu

secs=${1:-3}
bin=target/release/tollgate
tools=.tools
out=$(mktemp -d)
cache=$out/cache
cases=policies/conformance/budget-guard.cases.toml
trap 'rm -rf "$out"' EXIT

sh policies/toolchain/install.sh "$tools" >/dev/null

# Prints the seconds a command took.
took() {
    start=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    end=$(date +%s.%N)
    awk "BEGIN { printf \"%.1f\", $end - $start }"
}

build() { # label dir [engine]
    dir=$2
    for f in "$dir"/policy.py "$dir"/policy.js "$dir"/policy.c "$dir"/src/lib.rs; do
        if [ -f "$f" ]; then touch "$f"; fi
    done
    if [ -n "${3:-}" ]; then
        took "$bin" policy build "$dir" --out "$out/$1" --tools "$tools" --js-engine "$3"
    else
        took "$bin" policy build "$dir" --out "$out/$1" --tools "$tools"
    fi
}

row() { # label component build-seconds
    size=$(stat -c %s "$2")
    "$bin" policy check --cache-dir "$cache" "$2" >/dev/null
    load=$("$bin" policy check --cache-dir "$cache" "$2" | sed -n 's/.*loaded from the compile cache in //p')
    lat=$("$bin" policy bench "$2" --cases "$cases" --seconds "$secs" | sed -n 's/ *latency *//p')
    p50=$(echo "$lat" | sed -n 's/.*p50 \([^ ]*\).*/\1/p')
    p99=$(echo "$lat" | sed -n 's/.*p99 \([^ ]*\) .*/\1/p')
    printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$size" "$3" "$load" "$p50" "$p99"
}

echo "| build | bytes | build (s) | load from cache | p50 | p99 |"
echo "|---|---:|---:|---:|---:|---:|"
row "rust, contract 0.1.0 (fixture)" tests/fixtures/contract-0.1.0/budget_guard.wasm "-"
t=$(build rust policies/examples/budget-guard)
row "rust" "$out/rust/budget_guard.wasm" "$t"
t=$(build c policies/c/examples/budget-guard)
row "c" "$out/c/budget_guard_c.wasm" "$t"
t=$(build py policies/python/examples/budget-guard)
row "python" "$out/py/budget_guard_py.wasm" "$t"
t=$(build qjs policies/js/examples/budget-guard quickjs)
row "javascript (quickjs)" "$out/qjs/budget_guard_js.wasm" "$t"
t=$(build sm policies/js/examples/budget-guard starlingmonkey)
row "javascript (starlingmonkey)" "$out/sm/budget_guard_js.wasm" "$t"
