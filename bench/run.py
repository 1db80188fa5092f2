"""Side-by-side benchmark: direct upstream, nginx reverse proxy (the anchor) and tsgate scenarios.

``make bench`` runs this as ``.venv/bin/python bench/run.py``. The machine has 2 cores shared by wrk,
nginx and tsgate, so absolute numbers mean little; what we report is each row's ratio to the nginx
proxy measured in the same run (method: docs/performance.md).

Everything is started here and stopped here: two nginx instances (upstream and proxy, one worker
each, in a temp dir) and one tsgate per scenario. All traffic stays on 127.0.0.1 and every wrk run is
bounded in time. The last lines of stdout are ``RATIO <scenario> <tsgate rps / nginx-proxy rps>``.

Adding a tsgate scenario is one entry in ``SCENARIOS``; see the ``Scenario`` docstring.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "performance.md"
RUNS_MARKER = "<!-- bench-runs -->"
REDIS_STATE = "redis://127.0.0.1:6379/14"
ANCHOR = "nginx-proxy"
START_TIMEOUT = 30.0  # seconds; tsgate imports a lot on a busy 2-core box
WRK_GRACE = 20.0  # seconds past -d before a wrk run is treated as hung and killed


class BenchError(Exception):
    """A problem that ends the run with a clear message (and cleanup), not a traceback."""


class Interrupted(Exception):
    """Ctrl+C, SIGTERM or SIGHUP: stop everything and exit 130."""


# --------------------------------------------------------------------------------------------------
# Scenarios


@dataclass(frozen=True)
class BenchContext:
    """What a scenario's ``prepare`` hook may need: a private temp dir and where things listen."""

    tmp: Path
    upstream_url: str
    workers: int


@dataclass(frozen=True)
class Scenario:
    """One tsgate row. ``name`` is the RATIO name printed at the end.

    - ``policy``: merged over the pass-through base policy (mappings merge key by key, anything
      else, e.g. ``routes``, replaces the base value).
    - ``path``/``method``/``headers``/``body``: the request wrk sends; also used for the readiness
      probe, which must answer ``expect_status``. Non-GET methods and bodies become a wrk Lua prelude.
    - ``script``: extra wrk Lua (``-s``) for anything dynamic, e.g. rotating client IPs.
    - ``env``: extra environment for the gateway (key files, secrets).
    - ``prepare(scenario, ctx)``: optional hook run before the gateway starts; returns the concrete
      scenario, e.g. with keys written into ``ctx.tmp`` and ``headers={"Authorization": "Bearer ..."}``.

    Example (the full-pipeline row, once its guards exist)::

        Scenario("full-pipeline", policy={"routes": [...jwt + rate limit + identity...]},
                 prepare=_mint_jwt_and_keys)
    """

    name: str
    policy: Mapping[str, Any] = field(default_factory=dict)
    path: str = "/api/x"
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    script: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    expect_status: int = 200
    prepare: Callable[[Scenario, BenchContext], Scenario] | None = None
    workers: int | None = None  # None: the --workers option; above 1 the state is Redis
    # Load that runs beside the measured wrk runs (e.g. a login storm), given the gateway's port.
    background: Callable[[int], AbstractContextManager[None]] | None = None


def _mint_access_token(sc: Scenario, ctx: BenchContext) -> Scenario:
    """Keys shared with the gateway through its environment, and a valid access token for wrk."""
    from authn.keys import AesKeyRing, SigningKeyRing
    from authn.tokens import AccessTokens

    ring = SigningKeyRing.generate()
    token, _ = AccessTokens(ring, issuer="tsgate", audience="tsgate", ttl=3600).issue(
        "bench-user-id", ["user"], "bench-session", extra={"name": "bench"})
    env = {**sc.env, "TSGATE_SIGNING_KEYS": ring.to_json(), "TSGATE_REFRESH_KEYS": AesKeyRing.generate().to_json()}
    policy = merge(sc.policy, {"database": f"sqlite+aiosqlite:///{ctx.tmp / (sc.name + '.db')}"})
    return replace(sc, env=env, policy=policy, headers={**sc.headers, "Authorization": f"Bearer {token}"})


