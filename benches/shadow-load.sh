#!/usr/bin/env bash
# Load run: what a shadow policy costs the calls it shadows. The same
# gateway is measured without a shadow, with one (a stricter policy that
# disagrees on part of the traffic), and without again, at c=1 and c=8,
# with wrk (a real HTTP load generator).
#
#   benches/shadow-load.sh [seconds-per-run]
#
# Prints one table in the format of benches/RESULTS.md, with the gateway's
# CPU time per call, and the shadow's report (calls shadowed, skipped,
# disagreements). Needs wrk (`apt-get install wrk`).
set -euo pipefail
secs="${1:-10}"
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }
. "$(dirname "$0")/common.sh"
token=bench-admin-token-0123456789

start_mock
{
  server_and_upstream_toml "admin-token = \"$token\""
  cat <<TOML
[ledger]
store = "memory"
[log]
invocations = "invocations.jsonl"
[engine]
cache-dir = "cache"
[tenants.acme]
tier = "free"
budget-usd = "1000000"
included-tokens = 1000000000000
policy = "$PWD/policies/target/components/allow_all.wasm"
[[tenants.acme.api-keys]]
key = "acme-load-test-key-0123456789"
TOML
} >"$work/tollgate.toml"
start_gateway
write_post_lua acme-load-test-key-0123456789 load
path="/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$gw_pid/stat"; }

# One run: prints "rps p50 p99 cpu-us-per-call".
run() {
  local c=$1 threads=$(( $1 < 2 ? 1 : 2 )) before after
  before=$(cpu_ticks)
  wrk -t"$threads" -c"$c" -d"${secs}s" --latency -s "$work/post.lua" "$gw$path" >"$work/wrk.out"
  after=$(cpu_ticks)
  if grep -q "Non-2xx" "$work/wrk.out"; then
    echo "non-2xx responses during the run (work dir $work):" >&2; cat "$work/wrk.out" >&2; exit 1
  fi
  awk -v ticks=$(( after - before )) -v hz="$(getconf CLK_TCK)" '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /^Requests\/sec/ { rps = $2 }
    /requests in/ { n = $1 }
    END { printf "%.0f %.3f %.3f %.0f\n", rps, p50, p99, ticks / hz * 1e6 / n }' "$work/wrk.out"
}

shadow() {
  curl -sf -X "$1" -H "authorization: Bearer $token" ${2:+--data-binary "@$2"} "$admin/admin/tenants/acme/policy/shadow" >/dev/null
}

wrk -t1 -c8 -d2s -s "$work/post.lua" "$gw$path" >/dev/null

echo "| c | shadow | req/s | p50 ms | p99 ms | CPU µs/call |"
echo "|---|---|---|---|---|---|"
for c in 1 8; do
  for phase in off on off; do
    if [ "$phase" = on ]; then shadow PUT policies/target/components/tiered.wasm; fi
    read -r rps p50 p99 cpu < <(run "$c")
    echo "| $c | $phase | $rps | $p50 | $p99 | $cpu |"
    if [ "$phase" = on ]; then
      curl -sf -H "authorization: Bearer $token" "$admin/admin/tenants/acme/policy/shadow" >"$work/report.json"
      shadow DELETE
    fi
  done
done
echo
echo "last shadow report: $(cat "$work/report.json")"
