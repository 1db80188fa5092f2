"""Soak: many requests from as many distinct client IPs through the full pipeline (JWT verify +
revocation lookup + a Redis limit keyed by client IP + signed identity), while the gateway's
resident memory is sampled. Passes when memory after warm-up grows by less than 10 %.

Each request comes from a new address (wrk Lua writes X-Forwarded-For; 127.0.0.1 is a trusted
proxy), so every per-client structure in the gateway sees a stream of new keys: memory must stay
flat because they are bounded (LRU caches) or live in Redis, not in the process.

    make soak                       # 1,000,000 requests (a few minutes on 2 cores)
    .venv/bin/python bench/soak.py --requests 200000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (
    FULL_POLICY,
    NGINX_UPSTREAM,
    BenchContext,
    Load,
    Processes,
    Scenario,
    Wrk,
    _mint_access_token,
    find_tools,
    free_port,
    merge,
    start_nginx,
    start_tsgate,
)

UNIQUE_CLIENTS = r"""
local n = 0
request = function()
  n = n + 1
  local id = n * 2 + (wrk.thread_id or 0)
  local ip = (10 + math.floor(id / 16777216) % 200) .. "." .. (math.floor(id / 65536) % 256) .. "." ..
             (math.floor(id / 256) % 256) .. "." .. (id % 256)
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end  -- a table replaces, not merges
  headers["X-Forwarded-For"] = ip
  return wrk.format(nil, nil, headers)
end
"""

SOAK_POLICY = merge(FULL_POLICY, {
    "trusted_proxies": ["127.0.0.1/32"],
    "routes": [{"id": "api", "match": {"path": "/**"}, "auth": "required",
                "limits": [{"name": "per-user", "rate": "100000000/minute", "key": "user"},
                           {"name": "per-ip", "rate": "100/minute", "key": "ip"}]}],
})


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (workers), from /proc."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().split()
            if int(proc.name) != pid and int(stat[3]) != pid:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--chunk", type=float, default=20.0, help="seconds per wrk run between memory samples")
    args = parser.parse_args(argv)
    nginx, wrk_bin, _ = find_tools(1)
    with tempfile.TemporaryDirectory(prefix="tsgate-soak-") as tmp_name:
        tmp = Path(tmp_name)
        procs = Processes()
        try:
            upstream = free_port()
            start_nginx(procs, nginx, "direct", tmp, upstream, NGINX_UPSTREAM.format(port=upstream))
            ctx = BenchContext(tmp=tmp, upstream_url=f"http://127.0.0.1:{upstream}", workers=1)
            scenario = Scenario("soak", policy=SOAK_POLICY, script=UNIQUE_CLIENTS)
            scenario = _mint_access_token(scenario, ctx)
            port = free_port()
            gateway, _, _ = start_tsgate(procs, scenario, ctx, port)
            wrk = Wrk(wrk_bin, procs, tmp)
            load = Load(1, args.connections, max(1, round(args.chunk)))
            done, samples, started = 0, [], time.monotonic()
            while done < args.requests:
                result = wrk.run(port, load, scenario)
                done += result.requests
                samples.append((done, rss_kib(gateway.pid), result.rps, result.non_2xx))
                print(f"soak: {done:>9,} requests  rss {samples[-1][1] / 1024:7.1f} MiB  "
                      f"{result.rps:8,.0f} rps  non-2xx {result.non_2xx}", flush=True)
            warm = samples[min(1, len(samples) - 1)][1]  # after the first chunk: pools, caches, JIT-free warm-up
            peak, last = max(s[1] for s in samples), samples[-1][1]
            growth = (last - warm) / warm * 100
            minutes = (time.monotonic() - started) / 60
            print(f"\nsoak: {done:,} requests from {done:,} distinct client addresses in {minutes:.1f} min; "
                  f"rss after warm-up {warm / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, end {last / 1024:.1f} MiB "
                  f"({growth:+.1f} %); non-2xx {sum(s[3] for s in samples)}")
            print(f"SOAK memory_growth_pct {growth:.1f}")
            return 0 if growth < 10.0 else 1
        finally:
            for proc in reversed(procs._procs):
                procs.stop(proc)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
