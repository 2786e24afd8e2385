# Shared by the load scripts in benches/: build, a work directory, and
# starting `tollgate mock-bedrock` and `tollgate serve` on loopback ports.
# Source it after `set -euo pipefail`; it defines $bin and $work. BIN=path
# runs another build of tollgate (a baseline kept aside) instead of this one.

cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet
bin="${BIN:-target/release/tollgate}"
target/release/tollgate policy build policies --out policies/target/components >/dev/null
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

# start_mock [mock-bedrock flags...]: sets $mock to its URL. MOCK_BIN=path
# serves it from another build.
start_mock() {
  ${MOCK_BIN:-$bin} mock-bedrock --listen 127.0.0.1:0 "$@" >"$work/mock.out" &
  until grep -q "listening on" "$work/mock.out" 2>/dev/null; do sleep 0.05; done
  mock=$(sed -n 's/^mock Bedrock listening on \(.*\)$/\1/p' "$work/mock.out")
}

# start_gateway: serves $work/tollgate.toml; sets $gw, $admin and $gw_pid
# ($admin empty when NO_ADMIN=1).
start_gateway() {
  # Emptied here, not by the background job's redirection, which may come
  # after the wait below has read a previous start's lines.
  : >"$work/gw.out"
  AWS_ACCESS_KEY_ID=AKIDBENCHEXAMPLE AWS_SECRET_ACCESS_KEY=bench/secret+EXAMPLEKEY AWS_EC2_METADATA_DISABLED=true \
    $bin serve --config "$work/tollgate.toml" >"$work/gw.out" 2>"$work/gw.err" &
  gw_pid=$!
  local ready="admin listening on"
  [ -z "${NO_ADMIN:-}" ] || ready="tollgate listening on"
  until grep -q "$ready" "$work/gw.out" 2>/dev/null; do sleep 0.05; done
  gw=$(sed -n 's/^tollgate listening on \(.*\)$/\1/p' "$work/gw.out")
  admin=$(sed -n 's/^tollgate admin listening on \(.*\)$/\1/p' "$work/gw.out")
}

# server_and_upstream_toml [EXTRA-SERVER-LINES]: the [server] and [upstream]
# tables of a gateway in front of $mock; [upstream.bedrock] comes last, so
# lines printed right after it belong to it. Calls to the mock are signed
# with SigV4 (static keys from the environment, as from an AWS profile);
# UPSTREAM_AUTH=none sends them unsigned. NO_ADMIN=1 leaves the admin
# listener out, for a build from before it existed.
server_and_upstream_toml() {
  cat <<TOML
[server]
listen = "127.0.0.1:0"
$([ -n "${NO_ADMIN:-}" ] || echo 'admin-listen = "127.0.0.1:0"')
plain-http = true
${1:-}
[upstream]
kind = "bedrock"
[upstream.bedrock]
endpoint = "$mock"
region = "us-east-1"
auth = "${UPSTREAM_AUTH:-sigv4}"
TOML
}

# acme_toml [CACHE-DIR]: the [log], [engine] and tenant tables most load
# runs share: acme on budget-guard (POLICY=path: another build of it), with a
# budget no run spends, and the key write_post_lua is given.
acme_toml() {
  cat <<TOML
[log]
invocations = "invocations.jsonl"
[engine]
cache-dir = "${1:-cache}"
[tenants.acme]
tier = "pro"
budget-usd = "1000000"
policy = "${POLICY:-$PWD/policies/target/components/budget_guard.wasm}"
[[tenants.acme.api-keys]]
key = "acme-load-test-key-0123456789"
TOML
}

# write_post_lua KEY USE-CASE: a wrk script posting one Converse body with a bearer key.
write_post_lua() {
  cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer $1"
wrk.body = '{"messages":[{"role":"user","content":[{"text":"Summarise the quarterly report in three short bullet points"}]}],"inferenceConfig":{"maxTokens":256},"requestMetadata":{"user":"u-1","use-case":"$2"}}'
LUA
}
