#!/usr/bin/env bash
# The per-decision cost of Python and JavaScript policies: builds an empty
# policy (admit only: the floor set by the bindings) and budget-guard in
# Python, JavaScript on QuickJS and JavaScript on StarlingMonkey, benches
# each several times and prints the medians.
#
#   benches/guest-cost.sh [--seconds 5] [--rounds 5] [--base REV]
#                         [--engines "py qjs sm"] [--policies "empty budget-guard"]
#                         [--config JSON] [--out DIR]
#
# --base REV also builds the helper modules and the budget-guard examples as
# they are at git revision REV, and benches them alternately with the working
# tree's (the machine is noisy: compare only figures of the same run).
# --config passes a tenant config to every decision (default: none, the
# first case of budget-guard.cases.toml as it stands).
#
# The builds mirror `tollgate policy build` (src/policy_build_py.rs,
# src/policy_build_js.rs) but take the helper module from the tree (or REV)
# rather than the one compiled into the binary, so a change to the helper can
# be measured without rebuilding tollgate. PY_FLAGS adds options to
# `componentize-py componentize` (e.g. PY_FLAGS=--stub-wasi).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOLLGATE=${TOLLGATE:-$ROOT/target/release/tollgate}
TOOLS=${TOOLS:-$ROOT/.tools}
CASES=$ROOT/policies/conformance/budget-guard.cases.toml
SECONDS_EACH=5
ROUNDS=5
BASE=
ENGINES="py qjs sm"
POLICIES="empty budget-guard"
CONFIG=
OUT=
PY_FLAGS=${PY_FLAGS:-}

while [ $# -gt 0 ]; do
  case $1 in
    --seconds) SECONDS_EACH=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --base) BASE=$2; shift 2 ;;
    --engines) ENGINES=$2; shift 2 ;;
    --policies) POLICIES=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$TOLLGATE" ] || { echo "build tollgate first: cargo build --release" >&2; exit 1; }
OUT=${OUT:-$(mktemp -d /tmp/guest-cost.XXXXXX)}
mkdir -p "$OUT"
VARIANTS="tree"
[ -n "$BASE" ] && VARIANTS="base tree"

# The file `path` of the variant's sources.
source_of() {
  local variant=$1 path=$2
  if [ "$variant" = base ]; then git -C "$ROOT" show "$BASE:$path"; else cat "$ROOT/$path"; fi
}

# Writes the policy's source into a directory of its own; prints the directory.
policy_dir() {
  local variant=$1 policy=$2 lang=$3
  local dir=$OUT/$variant/src/$policy-$lang
  mkdir -p "$dir"
  case $policy-$lang in
    empty-py)
      cat >"$dir/policy.py" <<'EOF'
from tollgate_policy import Policy, admit


class WitWorld(Policy):
    def decide(self, request, state):
        return admit("ok")
EOF
      ;;
    empty-js)
      cat >"$dir/policy.js" <<'EOF'
import { admit, definePolicy } from "tollgate-policy";

export const { decide, validateConfig } = definePolicy({ decide: () => admit("ok") });
EOF
      ;;
    budget-guard-py) source_of "$variant" policies/python/examples/budget-guard/policy.py >"$dir/policy.py" ;;
    budget-guard-js) source_of "$variant" policies/js/examples/budget-guard/policy.js >"$dir/policy.js" ;;
  esac
  echo "$dir"
}

