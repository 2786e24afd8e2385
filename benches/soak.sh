#!/usr/bin/env bash
# Soak run: the gateway's resident memory as calls accumulate.
#
#   benches/soak.sh [calls]          # default 1,000,000
#   STORE=durable benches/soak.sh    # the durable ledger instead of the in-memory one
#
# Starts `tollgate mock-bedrock` and `tollgate serve` (plain HTTP on
# loopback, invocation log on and rotated at 64 MiB) with one tenant on
# budget-guard, drives it with wrk at c=16, and prints the gateway's RSS
# (VmRSS) against the calls answered so far, every 5 s, until `calls`.
# Needs wrk (`apt-get install wrk`).
set -euo pipefail
target="${1:-1000000}"
store="${STORE:-memory}"
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }
. "$(dirname "$0")/common.sh"

start_mock
{
  server_and_upstream_toml
  cat <<TOML
[ledger]
store = "$store"
path = "ledger.redb"
[log]
invocations = "invocations.jsonl"
max-bytes = 67108864
[engine]
cache-dir = "cache"
[tenants.acme]
tier = "pro"
budget-usd = "100000000"
policy = "$PWD/policies/target/components/budget_guard.wasm"
[[tenants.acme.api-keys]]
key = "acme-soak-test-key-0123456789"
TOML
} >"$work/tollgate.toml"
start_gateway
pid=$gw_pid
write_post_lua acme-soak-test-key-0123456789 soak
path="/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"

answered() {
  curl -sf "$admin/metrics" | awk '/^tollgate_responses_total/ { n += $2 } END { printf "%d\n", n }'
}
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$pid/status"; }

wrk -t2 -c16 -d3600s -s "$work/post.lua" "$gw$path" >"$work/wrk.out" &
wrk_pid=$!
echo "| calls answered | RSS MiB |"
echo "|---:|---:|"
while :; do
  sleep 5
  n=$(answered); r=$(rss_kib)
  awk -v n="$n" -v r="$r" 'BEGIN { printf "| %d | %.1f |\n", n, r / 1024 }'
  [ "$n" -ge "$target" ] && break
done
kill "$wrk_pid" 2>/dev/null || true
