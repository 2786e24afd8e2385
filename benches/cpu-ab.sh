#!/usr/bin/env bash
# CPU per call of two builds of tollgate, side by side on one machine:
#
#   benches/cpu-ab.sh BASELINE NEW [rounds] [seconds-per-run]
#
# Each run starts `tollgate mock-bedrock` and `tollgate serve` from one build
# (in-memory ledger, budget-guard, SigV4-signed upstream, invocation log and
# metrics on), warms it for 2 s, then runs wrk at c=1 and at c=64. CPU per
# call is the gateway's utime+stime (/proc/<pid>/stat) over a run divided by
# the calls served; the log thread's share is its own /proc task line. The
# builds alternate, and which goes first alternates by round, since on a
# shared machine the second of two back-to-back runs tends to be slower.
# Prints one line per run and the medians per build, each with the share of
# the machine's CPU the hypervisor stole during it (steal %, /proc/stat),
# one sign of a busy host. Needs wrk. A run with non-2xx answers is kept,
# and its count printed, only if they are at most one in a thousand calls
# (a policy timed out on a busy host).
#
# Both builds call one mock, this tree's. STORE=durable runs the durable
# ledger instead, and COMMIT=write acknowledges its settles after the log
# write rather than the fsync. For a baseline from an older commit:
# BASE_POLICY=path is the budget-guard component that build can load, and
# BASE_NO_ADMIN=1 leaves out the admin listener it did not have. To set one
# ledger against another in one run, BASE_STORE=memory runs the baseline on
# that store (pass the same build twice). DIRECT=1
# adds a run straight at the mock each round ("direct"), the base of added
# latency. FLOOR=1 adds a run of benches/bare_proxy.rs each round ("floor"):
# the same HTTP stacks forwarding with nothing in between, the CPU per call
# two hops cost on this machine before tollgate does any work.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BASELINE NEW [rounds] [seconds]" >&2; exit 2; }
base=$(realpath "$1"); new=$(realpath "$2"); rounds="${3:-6}"; secs="${4:-6}"
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }
here=$(cd "$(dirname "$0")/.." && pwd)
results=$(mktemp)
trap 'rm -f "$results"' EXIT

