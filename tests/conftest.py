"""Shared fixtures: real processes on real sockets.

``backend`` is the demo backend as its own process; ``start_gateway`` runs `tsgate run` as its
own process in front of it with a policy the test writes. Tests talk to both over TCP."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "test-admin-token-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, seconds: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {seconds}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 10.0) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes or goes quiet. For hostile framing tests."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks: list[bytes] = []
        sock.settimeout(1.0)
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


@dataclass
class Backend:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def backend() -> Iterator[Backend]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.demo", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=ROOT)
    try:
        wait_port(port, proc=proc)
        yield Backend(port, proc)
    finally:
        stop(proc)


@dataclass
class GatewayProc:
    port: int
    admin_port: int
    policy_path: Path
    proc: subprocess.Popen[bytes]
    log_path: Path

    def get(self, path: str, **kw: Any) -> Response:
        return request(self.port, "GET", path, **kw)

    def admin(self, method: str, path: str, token: str | None = ADMIN_TOKEN, body: bytes | None = None,
              content_type: str | None = None) -> Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if content_type:
            headers["Content-Type"] = content_type
        return request(self.admin_port, method, path, body=body, headers=headers)

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out


POLICY_HEAD = """
version: 1
upstream: {{url: "http://127.0.0.1:{backend_port}", connect_timeout: 1s, read_timeout: {read_timeout}}}
state: "{state}"
trusted_proxies: {trusted}
"""


def policy_text(backend_port: int, body: str, *, state: str = "memory://", read_timeout: str = "5s",
                trusted: str = "[]") -> str:
    return POLICY_HEAD.format(backend_port=backend_port, state=state, read_timeout=read_timeout,
                              trusted=trusted) + body


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProc]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(policy: str, *, workers: int = 1, extra_env: dict[str, str] | None = None,
              args: list[str] | None = None) -> GatewayProc:
        policy_path = tmp_path / f"policy-{len(procs)}.yaml"
        policy_path.write_text(policy, encoding="utf-8")
        port, admin_port = free_port(), free_port()
        log_path = tmp_path / f"gateway-{len(procs)}.log"
        env = {**os.environ, "TSGATE_ADMIN_TOKEN": ADMIN_TOKEN, **(extra_env or {})}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", "--policy", str(policy_path), "--port", str(port),
                 "--admin-port", str(admin_port), "--workers", str(workers), *(args or [])],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        wait_port(admin_port, proc=proc)
        wait_port(port, proc=proc)
        # Listening sockets are bound before the event loop runs: wait until it answers.
        deadline = time.monotonic() + 15
        while request(admin_port, "GET", "/healthz").status != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway never became healthy")
            time.sleep(0.05)
        return GatewayProc(port, admin_port, policy_path, proc, log_path)

    yield start
    for proc in procs:
        stop(proc)


def redis_url() -> str | None:
    if os.environ.get("TSGATE_TEST_NO_REDIS"):
        return None
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster-bus twins (port + 10000) are free too and still below 65536."""
    import random

    def free(port: int) -> bool:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(20000, 29999)
        if port not in chosen and free(port) and free(port + 10000):
            chosen.append(port)
    return chosen


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[str]:
    """A real three-node Redis Cluster (no replicas) from the redis-server binary, for this test
    session only; yields ``redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3``."""
    import shutil
    import tempfile

    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("NO redis-server/redis-cli binary: the Redis Cluster tests are SKIPPED")
    workdir = Path(tempfile.mkdtemp(prefix="tsgate-cluster-"))
    ports = _cluster_ports(3)
    procs = []
    try:
        for port in ports:
            node_dir = workdir / str(port)
            node_dir.mkdir()
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no", "--dir", str(node_dir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            wait_port(port, 10)
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 20
        while True:  # every node must agree the cluster is up before clients connect
            states = [subprocess.run(["redis-cli", "-p", str(p), "cluster", "info"], capture_output=True,
                                     text=True, timeout=5).stdout for p in ports]
            if all("cluster_state:ok" in s for s in states):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster did not come up: {states}")
            time.sleep(0.1)
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