@contextmanager
def _login_storm(port: int, per_second: float = 20.0) -> Iterator[None]:
    """20 logins/s (argon2id at the policy's profile) against the gateway while wrk measures."""
    def post(path: str, body: dict[str, str]) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    password = "violet tangerine orbit forty-two"
    post("/_tsgate/auth/register", {"username": "storm", "email": "storm@example.org", "password": password})
    stop = threading.Event()
    counts = {"ok": 0, "other": 0}

    def one_login() -> None:
        status = post("/_tsgate/auth/login", {"login": "storm", "password": password})
        counts["ok" if status == 200 else "other"] += 1

    def loop() -> None:  # open loop: a login starts every 1/per_second s, however slow the last one was
        with ThreadPoolExecutor(max_workers=16) as pool:
            next_at = time.monotonic()
            while not stop.is_set():
                pool.submit(one_login)
                next_at += 1.0 / per_second
                stop.wait(max(0.0, next_at - time.monotonic()))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        yield
    finally:
        stop.set()
        thread.join(15)
        elapsed = time.monotonic() - started
        print(f"bench: login storm: {counts['ok']} logins ok ({counts['ok'] / elapsed:.1f}/s), "
              f"{counts['other']} other answers", file=sys.stderr, flush=True)


STORM_POLICY: dict[str, Any] = {
    "auth": {},
    "routes": [{"id": "api", "match": {"path": "/api/**"}, "auth": "none"}],
}

AUTH_POLICY: dict[str, Any] = {
    "auth": {"access_ttl": "1h"},
    "routes": [{"id": "api", "match": {"path": "/**"}, "auth": "required"}],
}

# A limit that never refuses during the run, so every request pays for the Redis check.
NEVER_REFUSES = "100000000/minute"
RATELIMIT_POLICY: dict[str, Any] = {
    "state": REDIS_STATE,
    "routes": [{"id": "api", "match": {"path": "/**"},
                "limits": [{"name": "per-ip", "rate": NEVER_REFUSES, "key": "ip"}]}],
}
FULL_POLICY: dict[str, Any] = {
    "state": REDIS_STATE,
    "auth": {"access_ttl": "1h"},
    "routes": [{"id": "api", "match": {"path": "/**"}, "auth": "required",
                "limits": [{"name": "per-user", "rate": NEVER_REFUSES, "key": "user"}]}],
}

# A clean ~600-byte comment, scored on every request (model, URL, banks, near-duplicate window).
COMMENT = json.dumps({"body": ("Lovely photo of the lake this morning. We walked the long way round past the old "
                               "boathouse and the light on the water was just like this. Are we still on for "
                               "Sunday? I can bring coffee and the small tripod if you want to try the long "
                               "exposure again, the forecast says clear skies until noon. Let me know what time "
                               "suits you and whether Sam is coming along this time; last time was great fun.")})
# Every request a different comment from one of 50,000 clients: the same text again and again from
# one client is (rightly) spam by repetition and would measure the review-queue writes instead.
VARIED_COMMENTS = r"""
local words = {}
for w in string.gmatch([[the a and to of in is it you that was for on are with as this be at have from or one
  had by word but not what all were we when your can said there use an each which she do how their if will up
  other about out many then them these so some her would make like him into time has look two more write go see
  number no way could people my than first water been call who oil its now find long down day did get come made
  may part lake photo walk sunday coffee garden book train museum recipe birthday meeting library weather light
  morning evening bus kids thanks great lovely love friend family dinner lunch music film game park river city
  street school work home week year tomorrow today tonight really very pretty quite happy sorry soon later next
  last little big old new good bad best nice fun late early again back still also just only even maybe]], "%S+")
  do words[#words + 1] = w end
local n = 0
request = function()
  n = n + 1
  local parts = {}
  for i = 1, 12 + (n % 25) do parts[i] = words[math.random(#words)] end
  local body = '{"body": "' .. table.concat(parts, " ") .. '."}'
  local ip = "10." .. (n % 50) .. "." .. (math.floor(n / 50) % 250) .. "." .. (math.floor(n / 12500) % 4 + 1)
  return wrk.format("POST", nil, {["X-Forwarded-For"] = ip, ["Content-Type"] = "application/json"}, body)
end
"""