# One run of one build: appends "build c rps p50-ms cpu-us log-us" to $results.
run_build() {
  local name=$1 build=$2
  (
    export BIN=$build MOCK_BIN="$here/target/release/tollgate"
    if [ "$name" = baseline ]; then
      [ -z "${BASE_POLICY:-}" ] || export POLICY=$BASE_POLICY
      [ -z "${BASE_NO_ADMIN:-}" ] || export NO_ADMIN=1
      [ -z "${BASE_STORE:-}" ] || STORE=$BASE_STORE COMMIT=${BASE_COMMIT:-}
    fi
    set -euo pipefail
    . "$here/benches/common.sh"
    start_mock
    { server_and_upstream_toml; printf '[ledger]\nstore = "%s"\npath = "ledger.redb"\n%s\n' "${STORE:-memory}" "${COMMIT:+commit = \"$COMMIT\"}"; acme_toml; } >"$work/tollgate.toml"
    write_post_lua acme-load-test-key-0123456789 load
    path="/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    if [ "$name" = direct ]; then
      # The mock alone: no gateway process, so no CPU figures.
      gw=$mock gw_pid=0
    elif [ "$name" = floor ]; then
      "$here/target/release/examples/bare_proxy" 127.0.0.1:0 "$mock" >"$work/floor.out" &
      gw_pid=$!
      until grep -q "listening on" "$work/floor.out" 2>/dev/null; do sleep 0.05; done
      gw=$(sed -n 's/^bare proxy listening on \(.*\)$/\1/p' "$work/floor.out")
    else
      start_gateway
    fi
    wrk -t1 -c8 -d2s -s "$work/post.lua" "$gw$path" >/dev/null
    # A build from before the log had its own thread has no such task.
    log_task=$(dirname "$(grep -l tollgate-log /proc/"$gw_pid"/task/*/comm 2>/dev/null | head -1)")
    ticks() { if [ -r "$1" ]; then awk '{ print $14 + $15 }' "$1"; else echo 0; fi; }
    # The machine's stolen and total CPU ticks (/proc/stat): how much of the
    # run the hypervisor gave to other guests.
    host_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t }' /proc/stat; }
    for c in 1 64; do
      local before log_before
      before=$(ticks /proc/"$gw_pid"/stat); log_before=$(ticks "$log_task/stat"); host_before=$(host_ticks)
      wrk -t$(( c < 2 ? 1 : 2 )) -c"$c" -d"${secs}s" --latency -s "$work/post.lua" "$gw$path" >"$work/wrk.out"
      # A refused call is cheaper than a served one: a run with more than one
      # in a thousand measures something else. Fewer are reported and kept.
      local refused calls
      refused=$(awk '/Non-2xx/ { print $NF }' "$work/wrk.out"); refused=${refused:-0}
      calls=$(awk '/requests in/ { print $1 }' "$work/wrk.out")
      if (( refused * 1000 > calls )); then
        echo "$name: $refused non-2xx answers in $calls at c=$c:" >&2; cat "$work/wrk.out" "$work/gw.err" >&2; exit 1
      elif (( refused > 0 )); then
        echo "$name: $refused non-2xx answers in $calls at c=$c, kept; the gateway warned:" >&2
        grep -a WARN "$work/gw.err" | tail -3 >&2
      fi
      awk -v name="$name" -v c="$c" -v b="$before" -v a="$(ticks /proc/"$gw_pid"/stat)" \
        -v lb="$log_before" -v la="$(ticks "$log_task/stat")" -v hz="$(getconf CLK_TCK)" -v refused="$refused" \
        -v hb="$host_before" -v ha="$(host_ticks)" '
        function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
        /^ +50%/ { p50 = ms($2) } /^Requests\/sec/ { rps = $2 } /requests in/ { n = $1 }
        END { split(hb, h0, " "); split(ha, h1, " "); total = h1[2] - h0[2]
          printf "%s %s %.0f %.3f %.0f %.1f %d %.1f\n", name, c, rps, p50, (a-b)/hz*1e6/n, (la-lb)/hz*1e6/n, refused,
            (total > 0 ? 100 * (h1[1] - h0[1]) / total : 0) }' "$work/wrk.out"
    done
  ) | tee -a "$results"
}

cd "$here"
cargo build --release --quiet
[ -z "${FLOOR:-}" ] || cargo build --release --quiet --example bare_proxy
echo "build c req/s p50-ms cpu-us/call log-thread-us/call non-2xx steal-%"
for r in $(seq "$rounds"); do
  [ -z "${DIRECT:-}" ] || run_build direct ""
  [ -z "${FLOOR:-}" ] || run_build floor ""
  if (( r % 2 )); then run_build baseline "$base"; run_build new "$new"
  else run_build new "$new"; run_build baseline "$base"; fi
done
echo
echo "medians over $rounds rounds:"
for c in 1 64; do
  for name in ${DIRECT:+direct} ${FLOOR:+floor} baseline new; do
    awk -v name="$name" -v c="$c" 'BEGIN { n = 0 } $1 == name && $2 == c { rps[n] = $3; p50[n] = $4; cpu[n] = $5; log_[n] = $6; steal[n] = $8; n++ }
      function med(a, n,   i, j, t) { for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[int(n / 2)] : (a[n / 2 - 1] + a[n / 2]) / 2 }
      END { printf "c=%s %-8s req/s %.0f  p50 %.3f ms  CPU %.0f us/call  log thread %.1f us/call  steal %.1f%%\n", c, name, med(rps, n), med(p50, n), med(cpu, n), med(log_, n), med(steal, n) }' "$results"
  done
done
