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
cd "$(dirname "$0")/.."
target="${1:-1000000}"
store="${STORE:-memory}"
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet
bin=target/release/tollgate
$bin policy build policies --out policies/target/components >/dev/null
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

$bin mock-bedrock --listen 127.0.0.1:0 >"$work/mock.out" &
until grep -q "listening on" "$work/mock.out" 2>/dev/null; do sleep 0.05; done
mock=$(sed -n 's/^mock Bedrock listening on \(.*\)$/\1/p' "$work/mock.out")

cat >"$work/tollgate.toml" <<TOML
[server]
listen = "127.0.0.1:0"
admin-listen = "127.0.0.1:0"
plain-http = true
[upstream]
kind = "bedrock"
[upstream.bedrock]
endpoint = "$mock"
region = "us-east-1"
auth = "none"
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
$bin serve --config "$work/tollgate.toml" >"$work/gw.out" 2>"$work/gw.err" &
pid=$!
until grep -q "admin listening on" "$work/gw.out" 2>/dev/null; do sleep 0.05; done
gw=$(sed -n 's/^tollgate listening on \(.*\)$/\1/p' "$work/gw.out")
admin=$(sed -n 's/^tollgate admin listening on \(.*\)$/\1/p' "$work/gw.out")

cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer acme-soak-test-key-0123456789"
wrk.body = '{"messages":[{"role":"user","content":[{"text":"Summarise the quarterly report in three short bullet points"}]}],"inferenceConfig":{"maxTokens":256},"requestMetadata":{"user":"u-1","use-case":"soak"}}'
LUA
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