MODERATION_POLICY: dict[str, Any] = {
    "trusted_proxies": ["127.0.0.1/32"],  # so that X-Forwarded-For names wrk's simulated clients
    "routes": [{"id": "comments", "match": {"methods": ["POST"], "path": "/**"},
                "moderation": {"content": ["/body"]}}],
}


def _moderation_db(sc: Scenario, ctx: BenchContext) -> Scenario:
    policy = merge(sc.policy, {"database": f"sqlite+aiosqlite:///{ctx.tmp / 'moderation.db'}"})
    return replace(sc, policy=policy)


SCENARIOS: list[Scenario] = [
    Scenario("pass-through"),
    # The same gateway as an operator runs it on this 2-core machine: `tsgate run --workers 2`.
    Scenario("pass-through-2w", workers=2),
    # JWT verify (EdDSA) + revocation lookup (memory) + X-Tsgate-User/-Roles + a signed assertion.
    Scenario("auth-pipeline", policy=AUTH_POLICY, prepare=_mint_access_token),
    # Pass-through traffic while 20 logins/s hash passwords beside it (target: fixed-load p99 <= 5 ms).
    Scenario("login-storm", policy=STORM_POLICY, prepare=_mint_access_token, background=_login_storm),
    # One Redis-backed limit (sliding window counter) on every request.
    Scenario("ratelimit-redis", policy=RATELIMIT_POLICY),
    # JWT verify + Redis limit keyed by user + revocation lookup + signed identity (target >= 0.20).
    Scenario("full-pipeline", policy=FULL_POLICY, prepare=_mint_access_token),
    # The same on `--workers 2`, how an operator runs it on this 2-core machine.
    Scenario("full-pipeline-2w", policy=FULL_POLICY, prepare=_mint_access_token, workers=2),
    # A write route with content moderation: the body is buffered, extracted, normalized and scored.
    Scenario("moderation-write", policy=MODERATION_POLICY, method="POST", body=COMMENT,
             headers={"Content-Type": "application/json"}, script=VARIED_COMMENTS, prepare=_moderation_db),
]


def base_policy(upstream_url: str) -> dict[str, Any]:
    """Pass-through: one catch-all route, no guards, decision logging off (it is stderr I/O)."""
    return {
        "version": 1,
        "upstream": {"url": upstream_url, "connect_timeout": "1s", "read_timeout": "10s"},
        "state": "memory://",
        "log": {"decisions": "none"},
        "routes": [{"id": "any", "match": {"path": "/**"}}],
    }


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------------------------------
# Processes: everything we start is registered here and stopped in ``stop_all``.


class Processes:
    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, argv: list[str], log: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        # A new session keeps Ctrl+C (sent to our foreground group) away from the children, so that
        # we, not the terminal, decide the stop order; it also lets us reap stragglers by group.
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None, cwd=REPO, start_new_session=True,
            )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()  # leader only: nginx and tsgate forward to their own workers
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group we created, if any
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self._procs)):
            self.stop(proc)


class StopFlag:
    """Signals only set a flag; the polling loops below check it and raise ``Interrupted``.

    Raising from the handler instead (Python's default for SIGINT) can land inside
    ``Popen.wait`` while it holds its internal lock: the lock leaks and the cleanup's own
    ``wait`` then blocks forever, leaving the children running. Seen here, hence the flag."""

    signum: int | None = None

    @classmethod
    def handler(cls, signum: int, _frame: object) -> None:
        cls.signum = signum

    @classmethod
    def check(cls) -> None:
        if cls.signum is not None:
            raise Interrupted(signal.Signals(cls.signum).name)


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for ``proc`` to exit, interruptibly; False on timeout."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        StopFlag.check()
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


# --------------------------------------------------------------------------------------------------
# Servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:]) or "    (no output)"


def probe(port: int, sc: Scenario | None = None) -> int | None:
    """Status of one request, or None if nothing answers. http.client, so *_proxy env is ignored."""
    method, path = (sc.method, sc.path) if sc else ("GET", "/api/x")
    headers = dict(sc.headers) if sc else {}
    body = sc.body.encode() if sc and sc.body is not None else None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


