#!/usr/bin/env bash
# A quiet tenant's first calls after a start: `tollgate serve` is started
# afresh N times with the Python budget-guard at the default 5 ms deadline,
# and makes 6 calls (CALLS) one at a time through the gateway each time.
# Past 128 calls a pooled instance is retired, and a call creates the next
# one on its path: CALLS=600 measures those calls too. Prints
# how many starts had a call failed closed, how many calls were, and the
# median decision time of the first call and of the later ones (from the
# invocation log's latency.decisionUs).
#
#   benches/cold-start.sh [starts]            (default 20)
#   BIN=path benches/cold-start.sh 20         # a kept baseline build
#   CALLS=600 benches/cold-start.sh 3         # calls after instances retire
#   HOGS=2 CALLS=600 benches/cold-start.sh 3  # beside 2 busy loops at normal
#                                             # priority, as a busy host
set -euo pipefail
starts="${1:-20}"
calls="${CALLS:-6}"
. "$(dirname "$0")/common.sh"

sh policies/toolchain/install.sh .tools >/dev/null
$bin policy build policies/python/examples/budget-guard --out "$work/py" --tools .tools >/dev/null
policy=$(ls "$work"/py/*.wasm)
export UPSTREAM_AUTH=none
start_mock
# Busy loops at normal priority: other work on the same host, for the whole run.
for _ in $(seq "${HOGS:-0}"); do
  (while :; do :; done) &
done

bad=0 refused=0
: >"$work/first" ; : >"$work/later"
for i in $(seq "$starts"); do
  rm -f "$work/tollgate.toml" "$work/invocations.jsonl"
  {
    server_and_upstream_toml
    cat <<TOML
[log]
invocations = "$work/invocations.jsonl"
[engine]
cache-dir = "$PWD/target/bench-policy-cache"
[tenants.acme]
tier = "pro"
budget-usd = "1000000"
deadline-ms = 5
memory-limit-mib = 64
policy = "$policy"
[[tenants.acme.api-keys]]
key = "acme-load-test-key-0123456789"
TOML
  } >"$work/tollgate.toml"
  start_gateway
  failed=0
  for call in $(seq "$calls"); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
      -H 'authorization: Bearer acme-load-test-key-0123456789' \
      -d '{"messages":[{"role":"user","content":[{"text":"hi"}]}],"inferenceConfig":{"maxTokens":64}}' \
      "$gw/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse" || true)
    [ "$code" = 200 ] || { failed=$((failed + 1)); echo "call $call: HTTP $code" >&2; }
  done
  kill -INT "$gw_pid"; wait "$gw_pid" 2>/dev/null || true
  [ "$failed" -eq 0 ] || bad=$((bad + 1))
  refused=$((refused + failed))
  python3 - "$work/invocations.jsonl" "$work/first" "$work/later" <<'PY'
import json, sys
records = [json.loads(l)["tollgate"] for l in open(sys.argv[1])]
for r in records:
    if r.get("policyFailure"):
        print(f"failed closed: {r['reason']} (decision {r['latency']['decisionUs']} µs)", file=sys.stderr)
us = [r["latency"]["decisionUs"] for r in records]
open(sys.argv[2], "a").write(f"{us[0]}\n")
open(sys.argv[3], "a").writelines(f"{u}\n" for u in us[1:])
PY
done
median() { sort -n "$1" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "$starts starts: $bad had a call failed closed; $refused of $((starts * calls)) calls failed closed"
slowest() { sort -n "$1" | tail -n "$2" | tr '\n' ' '; }
echo "decision, first call: median $(median "$work/first") µs; later calls: median $(median "$work/later") µs"
echo "later calls' slowest decisions (µs): $(slowest "$work/later" 5)"
