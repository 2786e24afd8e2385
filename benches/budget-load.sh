#!/usr/bin/env bash
# Budget run: do budgets hold under load when estimates run low and callers
# hang up, and how much of each budget can actually be spent?
#
#   benches/budget-load.sh [seconds] [budget-usd-per-tenant]
#   SCALE=100 benches/budget-load.sh   # estimates as calibrated: the baseline
#
# Starts `tollgate mock-bedrock` (50 ms latency, 10 ms between stream events) and `tollgate serve` (durable
# ledger, invocation log, two tenants on allow-all, input estimates scaled to
# 70% so every call settles above its hold). Then, at once:
# - wrk (a real HTTP load generator), 61 connections, input-heavy Converse
#   calls on Claude 3.5 Haiku, spread over both tenants;
# - 3 more clients (5% of 64), curl loops that hang up mid-call: two cut
#   Converse calls at 25 ms, before the upstream answers, one cuts
#   ConverseStream calls after 80 ms, mid-stream.
# The run goes on past the point where both budgets are spent. Then it waits
# for the gateway to settle everything, prints each tenant's spend against its
# budget, and runs `tollgate reconcile` (which must be exact). Needs wrk, curl
# and jq (`apt-get install wrk curl jq`).
set -euo pipefail
secs="${1:-40}"
budget="${2:-8}"
scale="${SCALE:-70}"
for tool in wrk curl jq; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed: apt-get install $tool" >&2; exit 1; }
done
. "$(dirname "$0")/common.sh"

start_mock --latency-ms 50 --stream-event-interval-ms 10

token=budget-load-admin-token-0123456789
{
  server_and_upstream_toml "admin-token = \"$token\""
  cat <<TOML
max-attempts = 1
[ledger]
path = "ledger.redb"
[log]
invocations = "invocations.jsonl"
[engine]
cache-dir = "cache"
[estimator]
input-scale-percent = $scale
TOML
  for t in acme globex; do
    cat <<TOML
[tenants.$t]
tier = "pro"
budget-usd = "$budget"
policy = "$PWD/policies/target/components/allow_all.wasm"
[[tenants.$t.api-keys]]
key = "$t-budget-load-key-0123456789"
TOML
  done
} >"$work/tollgate.toml"
start_gateway

model="anthropic.claude-3-5-haiku-20241022-v1%3A0"
# About 500 tokens of prompt and at most 64 of output: the input dominates.
prompt=$(printf 'Quarterly figures for the board, region by region, with notes. %.0s' $(seq 1 30))
body="{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"$prompt\"}]}],\"inferenceConfig\":{\"maxTokens\":64}}"
printf '%s' "$body" >"$work/body.json"

cat >"$work/post.lua" <<LUA
local keys = { "acme-budget-load-key-0123456789", "globex-budget-load-key-0123456789" }
local n = 0
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = [[$body]]
request = function()
  n = n + 1
  wrk.headers["authorization"] = "Bearer " .. keys[(n % 2) + 1]
  return wrk.format(nil, "/model/$model/converse")
end
LUA

# Callers that hang up: curl gives up after --max-time and closes the connection.
hang_up() {
  local op=$1 cut=$2 tenant=$3 n=0 cut_short=0
  local stop=$((SECONDS + secs))
  while [ $SECONDS -lt $stop ]; do
    n=$((n + 1))
    if ! curl -s -o /dev/null --max-time "$cut" -X POST "$gw/model/$model/$op" \
        -H "authorization: Bearer $tenant-budget-load-key-0123456789" \
        -H "content-type: application/json" --data-binary @"$work/body.json"; then
      cut_short=$((cut_short + 1))
    fi
  done
  echo "$op $n $cut_short" >>"$work/hangups"
}
hang_up converse 0.025 acme &
hang_up converse 0.025 globex &
hang_up converse-stream 0.08 acme &
wrk -t2 -c61 -d"${secs}s" -s "$work/post.lua" "$gw" >"$work/wrk.out"
while [ "$(wc -l <"$work/hangups" 2>/dev/null || echo 0)" -lt 3 ]; do sleep 0.2; done

# Everything started is settled and logged before the figures are read.
curl -sf -H "authorization: Bearer $token" "$admin/admin/idle" >/dev/null
curl -sf -H "authorization: Bearer $token" "$admin/admin/tenants" >"$work/tenants.json"

requests=$(awk '/requests in/ { print $1 }' "$work/wrk.out")
echo "input estimates scaled to ${scale}%"
echo "wrk: $requests requests from 61 connections in ${secs}s"
awk '{ printf "hang-up clients, %s: %s calls, %s cut short by the client\n", $1, $2, $3 }' "$work/hangups"
echo "invocation records: $(wc -l <"$work/invocations.jsonl")"
echo "records settled above their hold: $(jq -s '[.[] | select(.tollgate.costNanoUsd > .tollgate.reservedNanoUsd)] | length' "$work/invocations.jsonl")"
echo "records of admitted calls: $(jq -s '[.[] | select(.tollgate.status == 200)] | length' "$work/invocations.jsonl")"
echo
echo "| tenant | budget (nano-USD) | settled spend | share of budget spent | within budget |"
echo "|---|---|---|---|---|"
jq -r '.[] | [.tenant, ."budget-nano-usd", ."spent-nano-usd"] | @tsv' "$work/tenants.json" |
  while IFS=$'\t' read -r tenant limit spent; do
    awk -v t="$tenant" -v l="$limit" -v s="$spent" \
      'BEGIN { printf "| %s | %.0f | %.0f | %.2f%% | %s |\n", t, l, s, 100 * s / l, (s <= l ? "yes" : "NO") }'
  done
echo
$bin reconcile --config "$work/tollgate.toml" --admin-url "$admin" --admin-token "$token" | tail -4
