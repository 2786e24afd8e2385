#!/usr/bin/env bash
# Load run: the gateway's overhead against direct calls to the mock Bedrock,
# with wrk (a real HTTP load generator) at c=1, 8 and 64.
#
#   benches/gateway-load.sh [seconds-per-run]
#   STORE=memory benches/gateway-load.sh   # the in-memory ledger instead of the durable one
#   COMMIT=write benches/gateway-load.sh    # durable, acknowledged after the log write, not the fsync
#
# Starts `tollgate mock-bedrock` and `tollgate serve` (plain HTTP on loopback,
# durable ledger, invocation log on) in front of it, with one tenant on the
# budget-guard policy, then runs wrk against each. Needs wrk
# (`apt-get install wrk`). Prints one table in the format of benches/RESULTS.md.
set -euo pipefail
secs="${1:-10}"
store="${STORE:-durable}"
commit="${COMMIT:-fsync}"
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }
. "$(dirname "$0")/common.sh"

start_mock
{
  server_and_upstream_toml
  printf '[ledger]\nstore = "%s"\npath = "ledger.redb"\ncommit = "%s"\n' "$store" "$commit"
  acme_toml
} >"$work/tollgate.toml"
start_gateway
write_post_lua acme-load-test-key-0123456789 load
path="/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"

# One run: prints "rps p50 p99" (latencies in ms).
run() {
  local url=$1 c=$2 threads=$(( $2 < 2 ? 1 : 2 ))
  wrk -t"$threads" -c"$c" -d"${secs}s" --latency -s "$work/post.lua" "$url$path" >"$work/wrk.out"
  if grep -q "Non-2xx" "$work/wrk.out"; then
    echo "non-2xx responses during the run (work dir $work):" >&2; cat "$work/wrk.out" >&2
    [ -f "$work/invocations.jsonl" ] && grep -v '"status":200' "$work/invocations.jsonl" | head -3 >&2; exit 1
  fi
  awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /^Requests\/sec/ { rps = $2 }
    END { printf "%.0f %.3f %.3f\n", rps, p50, p99 }' "$work/wrk.out"
}

# Warm both (connections, the policy pool, the estimator).
wrk -t1 -c8 -d2s -s "$work/post.lua" "$mock$path" >/dev/null
wrk -t1 -c8 -d2s -s "$work/post.lua" "$gw$path" >/dev/null

echo "| c | direct req/s | direct p50 ms | direct p99 ms | gateway req/s | gateway p50 ms | gateway p99 ms | added p50 ms | added p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|"
for c in 1 8 64; do
  read -r d_rps d_p50 d_p99 < <(run "$mock" "$c")
  read -r g_rps g_p50 g_p99 < <(run "$gw" "$c")
  awk -v c="$c" -v dr="$d_rps" -v d5="$d_p50" -v d9="$d_p99" -v gr="$g_rps" -v g5="$g_p50" -v g9="$g_p99" \
    'BEGIN { printf "| %s | %s | %.3f | %.3f | %s | %.3f | %.3f | %.3f | %.3f |\n", c, dr, d5, d9, gr, g5, g9, g5-d5, g9-d9 }'
done
echo
echo "invocation records written: $(wc -l <"$work/invocations.jsonl")"
