#!/usr/bin/env bash
# Report run: how fast does `tollgate report` read a large invocation log,
# and does its memory stay flat however many records there are?
#
#   benches/report-load.sh [records]        # default 1,000,000
#
# Writes a tollgate-format log of N records (gateway-shaped lines with the
# billing section: 200 tenants, 20 users each, 6 models, 30 days, 80% admit,
# 10% downgrade, 5% throttle, 5% reject) and a second one of N/10 records,
# then times `tollgate report` over each with /usr/bin/time -v: records per
# second and peak RSS. The same RSS at N and N/10 is the streaming at work.
set -euo pipefail
records="${1:-1000000}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet
bin=target/release/tollgate
work=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

generate() {
  python3 - "$1" "$2" <<'PY'
import random, sys
n, out = int(sys.argv[1]), sys.argv[2]
rng = random.Random(7)
models = [
    ("anthropic.claude-sonnet-4-20250514-v1:0", 3000000000, 15000000000),
    ("us.anthropic.claude-haiku-4-5-20251001-v1:0", 1100000000, 5500000000),
    ("anthropic.claude-3-5-haiku-20241022-v1:0", 800000000, 4000000000),
    ("amazon.nova-pro-v1:0", 800000000, 3200000000),
    ("amazon.nova-lite-v1:0", 60000000, 240000000),
    ("amazon.nova-micro-v1:0", 35000000, 140000000),
]
start = 1793491200  # 2026-11-01T00:00:00Z
with open(out, "w") as f:
    for i in range(n):
        tenant = f"tenant-{rng.randrange(200):03d}"
        user = f"user-{rng.randrange(20):02d}"
        use_case = rng.choice(("chat", "search", "summarise", "support"))
        asked, pin, pout = models[rng.randrange(6)]
        served = asked
        r = rng.random()
        decision = "admit" if r < 0.8 else "downgrade" if r < 0.9 else "throttle" if r < 0.95 else "reject"
        if decision == "downgrade":
            served, pin, pout = models[5]
        t = start + rng.randrange(30 * 86400)
        d, rem = divmod(t - start, 86400)
        ts = f"2026-11-{d + 1:02d}T{rem // 3600:02d}:{rem % 3600 // 60:02d}:{rem % 60:02d}.{rng.randrange(1000):03d}Z"
        if decision in ("admit", "downgrade"):
            tin, tout = rng.randrange(50, 4000), rng.randrange(10, 800)
            cost = -(-(tin * pin + tout * pout) // 1000000)
            served_field = f',"servedModelId":"{served}"' if served != asked else ""
            f.write(
                f'{{"schemaType":"ModelInvocationLog","schemaVersion":"1.0","timestamp":"{ts}","requestId":"req-{i}",'
                f'"operation":"Converse","modelId":"{served}","input":{{"inputTokenCount":{tin}}},'
                f'"output":{{"outputTokenCount":{tout}}},"requestMetadata":{{"tollgate-tenant":"{tenant}",'
                f'"tollgate-decision":"{decision}","tollgate-policy-version":"v3","tollgate-user":"{user}",'
                f'"tollgate-use-case":"{use_case}","team":"blue"}},"tollgate":{{"requestId":"tg-{i}","tenant":"{tenant}",'
                f'"decision":"{decision}","reason":"within budget","policyVersion":"v3","requestedModelId":"{asked}"'
                f'{served_field},"estimatedInputTokens":{tin},"maxOutputTokens":1000,"reservedNanoUsd":{cost * 2},'
                f'"costNanoUsd":{cost},"chargedFrom":"usage","status":200,"billing":{{"region":"us-east-1",'
                f'"priceBook":"98e41d0c9db93c26","baseModel":"{served}","serviceTier":"default","latency":"standard",'
                f'"longContext":false,"unitPrices":{{"input":{pin},"output":{pout},"cacheRead":0,"cacheWrite5m":0,'
                f'"cacheWrite1h":0}},"usage":{{"input":{tin},"output":{tout},"cacheRead":0,"cacheWrite5m":0,'
                f'"cacheWrite1h":0}}}},"latency":{{"decisionUs":40,"gatewayUs":180,"upstreamMs":900,"totalMs":901}}}}}}\n'
            )
        else:
            status = 429 if decision == "throttle" else 402
            f.write(
                f'{{"schemaType":"ModelInvocationLog","schemaVersion":"1.0","timestamp":"{ts}","requestId":"tg-{i}",'
                f'"operation":"Converse","modelId":"{asked}","input":{{}},"output":{{}},"requestMetadata":'
                f'{{"tollgate-tenant":"{tenant}","tollgate-decision":"{decision}","tollgate-user":"{user}",'
                f'"tollgate-use-case":"{use_case}"}},"tollgate":{{"requestId":"tg-{i}","tenant":"{tenant}",'
                f'"decision":"{decision}","reason":"over budget","requestedModelId":"{asked}","estimatedInputTokens":900,'
                f'"maxOutputTokens":1000,"reservedNanoUsd":0,"costNanoUsd":0,"chargedFrom":"none","status":{status},'
                f'"latency":{{"decisionUs":40,"gatewayUs":120,"upstreamMs":0,"totalMs":0}}}}}}\n'
            )
PY
}

# run LOG BY: times one report; prints records/s and peak RSS.
run() {
  local log=$1 by=$2 n
  n=$(wc -l <"$log")
  /usr/bin/time -v "$bin" report --log "$log" --by "$by" --format json >"$work/out.json" 2>"$work/time.txt"
  local secs rss
  secs=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/time.txt" | awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }')
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time.txt")
  local groups
  groups=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["groups"]))' "$work/out.json")
  printf '%-9s records  --by %-22s %6s groups  %6.2f s  %9.0f records/s  peak RSS %6.1f MiB  (%s MB log)\n' \
    "$n" "$by" "$groups" "$secs" "$(echo "$n / $secs" | bc -l)" "$(echo "$rss / 1024" | bc -l)" \
    "$(( $(stat -c %s "$log") / 1000000 ))"
}

echo "generating $records records..." >&2
generate "$records" "$work/big.jsonl"
generate "$((records / 10))" "$work/small.jsonl"
for by in tenant tenant,model,day tenant,user,use-case,day; do
  run "$work/small.jsonl" "$by"
  run "$work/big.jsonl" "$by"
done