def wait_ready(
    name: str, proc: subprocess.Popen[bytes], port: int, log: Path, sc: Scenario | None = None
) -> None:
    expected = sc.expect_status if sc else 200
    deadline = time.monotonic() + START_TIMEOUT
    status: int | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with code {proc.returncode} while starting:\n{tail(log)}")
        status = probe(port, sc)
        if status == expected:
            return
        StopFlag.check()
        time.sleep(0.1)
    got = "no answer" if status is None else f"status {status}"
    raise BenchError(f"{name} did not answer {expected} on port {port} within {START_TIMEOUT:.0f}s "
                     f"({got}):\n{tail(log)}")


NGINX_MAIN = """\
{user}worker_processes 1;
worker_rlimit_nofile 65535;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    # Temp paths inside our dir: never touch /var/lib/nginx (may not exist or be writable).
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{body}
}}
"""

NGINX_UPSTREAM = """\
    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        location / {{ return 200 '{{"ok":true}}'; }}
    }}"""

NGINX_PROXY = """\
    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""


def start_nginx(procs: Processes, nginx: str, name: str, tmp: Path, port: int, body: str) -> None:
    conf_dir = tmp / name
    conf_dir.mkdir()
    # As root, nginx would drop its worker to "nobody", which cannot read our 0700 temp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = conf_dir / "nginx.conf"
    conf.write_text(NGINX_MAIN.format(user=user, dir=conf_dir, body=body), encoding="utf-8")
    log = conf_dir / "stderr.log"
    # -e: the startup error log, used before the config is read.
    argv = [nginx, "-c", str(conf), "-p", str(conf_dir), "-e", str(conf_dir / "error.log")]
    proc = procs.start(argv, log)
    try:
        wait_ready(name, proc, port, log)
    except BenchError as exc:
        raise BenchError(f"{exc}\n{tail(conf_dir / 'error.log')}") from None


def start_tsgate(procs: Processes, sc: Scenario, ctx: BenchContext, port: int
                 ) -> tuple[subprocess.Popen[bytes], int, str]:
    policy_file = ctx.tmp / f"policy-{sc.name}.yaml"
    policy = merge(base_policy(ctx.upstream_url), sc.policy)
    policy_file.write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")
    python = REPO / ".venv" / "bin" / "python"
    admin_port = free_port()
    argv = [str(python if python.exists() else sys.executable), "-m", "gateway.cli", "run",
            "--policy", str(policy_file), "--port", str(port), "--admin-port", str(admin_port)]
    workers = sc.workers or ctx.workers
    if workers > 1:
        argv += ["--workers", str(workers), "--state", REDIS_STATE]
    token = secrets.token_hex(16)
    env = {**os.environ, "TSGATE_ADMIN_TOKEN": token, **sc.env}
    log = ctx.tmp / f"tsgate-{sc.name}.log"
    proc = procs.start(argv, log, env)
    wait_ready(f"tsgate {sc.name}", proc, port, log, sc)
    return proc, admin_port, token


def redis_per_request(admin_port: int, token: str) -> str | None:
    """From the gateway's own counters: Redis commands and round trips per proxied request.
    (With --workers each worker keeps its own counters and one answers: a sample, still a ratio.)"""
    request = urllib.request.Request(f"http://127.0.0.1:{admin_port}/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    requests = commands = trips = 0.0
    for line in text.splitlines():
        if line.startswith("tsgate_requests_total{"):
            requests += float(line.rsplit(" ", 1)[1])
        elif line.startswith("tsgate_redis_commands_total{"):
            value = float(line.rsplit(" ", 1)[1])
            if 'kind="commands"' in line:
                commands += value
            elif 'kind="round_trips"' in line:
                trips += value
    if requests == 0 or commands == 0:
        return None
    return f"{commands / requests:.2f} Redis commands and {trips / requests:.2f} round trips per request"


def redis_answers(url: str) -> bool:
    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------
# wrk


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
# wrk: "     99%    1.23ms"; wrk2 prints "99.000%" in the same place.
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(\d+(?:\.\d+)?)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_wrk(output: str) -> WrkResult:
    rps = _RPS.search(output)
    if rps is None:
        raise ValueError("no Requests/sec line")
    percentiles: dict[float, float] = {}
    for pct, value, unit in _PERCENTILE.findall(output):
        percentiles.setdefault(float(pct), float(value) * _UNITS_MS[unit])
    if 50.0 not in percentiles or 99.0 not in percentiles:
        raise ValueError("no 50%/99% lines in the Latency Distribution (was --latency given?)")
    requests = _REQUESTS.search(output)
    non_2xx = _NON_2XX.search(output)
    errors = _SOCKET_ERRORS.search(output)
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=percentiles[50.0],
        p99_ms=percentiles[99.0],
        requests=int(requests.group(1)) if requests else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def lua_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def wrk_script(sc: Scenario | None, delay_ms: int) -> str:
    """The Lua for one run: method/body prelude, the scenario's script, then the pacing delay
    (last, so that it wins over any delay() the scenario defines: fixed load means fixed)."""
    parts: list[str] = []
    if sc is not None and (sc.method != "GET" or sc.body is not None):
        parts.append(f"wrk.method = {lua_string(sc.method)}")
        if sc.body is not None:
            parts.append(f"wrk.body = {lua_string(sc.body)}")
    if sc is not None and sc.script:
        parts.append(sc.script)
    if delay_ms > 0:
        parts.append(f"function delay() return {delay_ms} end")
    return "\n".join(parts)


@dataclass(frozen=True)
class Load:
    threads: int
    connections: int
    duration: int
    delay_ms: int = 0  # pause per connection between requests: paces the load (no wrk2 here)
    rate: int = 0  # wrk2 -R, when wrk2 is used


class Wrk:
    def __init__(self, binary: str, procs: Processes, tmp: Path, is_wrk2: bool = False) -> None:
        self.binary, self.procs, self.tmp, self.is_wrk2 = binary, procs, tmp, is_wrk2
        self._runs = 0

    def run(self, port: int, load: Load, sc: Scenario | None = None) -> WrkResult:
        self._runs += 1
        argv = [self.binary, f"-t{load.threads}", f"-c{load.connections}", f"-d{load.duration}s",
                "--timeout", "2s", "--latency"]
        if self.is_wrk2:
            argv.append(f"-R{load.rate or 1_000_000}")  # wrk2 requires -R; huge = unthrottled
        for name, value in (sc.headers if sc else {}).items():
            argv += ["-H", f"{name}: {value}"]
        script = wrk_script(sc, 0 if self.is_wrk2 else load.delay_ms)
        if script:
            script_file = self.tmp / f"wrk-{self._runs}.lua"
            script_file.write_text(script + "\n", encoding="utf-8")
            argv += ["-s", str(script_file)]
        argv.append(f"http://127.0.0.1:{port}{sc.path if sc else '/api/x'}")
        output = self._execute(argv, load.duration + WRK_GRACE)
        try:
            return parse_wrk(output)
        except ValueError as exc:
            raise BenchError(f"cannot read wrk output ({exc}) of {shlex.join(argv)}:\n{output}") from None

    def _execute(self, argv: list[str], timeout: float) -> str:
        log = self.tmp / f"wrk-{self._runs}.out"
        proc = self.procs.start(argv, log)
        try:
            if not wait_exit(proc, timeout):
                raise BenchError(f"wrk did not finish within {timeout:.0f}s: {shlex.join(argv)}")
        finally:
            self.procs.stop(proc)
        output = log.read_text(encoding="utf-8", errors="replace")
        if proc.returncode != 0:
            raise BenchError(f"wrk exited with {proc.returncode}: {shlex.join(argv)}\n{output}")
        return output


def measure(wrk: Wrk, port: int, load: Load, warmup: int, sc: Scenario | None = None) -> WrkResult:
    if warmup > 0:
        wrk.run(port, replace(load, duration=warmup), sc)  # fills pools and caches; discarded
    return wrk.run(port, load, sc)


# --------------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class Report:
    throughput: dict[str, WrkResult]  # row name -> result, in run order
    fixed: dict[str, WrkResult]
    fixed_label: str
    tsgate_rows: list[str]  # row name per scenario, same order as the RATIO lines
    scenario_names: list[str]
    notes: dict[str, str] = field(default_factory=dict)  # row name -> e.g. Redis commands per request


def ratio(result: WrkResult, anchor: WrkResult) -> float:
    return result.rps / anchor.rps if anchor.rps > 0 else float("nan")


def table(report: Report) -> str:
    anchor = report.throughput[ANCHOR]
    lines = ["| row | rps | p50 ms | p99 ms | non-2xx | socket errors | ratio to nginx-proxy |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in report.throughput.items():
        lines.append(f"| {name} | {r.rps:,.0f} | {r.p50_ms:.3f} | {r.p99_ms:.3f} | {r.non_2xx} "
                     f"| {r.socket_errors} | {ratio(r, anchor):.3f} |")
    return "\n".join(lines)


def added_latency_lines(report: Report) -> list[str]:
    direct = report.fixed["direct"]
    lines = [f"Latency at fixed load ({report.fixed_label}); added = row minus direct:",
             f"- direct: p50 {direct.p50_ms:.3f} ms, p99 {direct.p99_ms:.3f} ms at {direct.rps:,.0f} rps"]
    for name, r in report.fixed.items():
        if name == "direct":
            continue
        lines.append(f"- {name}: added p50 {r.p50_ms - direct.p50_ms:+.3f} ms, "
                     f"added p99 {r.p99_ms - direct.p99_ms:+.3f} ms "
                     f"(p50 {r.p50_ms:.3f} ms, p99 {r.p99_ms:.3f} ms at {r.rps:,.0f} rps)")
    return lines


def warnings(report: Report) -> list[str]:
    out = []
    # nginx serving `return 200` directly is ~3x nginx proxying it; far less means something else
    # was using the CPUs during the run (this machine is shared), so the ratios are suspect.
    direct_ratio = ratio(report.throughput["direct"], report.throughput[ANCHOR])
    if direct_ratio < 2.0:
        out.append(f"WARNING: direct is only {direct_ratio:.2f}x nginx-proxy (usually ~3x): the machine "
                   "was probably busy during the run; rerun before trusting the ratios")
    for group, results in (("throughput", report.throughput), ("fixed load", report.fixed)):
        for name, r in results.items():
            if r.non_2xx or r.socket_errors:
                out.append(f"WARNING: {name} ({group}): {r.non_2xx} non-2xx/3xx responses and "
                           f"{r.socket_errors} socket errors out of {r.requests} requests")
    return out


def git_revision() -> str:
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )

    head = git("rev-parse", "--short", "HEAD")
    if head.returncode != 0:
        return "uncommitted"
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return head.stdout.strip() + (" + uncommitted changes" if dirty else "")


DOCS_INTRO = f"""\
# Performance

