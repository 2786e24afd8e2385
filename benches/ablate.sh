#!/usr/bin/env bash
# What each optional part of a call costs: one build of tollgate at c=64
# with parts switched off in its configuration, the configurations taking
# turns within each round.
#
#   benches/ablate.sh [rounds] [seconds-per-run]
#
# full: in-memory ledger, budget-guard, SigV4-signed upstream, invocation
# log and metrics (as benches/cpu-ab.sh). nosigv4: calls to the mock
# unsigned. nolog: no invocation log. allowall: the allow-all policy.
# none: all three off. CPU per call is the gateway's utime+stime
# (/proc/<pid>/stat) over the run divided by the calls served. Needs wrk.
set -euo pipefail
rounds="${1:-3}"; secs="${2:-6}"
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }
. "$(dirname "$0")/common.sh"
start_mock
results=$work/results

# run NAME SIGV4|none LOG(yes|no) POLICY: appends "name req/s cpu-us" to $results.
run() {
  local name=$1 auth=$2 log=$3 policy=$4
  {
    UPSTREAM_AUTH=$auth server_and_upstream_toml
    printf '[ledger]\nstore = "memory"\n'
    [ "$log" = no ] || printf '[log]\ninvocations = "invocations.jsonl"\n'
    POLICY="$PWD/policies/target/components/$policy.wasm" acme_toml | sed '/^\[log\]$/,+1d'
  } >"$work/tollgate.toml"
  start_gateway
  wrk -t1 -c8 -d2s -s "$work/post.lua" "$gw$path" >/dev/null
  local before after
  before=$(awk '{ print $14 + $15 }' /proc/"$gw_pid"/stat)
  wrk -t2 -c64 -d"${secs}s" -s "$work/post.lua" "$gw$path" >"$work/wrk.out"
  after=$(awk '{ print $14 + $15 }' /proc/"$gw_pid"/stat)
  if grep -q "Non-2xx" "$work/wrk.out"; then
    echo "$name: non-2xx answers:" >&2; cat "$work/wrk.out" "$work/gw.err" >&2; exit 1
  fi
  awk -v name="$name" -v b="$before" -v a="$after" -v hz="$(getconf CLK_TCK)" '
    /^Requests\/sec/ { rps = $2 } /requests in/ { n = $1 }
    END { printf "%s %.0f %.0f\n", name, rps, (a-b)/hz*1e6/n }' "$work/wrk.out" | tee -a "$results"
  kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true
}

write_post_lua acme-load-test-key-0123456789 load
path="/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
echo "config req/s cpu-us/call"
for _ in $(seq "$rounds"); do
  run full sigv4 yes budget_guard
  run nosigv4 none yes budget_guard
  run nolog sigv4 no budget_guard
  run allowall sigv4 yes allow_all
  run none none no allow_all
done
echo
echo "medians over $rounds rounds:"
for name in full nosigv4 nolog allowall none; do
  awk -v name="$name" 'BEGIN { n = 0 } $1 == name { rps[n] = $2; cpu[n] = $3; n++ }
    function med(a, n,   i, j, t) { for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return n % 2 ? a[int(n / 2)] : (a[n / 2 - 1] + a[n / 2]) / 2 }
    END { printf "%-9s req/s %.0f  CPU %.0f us/call\n", name, med(rps, n), med(cpu, n) }' "$results"
done
