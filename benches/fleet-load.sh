#!/usr/bin/env bash
# Load run: throughput and added latency of one replica on the in-memory,
# durable and Redis ledgers, and of three replicas sharing one Redis, in one
# run against the same mock Bedrock (called directly as the baseline).
#
#   benches/fleet-load.sh [seconds-per-run]
#   FSYNC=everysec benches/fleet-load.sh   # Redis' AOF fsynced once a second, not on every write
#
# wrk at c=1, 64 and 256 (three replicas: the connections split across
# them, one wrk each). Redis runs with `appendonly yes` and
# `appendfsync always` unless FSYNC says otherwise. CPU per call is the
# gateways' and Redis' user+system time over the requests served. Needs wrk
# and redis-server (`apt-get install wrk redis-server`).
set -euo pipefail
secs="${1:-8}"
fsync="${FSYNC:-always}"
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is not installed: apt-get install redis-server" >&2; exit 1; }
. "$(dirname "$0")/common.sh"

start_mock
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync "$fsync" \
  --dir "$work" --logfile "$work/redis.log" &
redis_pid=$!
until grep -q "Ready to accept connections" "$work/redis.log" 2>/dev/null; do sleep 0.05; done

# replica DIR STORE: starts `tollgate serve` on its own config in $work/DIR; prints "url pid".
replica() {
  local dir="$work/$1" store=$2
  mkdir -p "$dir"
  {
    server_and_upstream_toml
    cat <<TOML
[ledger]
store = "$store"
path = "ledger.redb"
[ledger.redis]
url = "redis://127.0.0.1:$port"
key-prefix = "bench"
TOML
    acme_toml "$work/cache"
  } >"$dir/tollgate.toml"
  AWS_ACCESS_KEY_ID=AKIDBENCHEXAMPLE AWS_SECRET_ACCESS_KEY=bench/secret+EXAMPLEKEY AWS_EC2_METADATA_DISABLED=true \
    $bin serve --config "$dir/tollgate.toml" >"$dir/gw.out" 2>"$dir/gw.err" &
  local pid=$!
  until grep -q "admin listening on" "$dir/gw.out" 2>/dev/null; do sleep 0.05; done
  echo "$(sed -n 's/^tollgate listening on \(.*\)$/\1/p' "$dir/gw.out") $pid"
}

write_post_lua acme-load-test-key-0123456789 load
path="/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
ticks() { local sum=0 pid; for pid in "$@"; do sum=$(( sum + $(awk '{ print $14 + $15 }' "/proc/$pid/stat") )); done; echo "$sum"; }

# measure C "URL..." "PID...": wrk on each URL with C split among them, in
# parallel; prints "rps p50 p99 gateway-cpu-us redis-cpu-us" (p50 the mean
# of the wrks', p99 the worst).
measure() {
  local c=$1 urls=($2) pids=($3) n i
  n=${#urls[@]}
  local g0 r0 g1 r1 wrks=()
  g0=$(ticks "${pids[@]}" ); r0=$(ticks "$redis_pid")
  for i in "${!urls[@]}"; do
    local share=$(( c / n + (i < c % n ? 1 : 0) ))
    [ "$share" -ge 1 ] || share=1
    wrk -t1 -c"$share" -d"${secs}s" --latency -s "$work/post.lua" "${urls[$i]}$path" >"$work/wrk.$i" &
    wrks+=($!)
  done
  wait "${wrks[@]}"
  g1=$(ticks "${pids[@]}"); r1=$(ticks "$redis_pid")
  if grep -q "Non-2xx" "$work"/wrk.*; then
    echo "non-2xx responses (work dir $work):" >&2; grep -h "Non-2xx" "$work"/wrk.* >&2
    for log in "$work"/*/invocations.jsonl; do grep -v '"status":200' "$log" | head -3 >&2 || true; done
    tail -5 "$work"/*/gw.err >&2; exit 1
  fi
  cat "$work"/wrk.* | awk -v g=$(( g1 - g0 )) -v r=$(( r1 - r0 )) -v hz="$(getconf CLK_TCK)" -v n="$n" '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /^ +50%/ { p50 += ms($2) } /^ +99%/ { v = ms($2); if (v > p99) p99 = v } /^Requests\/sec/ { rps += $2 }
    /requests in/ { reqs += $1 }
    END { printf "%.0f %.3f %.3f %.0f %.0f\n", rps, p50 / n, p99, g / hz * 1e6 / reqs, r / hz * 1e6 / reqs }'
  rm -f "$work"/wrk.*
}

read -r mem_url mem_pid < <(replica memory memory)
read -r dur_url dur_pid < <(replica durable durable)
read -r r1_url r1_pid < <(replica redis1 redis)
fleet_urls=() fleet_pids=()
for i in a b c; do read -r url pid < <(replica "fleet-$i" redis); fleet_urls+=("$url"); fleet_pids+=("$pid"); done
# Warm every gateway (connections, the policy pool, the estimator, Redis' scripts).
for url in "$mock" "$mem_url" "$dur_url" "$r1_url" "${fleet_urls[@]}"; do
  wrk -t1 -c8 -d2s -s "$work/post.lua" "$url$path" >/dev/null
done

echo "Redis appendfsync $fsync; $secs s a run"
echo
echo "| setup | c | req/s | p50 ms | p99 ms | added p50 ms | gateway CPU µs/call | Redis CPU µs/call |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for c in 1 64 256; do
  read -r d_rps d_p50 d_p99 _ _ < <(measure "$c" "$mock" "$redis_pid")
  echo "| mock direct | $c | $d_rps | $d_p50 | $d_p99 | | | |"
  row() {
    local name=$1 urls=$2 pids=$3 rps p50 p99 gcpu rcpu
    read -r rps p50 p99 gcpu rcpu < <(measure "$c" "$urls" "$pids")
    awk -v n="$name" -v c="$c" -v r="$rps" -v a="$p50" -v b="$p99" -v d="$d_p50" -v g="$gcpu" -v x="$rcpu" \
      'BEGIN { printf "| %s | %s | %s | %.3f | %.3f | %.3f | %s | %s |\n", n, c, r, a, b, a - d, g, x }'
  }
  row "1 replica, memory" "$mem_url" "$mem_pid"
  row "1 replica, durable" "$dur_url" "$dur_pid"
  row "1 replica, Redis" "$r1_url" "$r1_pid"
  if [ "$c" -gt 1 ]; then row "3 replicas, Redis" "${fleet_urls[*]}" "${fleet_pids[*]}"; fi
done