How to run: `make bench` (it installs nginx-light and wrk via `scripts/bench-deps.sh` if missing,
then runs `.venv/bin/python bench/run.py`; pass options as `make bench BENCH_ARGS="--workers 2"`,
see `bench/run.py --help`). About one minute. Each run appends a section below with its date
(UTC), commit and exact command; the last stdout lines are `RATIO <scenario> <ratio>`.

Method: everything is measured in one run, side by side, on a 2-core machine that wrk, nginx and
tsgate share, so absolute rps figures mean little; compare the **ratio to the nginx-proxy row**.
Rows: `direct` (wrk straight at an nginx `return 200` upstream), `nginx-proxy` (nginx reverse proxy,
one worker, keepalive upstream pool: the anchor) and one row per tsgate scenario. Each row gets a
warm-up, then a fixed-duration `wrk --latency` run (rps, p50, p99, non-2xx). Latency overhead is
measured at a low, paced load (far from saturating nginx) and reported as p50/p99 minus the direct
row's. Without wrk2 the pace is a fixed pause per connection (wrk Lua `delay()`), so a slower row
is offered somewhat fewer rps; each row's achieved rps is printed next to its latencies.
Targets: pass-through >= 0.30 x nginx-proxy; added latency at ~1k rps p50 <= 0.5 ms, p99 <= 2 ms.

