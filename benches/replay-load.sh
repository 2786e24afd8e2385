#!/usr/bin/env bash
# Replay run: how fast does `tollgate replay` take a candidate policy through
# a large invocation log, and in how much memory?
#
#   benches/replay-load.sh [records] [tenants]
#   KEEP=1 benches/replay-load.sh   # keep the work directory (log, config)
#
# Generates a log of `records` calls (default 1,000,000) in tollgate's own
# record format, as two days of traffic from `tenants` tenants (default 20):
# Converse and ConverseStream calls to Claude 3.5 Haiku with Nova Micro now
# and then, usage between 200 and 2,000 input and 50 and 800 output tokens,
# costs computed with the us-east-1 prices, 1% of calls refused before any
# policy ran, and the log rotated into files of 100,000 records. Half the
# tenants have a $40 daily budget, half a $100 monthly one, both well below
# what the log spends, so the candidate downgrades and rejects. Then it
# replays the log with the Rust budget-guard twice, with its defaults and
# with a stricter configuration, timing each with /usr/bin/time (wall time,
# peak RSS).
set -euo pipefail
records="${1:-1000000}"
tenants="${2:-20}"
. "$(dirname "$0")/common.sh"

policy="$PWD/policies/target/components/budget_guard.wasm"
log="$work/invocations.jsonl"

{
  cat <<TOML
[server]
plain-http = true

[upstream]
kind = "bedrock"
[upstream.bedrock]
region = "us-east-1"

[engine]
cache-dir = "$work/cache"

TOML
  for ((t = 0; t < tenants; t++)); do
    id=$(printf 't%02d' "$t")
    if ((t % 2)); then period='period = "daily"'; budget=40; else period='period = "monthly"'; budget=100; fi
    cat <<TOML
[tenants.$id]
tier = "pro"
budget-usd = "$budget"
$period
policy = "$policy"
[[tenants.$id.api-keys]]
key = "$id-bench-key-0123456789abcdef"

TOML
  done
} >"$work/tollgate.toml"

# The generator: one record per line, the rotated files named as the log
# writer names them (oldest first), the last 100,000-record part the live log.
started=$(date +%s.%N)
awk -v n="$records" -v tenants="$tenants" -v logfile="$log" '
BEGIN {
  srand(42)
  base = 1767225600000          # 2026-01-01T00:00:00Z
  step = int(2 * 86400000 / n)  # two days of traffic
  if (step < 1) step = 1
  parts = int((n + 99999) / 100000)
  for (i = 0; i < n; i++) {
    part = int(i / 100000)
    file = logfile
    if (part < parts - 1) sub(/\.jsonl$/, sprintf("-%04d.jsonl", part), file)
    ms = base + i * step
    secs = int(ms / 1000)
    ts = strftime("%Y-%m-%dT%H:%M:%S", secs, 1) sprintf(".%03dZ", ms % 1000)
    t = sprintf("t%02d", int(rand() * tenants))
    op = (rand() < 0.3) ? "ConverseStream" : "Converse"
    id = sprintf("tg-bench-%012x", i)
    inp = 200 + int(rand() * 1800)
    out = 50 + int(rand() * 750)
    maxout = 1000
    if (rand() < 0.01) {
      printf "{\"schemaType\":\"ModelInvocationLog\",\"schemaVersion\":\"1.0\",\"timestamp\":\"%s\",\"requestId\":\"%s\",\"operation\":\"%s\",\"modelId\":\"anthropic.claude-3-5-haiku-20241022-v1:0\",\"input\":{},\"output\":{},\"requestMetadata\":{},\"tollgate\":{\"requestId\":\"%s\",\"tenant\":\"%s\",\"decision\":\"invalid\",\"reason\":\"Malformed input request\",\"requestedModelId\":\"anthropic.claude-3-5-haiku-20241022-v1:0\",\"estimatedInputTokens\":0,\"maxOutputTokens\":0,\"reservedNanoUsd\":0,\"costNanoUsd\":0,\"chargedFrom\":\"none\",\"status\":400,\"errorType\":\"ValidationException\",\"latency\":{\"decisionUs\":0,\"gatewayUs\":20,\"upstreamMs\":0,\"totalMs\":0}}}\n", ts, id, op, id, t > file
      continue
    }
    if (rand() < 0.1) {
      model = "amazon.nova-micro-v1:0"; pin = 35; pout = 140
    } else {
      model = "anthropic.claude-3-5-haiku-20241022-v1:0"; pin = 800; pout = 4000
    }
    cost = inp * pin + out * pout
    held = inp * pin + maxout * pout
    user = sprintf("user-%d", int(rand() * 500))
    usecase = (rand() < 0.5) ? "chat" : "search"
    total = 200 + int(rand() * 3000)
    printf "{\"schemaType\":\"ModelInvocationLog\",\"schemaVersion\":\"1.0\",\"timestamp\":\"%s\",\"requestId\":\"%s\",\"operation\":\"%s\",\"modelId\":\"%s\",\"input\":{\"inputTokenCount\":%d,\"cacheReadInputTokenCount\":0,\"cacheWriteInputTokenCount\":0},\"output\":{\"outputTokenCount\":%d},\"requestMetadata\":{\"use-case\":\"%s\",\"user\":\"%s\",\"tollgate-tenant\":\"%s\",\"tollgate-decision\":\"admit\",\"tollgate-policy-version\":\"%s@1:0123456789ab\",\"tollgate-user\":\"%s\",\"tollgate-use-case\":\"%s\"},\"tollgate\":{\"requestId\":\"%s\",\"tenant\":\"%s\",\"decision\":\"admit\",\"reason\":\"12%% of the $100.00 budget used\",\"policyVersion\":\"%s@1:0123456789ab\",\"requestedModelId\":\"%s\",\"estimatedInputTokens\":%d,\"maxOutputTokens\":%d,\"reservedNanoUsd\":%d,\"costNanoUsd\":%d,\"chargedFrom\":\"usage\",\"status\":200,\"billing\":{\"region\":\"us-east-1\",\"priceBook\":\"bench\",\"baseModel\":\"%s\",\"serviceTier\":\"default\",\"latency\":\"standard\",\"longContext\":false,\"unitPrices\":{\"input\":%d000000,\"output\":%d000000,\"cacheRead\":0,\"cacheWrite\":0},\"usage\":{\"input\":%d,\"output\":%d,\"cacheRead\":0,\"cacheWrite5m\":0,\"cacheWrite1h\":0}},\"latency\":{\"decisionUs\":7,\"gatewayUs\":41,\"upstreamMs\":%d,\"totalMs\":%d}}}\n", ts, id, op, model, inp, out, usecase, user, t, t, user, usecase, id, t, t, model, inp, maxout, held, cost, model, pin, pout, inp, out, total - 1, total > file
  }
}' </dev/null
generated=$(echo "$(date +%s.%N) - $started" | bc)
echo "generated $records records in $(ls "$work"/invocations*.jsonl | wc -l) files, $(du -shc "$work"/invocations*.jsonl | tail -1 | cut -f1), in ${generated}s"

run() {
  echo
  echo "== tollgate replay $*"
  /usr/bin/time -f "wall %e s, peak RSS %M KiB, user %U s, sys %S s" \
    $bin replay --policy "$policy" --log "$log" --config "$work/tollgate.toml" --show 2 "$@" 2>&1
}
run
run --policy-config '{"reject-at-percent": 60, "downgrade-at-percent": 40}'