# Builds one component; prints its path.
build() {
  local variant=$1 policy=$2 engine=$3
  local lang=py
  [ "$engine" = py ] || lang=js
  local dir
  dir=$(policy_dir "$variant" "$policy" "$lang")
  local stage=$OUT/$variant/stage-$policy-$engine
  local dest=$OUT/$variant/${policy//-/_}_$engine.wasm
  mkdir -p "$stage/wit"
  cp "$ROOT/wit/policy.wit" "$stage/wit/policy.wit"
  if [ "$lang" = py ]; then
    source_of "$variant" policies/python/tollgate_policy.py >"$stage/tollgate_policy.py"
    # shellcheck disable=SC2086
    "$TOOLS/python-venv/bin/componentize-py" --wit-path "$stage/wit" --world policy --quiet componentize \
      $PY_FLAGS --python-path "$dir" --python-path "$stage" --output "$dest" policy >&2
  else
    source_of "$variant" policies/js/tollgate-policy.js >"$stage/tollgate-policy.js"
    "$TOOLS/npm/node_modules/.bin/esbuild" "$dir/policy.js" --bundle --format=esm --platform=neutral \
      --log-level=warning "--alias:tollgate-policy=$stage/tollgate-policy.js" '--external:tollgate:*' \
      "--outfile=$stage/bundle.js" >&2
    if [ "$engine" = qjs ]; then
      "$TOOLS/npm/node_modules/.bin/componentize-qjs" --sync --wit "$stage/wit" --world policy \
        --js "$stage/bundle.js" --output "$dest" >&2
    else
      "$TOOLS/npm/node_modules/.bin/componentize-js" "$stage/bundle.js" --wit "$stage/wit" \
        --world-name policy --out "$dest" --disable http fetch-event >&2
    fi
  fi
  echo "$dest"
}

echo "building into $OUT" >&2
declare -A WASM
for variant in $VARIANTS; do
  for policy in $POLICIES; do
    for engine in $ENGINES; do
      WASM[$variant/$policy/$engine]=$(build "$variant" "$policy" "$engine")
      if [ "$policy" = budget-guard ]; then
        # A faster policy that decides differently is no use.
        "$TOLLGATE" policy test "${WASM[$variant/$policy/$engine]}" "$CASES" >"$OUT/test.log" 2>&1 ||
          { cat "$OUT/test.log" >&2; echo "$variant $policy $engine fails its cases" >&2; exit 1; }
      fi
    done
  done
done

# One line per bench run: variant policy engine p50_us p99_us decisions_per_s
RESULTS=$OUT/results.txt
: >"$RESULTS"
to_us() {
  awk -v d="$1" 'BEGIN {
    if (d ~ /ns$/) { sub(/ns$/, "", d); printf "%.2f", d / 1000 }
    else if (d ~ /µs$/) { sub(/µs$/, "", d); printf "%.2f", d }
    else if (d ~ /ms$/) { sub(/ms$/, "", d); printf "%.2f", d * 1000 }
    else if (d ~ /s$/) { sub(/s$/, "", d); printf "%.2f", d * 1000000 }
  }'
}
for round in $(seq 1 "$ROUNDS"); do
  order=$VARIANTS
  # Alternate which variant goes first, so neither always gets the quieter slot.
  if [ $((round % 2)) -eq 0 ] && [ -n "$BASE" ]; then order="tree base"; fi
  for policy in $POLICIES; do
    for engine in $ENGINES; do
      for variant in $order; do
        args=(policy bench "${WASM[$variant/$policy/$engine]}" --cases "$CASES" --seconds "$SECONDS_EACH")
        [ -n "$CONFIG" ] && args+=(--config "$CONFIG")
        out=$("$TOLLGATE" "${args[@]}" 2>&1)
        dps=$(awk '/decisions\/s/ {print $2}' <<<"$out")
        p50=$(to_us "$(awk '/latency/ {print $3}' <<<"$out")")
        p99=$(to_us "$(awk '/latency/ {print $7}' <<<"$out")")
        echo "$variant $policy $engine $p50 $p99 $dps" | tee -a "$RESULTS" >&2
      done
    done
  done
done

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
echo "medians of $ROUNDS runs of ${SECONDS_EACH}s, 1 thread, pooled instances${CONFIG:+, config $CONFIG}"
printf '%-13s %-6s %-6s %10s %10s %12s\n' policy engine sdk "p50 µs" "p99 µs" decisions/s
for policy in $POLICIES; do
  for engine in $ENGINES; do
    for variant in $VARIANTS; do
      label=$variant
      [ "$variant" = base ] && label=$BASE
      rows=$(awk -v v="$variant" -v p="$policy" -v e="$engine" '$1 == v && $2 == p && $3 == e' "$RESULTS")
      printf '%-13s %-6s %-6s %10s %10s %12.0f\n' "$policy" "$engine" "${label:0:6}" \
        "$(awk '{print $4}' <<<"$rows" | median)" "$(awk '{print $5}' <<<"$rows" | median)" \
        "$(awk '{print $6}' <<<"$rows" | median)"
    done
  done
done