{RUNS_MARKER}
"""


def ratio_lines(report: Report) -> list[str]:
    anchor = report.throughput[ANCHOR]
    return [f"RATIO {name} {ratio(report.throughput[row], anchor):.3f}"
            for name, row in zip(report.scenario_names, report.tsgate_rows, strict=True)]


def run_section(report: Report, command: str, started: datetime, seconds: float) -> str:
    """The run's markdown (without the RATIO lines, which go last on stdout / fenced in the docs)."""
    body = [
        f"## {started:%Y-%m-%d %H:%M} UTC — {git_revision()}",
        "",
        f"Command: `{command}` ({seconds:.0f} s, {os.cpu_count()} cores)",
        "",
        table(report),
        "",
        *added_latency_lines(report),
        *(["", "Redis per request (from the gateway's tsgate_redis_commands_total):",
           *(f"- {row}: {note}" for row, note in report.notes.items())] if report.notes else []),
        *(["", *(f"- {w}" for w in warnings(report))] if warnings(report) else []),
    ]
    return "\n".join(body) + "\n"


def append_docs(section: str) -> None:
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else DOCS_INTRO
    if RUNS_MARKER not in text:
        text = text.rstrip("\n") + "\n\n" + RUNS_MARKER + "\n"
    DOCS.write_text(text.rstrip("\n") + "\n\n" + section, encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=int, default=8, help="seconds per measured wrk run (default 8)")
    p.add_argument("--connections", type=int, default=32, help="wrk -c for throughput rows (default 32)")
    p.add_argument("--threads", type=int, default=1, help="wrk -t (default 1: wrk shares the 2 cores)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up seconds before each row (default 2)")
    p.add_argument("--workers", type=int, default=1,
                   help=f"tsgate --workers; above 1 also --state {REDIS_STATE} (default 1)")
    p.add_argument("--fixed-rate", type=int, default=1000,
                   help="target rps of the latency-at-fixed-load runs; 0 = closed loop (default 1000)")
    p.add_argument("--fixed-connections", type=int, default=4, help="wrk -c at fixed load (default 4)")
    p.add_argument("--fixed-duration", type=int, default=6, help="seconds per fixed-load run (default 6)")
    p.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS],
                   help="only this tsgate scenario (repeatable; default: all)")
    p.add_argument("--no-docs", action="store_true", help="do not append the run to docs/performance.md")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="also sample each tsgate row with py-spy (pip install py-spy) during its throughput run "
                        "and write DIR/<scenario>.txt (collapsed stacks, for flamegraph tools)")
    args = p.parse_args(argv)
    if min(args.duration, args.connections, args.threads, args.workers, args.fixed_connections,
           args.fixed_duration) < 1 or args.warmup < 0 or args.fixed_rate < 0:
        p.error("durations, connections, threads and workers must be positive")
    return args


