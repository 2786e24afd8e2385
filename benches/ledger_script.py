"""Redis' own CPU per call of two versions of the ledger script, side by side.

    python3 benches/ledger_script.py PORT BASELINE.lua NEW.lua [pairs] [rounds]

Drives reserve+settle pairs (each settle after its reserve, one connection,
no pipelining) through each script on the Redis at 127.0.0.1:PORT, one fresh
tenant per run, the scripts alternating and taking turns to go first. The
figure is Redis' `usec_per_call` of EVALSHA from `INFO commandstats`, reset
before each run: the script's time inside Redis, without the network. Prints
one line per run and the medians. `benches/ledger-script.sh` starts a Redis
for it. A script with 11 keys (before the amend index) is passed 11.
"""

import socket
import statistics
import sys
import time

PARTS = ["state", "open", "exp", "periods", "pidx", "expired", "expidx", "done", "doneidx", "burnm", "burnh",
         "amendidx"]


class Redis:
    """Just enough of the protocol for this bench: one command, one reply."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.reader = self.sock.makefile("rb")

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self.reply()

    def reply(self):
        line = self.reader.readline()[:-2]
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.reader.read(n + 2)[:-2].decode()
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")


def evalsha_usec(redis):
    stats = redis.cmd("INFO", "commandstats")
    line = next(l for l in stats.splitlines() if l.startswith("cmdstat_evalsha:"))
    fields = dict(kv.split("=") for kv in line.split(":", 1)[1].split(","))
    return float(fields["usec_per_call"])


def run(redis, sha, nkeys, tenant, pairs):
    keys = [f"bench:{{{tenant}}}:{part}" for part in PARTS[:nkeys]]
    now = int(time.time() * 1000)
    start = now - now % 86_400_000
    period = ["monthly|UTC", start, start + 30 * 86_400_000]
    redis.cmd("CONFIG", "RESETSTAT")
    for i in range(pairs):
        at = now + i
        call = ["EVALSHA", sha, nkeys, *keys]
        # cost, over, tokens, ttl, budget, rpm, tpm, first id, owner
        held = redis.cmd(*call, "reserve", at, *period, 1000, 0, 10, 600_000, 10**15, "", "", 1000, "r00b")
        assert held[0] == "ok", held
        # id, cost, tokens, retry, owner
        done = redis.cmd(*call, "settle", at, *period, held[1], 900, 9, "0", "r00b")
        assert done[0] == "ok", done
    return evalsha_usec(redis)


def main():
    port, base, new = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    pairs = int(sys.argv[4]) if len(sys.argv) > 4 else 20_000
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 6
    redis = Redis(port)
    scripts = {}
    for name, path in (("baseline", base), ("new", new)):
        text = open(path).read()
        scripts[name] = (redis.cmd("SCRIPT", "LOAD", text), 12 if "KEYS[12]" in text else 11)
    results = {"baseline": [], "new": []}
    for r in range(rounds):
        for name in ("baseline", "new") if r % 2 == 0 else ("new", "baseline"):
            sha, nkeys = scripts[name]
            usec = run(redis, sha, nkeys, f"{name}{r}", pairs)
            results[name].append(usec)
            print(f"round {r} {name}: {usec:.2f} us per script call", flush=True)
    for name, runs in results.items():
        print(f"median {name}: {statistics.median(runs):.2f} us per script call ({rounds} runs of {pairs} pairs)")


if __name__ == "__main__":
    main()
