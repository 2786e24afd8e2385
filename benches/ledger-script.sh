#!/usr/bin/env bash
# Redis' CPU per call of two versions of the ledger script (see
# benches/ledger_script.py), on a Redis of its own without persistence:
#
#   benches/ledger-script.sh BASELINE.lua NEW.lua [pairs] [rounds]
#   benches/ledger-script.sh <(git show REV:host/src/ledger/redis_store/ledger.lua) host/src/ledger/redis_store/ledger.lua
#
# Needs redis-server (`apt-get install redis-server`).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BASELINE.lua NEW.lua [pairs] [rounds]" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "redis-server is not installed: apt-get install redis-server" >&2; exit 1; }
work=$(mktemp -d)
cp "$1" "$work/baseline.lua"; cp "$2" "$work/new.lua"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" --logfile "$work/redis.log" &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; rm -rf "$work"' EXIT
until grep -q "Ready to accept connections" "$work/redis.log" 2>/dev/null; do sleep 0.05; done
python3 "$(dirname "$0")/ledger_script.py" "$port" "$work/baseline.lua" "$work/new.lua" "${3:-20000}" "${4:-6}"