def find_tools(workers: int) -> tuple[str, str, bool]:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if nginx is None:
        raise BenchError("nginx not found; run scripts/bench-deps.sh (Debian: apt-get install nginx-light)")
    wrk2 = shutil.which("wrk2")
    wrk = wrk2 or shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk not found; run scripts/bench-deps.sh (Debian: apt-get install wrk)")
    if (workers > 1 or any((s.workers or 1) > 1 for s in SCENARIOS)) and not redis_answers(REDIS_STATE):
        raise BenchError(f"--workers {workers} needs Redis for shared state; {REDIS_STATE} does not answer")
    return nginx, wrk, wrk2 is not None


def fixed_load(args: argparse.Namespace) -> tuple[Load, str]:
    """Low load, far from saturating nginx. Without wrk2 the pace comes from a per-connection pause
    (wrk's Lua delay()): rate ~= connections / (pause + latency), i.e. a little under the target."""
    c = args.fixed_connections
    if args.fixed_rate == 0:
        return Load(1, c, args.fixed_duration), f"closed loop, wrk -t1 -c{c} -d{args.fixed_duration}s"
    delay_ms = max(1, round(c * 1000 / args.fixed_rate))
    label = (f"~{args.fixed_rate} rps: wrk -t1 -c{c} -d{args.fixed_duration}s with a {delay_ms} ms pause "
             f"per connection between requests")
    return Load(1, c, args.fixed_duration, delay_ms=delay_ms, rate=args.fixed_rate), label


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Ctrl+C, SIGTERM and SIGHUP end the run through ``StopFlag``, so the finally blocks stop
    every child. A SIGINT that was ignored when we started (a background job) stays ignored."""
    wanted = [signal.SIGTERM, signal.SIGHUP]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        wanted.append(signal.SIGINT)
    previous = {s: signal.signal(s, StopFlag.handler) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def profiled(out_dir: Path | None, name: str, gateway: subprocess.Popen[bytes], load: Load) -> Iterator[None]:
    """py-spy samples the gateway (and its worker processes) while the row is measured."""
    spy = shutil.which("py-spy") or str(REPO / ".venv" / "bin" / "py-spy")
    if out_dir is None:
        yield
        return
    if not os.access(spy, os.X_OK):
        raise BenchError("--profile needs py-spy (.venv/bin/python -m pip install py-spy)")
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [spy, "record", "--subprocesses", "--format", "raw", "--rate", "200",
            "--pid", str(gateway.pid), "--output", str(out_dir / f"{name}.txt")]
    spy_proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy_proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        wait_exit(spy_proc, 10)


def run_bench(args: argparse.Namespace, procs: Processes, tmp: Path) -> Report:
    nginx, wrk_bin, is_wrk2 = find_tools(args.workers)
    wrk = Wrk(wrk_bin, procs, tmp, is_wrk2)
    load = Load(args.threads, args.connections, args.duration)
    fixed, fixed_label = fixed_load(args)
    ports = {"direct": free_port(), ANCHOR: free_port()}

    start_nginx(procs, nginx, "direct", tmp, ports["direct"], NGINX_UPSTREAM.format(port=ports["direct"]))
    start_nginx(procs, nginx, ANCHOR, tmp, ports[ANCHOR],
                NGINX_PROXY.format(port=ports[ANCHOR], upstream_port=ports["direct"]))
    throughput: dict[str, WrkResult] = {}
    fixed_results: dict[str, WrkResult] = {}
    for row in ("direct", ANCHOR):
        print(f"bench: {row} ...", file=sys.stderr, flush=True)
        throughput[row] = measure(wrk, ports[row], load, args.warmup)
        fixed_results[row] = measure(wrk, ports[row], fixed, 1)

    ctx = BenchContext(tmp=tmp, upstream_url=f"http://127.0.0.1:{ports['direct']}", workers=args.workers)
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    rows: list[str] = []
    notes: dict[str, str] = {}
    for scenario in chosen:
        sc = scenario.prepare(scenario, ctx) if scenario.prepare else scenario
        row = f"tsgate {sc.name}"
        print(f"bench: {row} ...", file=sys.stderr, flush=True)
        port = free_port()
        gateway, admin_port, token = start_tsgate(procs, sc, ctx, port)
        with sc.background(port) if sc.background else nullcontext(), profiled(args.profile, sc.name, gateway, load):
            throughput[row] = measure(wrk, port, load, args.warmup, sc)
            fixed_results[row] = measure(wrk, port, fixed, 1, sc)
        redis_note = redis_per_request(admin_port, token)
        if redis_note:
            notes[row] = redis_note
        procs.stop(gateway)  # one gateway at a time: the next row gets both cores' share
        rows.append(row)
    return Report(throughput, fixed_results, fixed_label, rows, [s.name for s in chosen], notes)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started, t0 = datetime.now(UTC), time.monotonic()
    python = os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO)) else sys.executable
    command = shlex.join([python, os.path.relpath(os.path.abspath(__file__), REPO), *argv])
    procs = Processes()
    try:
        with stop_on_signals(), tempfile.TemporaryDirectory(prefix="tsgate-bench-") as tmp_name:
            try:
                report = run_bench(args, procs, Path(tmp_name))
            finally:
                procs.stop_all()  # before the temp dir goes: nginx holds files in it
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except Interrupted:
        print("bench: interrupted; all processes stopped", file=sys.stderr)
        return 130
    seconds = time.monotonic() - t0
    section = run_section(report, command, started, seconds)
    ratios = ratio_lines(report)
    if not args.no_docs:
        append_docs(section + "\n```\n" + "\n".join(ratios) + "\n```\n")
    print(section)
    print(f"bench: done in {seconds:.0f} s" + ("" if args.no_docs else f"; appended to {DOCS}"),
          file=sys.stderr, flush=True)
    print("\n".join(ratios), flush=True)  # last on stdout: what scripts grep for
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
