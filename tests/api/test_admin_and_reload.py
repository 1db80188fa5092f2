"""The control plane and policy hot reload, against a real gateway process."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from tests.conftest import ADMIN_TOKEN, ROOT, Backend, GatewayProc, free_port, policy_text, redis_url, request

OPEN = """
routes:
  - id: any
    match: {path: "/**"}
"""
CLOSED = """
routes:
  - id: lockdown
    match: {path: "/api/debug/echo/**"}
    ip: {deny: ["0.0.0.0/0"]}
  - id: any
    match: {path: "/**"}
"""


@pytest.fixture
def gw(backend: Backend, start_gateway: Callable[..., GatewayProc]) -> GatewayProc:
    return start_gateway(policy_text(backend.port, OPEN))


def test_health_ready_metrics(gw: GatewayProc) -> None:
    """/healthz and /readyz answer, /metrics is Prometheus text with request counters."""
    assert request(gw.admin_port, "GET", "/healthz").json() == {"status": "ok"}
    ready = request(gw.admin_port, "GET", "/readyz")
    assert ready.status == 200 and ready.json()["checks"] == {"state": True, "upstream": True}
    request(gw.port, "GET", "/api/health")
    metrics = request(gw.admin_port, "GET", "/metrics").body.decode()
    assert 'tsgate_requests_total{decision="allow",rule="any",status="200"}' in metrics
    assert "tsgate_request_duration_seconds_bucket" in metrics


def test_readyz_false_when_upstream_down(start_gateway: Callable[..., GatewayProc]) -> None:
    """/readyz is 503 with the failing check named when the upstream is down."""
    gw = start_gateway(policy_text(free_port(), OPEN))
    ready = request(gw.admin_port, "GET", "/readyz")
    assert ready.status == 503 and ready.json()["checks"]["upstream"] is False


def test_admin_needs_token(gw: GatewayProc) -> None:
    """Policy endpoints refuse missing or wrong tokens with 401 problem+json."""
    missing = gw.admin("GET", "/policy", token=None)
    assert missing.status == 401 and missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["reason"] == "admin.unauthorized"
    assert gw.admin("GET", "/policy", token="wrong-token-wrong-token").status == 401
    ok = gw.admin("GET", "/policy")
    assert ok.status == 200 and len(ok.json()["sha256"]) == 64


def test_no_default_admin_token(backend: Backend, start_gateway: Callable[..., GatewayProc]) -> None:
    """Without a configured token the admin endpoints say how to set one; nothing is open by default."""
    gw = start_gateway(policy_text(backend.port, OPEN), extra_env={"TSGATE_ADMIN_TOKEN": ""})
    resp = gw.admin("GET", "/policy", token="anything-anything")
    assert resp.status == 401
    assert resp.json()["reason"] == "admin.token_not_configured"


def test_admin_not_reachable_through_proxy(gw: GatewayProc) -> None:
    """The proxy listener never serves the control plane (metrics, policy, reload)."""
    for path in ("/metrics", "/policy", "/policy/reload", "/healthz"):
        resp = request(gw.port, "GET", path)
        assert b"tsgate_requests_total" not in resp.body
        assert b"sha256" not in resp.body
    assert request(gw.port, "GET", "/_tsgate/anything").status == 404


def test_reload_applies_new_policy(gw: GatewayProc) -> None:
    """A valid new file is applied by the reload endpoint and changes behaviour at once."""
    assert request(gw.port, "GET", "/api/debug/echo/x").status == 200
    old = gw.admin("GET", "/policy").json()["sha256"]
    gw.policy_path.write_text(gw.policy_path.read_text().replace(OPEN, CLOSED))
    resp = gw.admin("POST", "/policy/reload")
    assert resp.status == 200 and resp.json()["sha256"] != old
    assert request(gw.port, "GET", "/api/debug/echo/x").status == 403
    versions = gw.admin("GET", "/policy/versions").json()
    assert [v["actor"] for v in versions] == ["startup", "admin-api"]


def test_invalid_reload_keeps_old_policy(gw: GatewayProc) -> None:
    """An invalid file is refused with path+line problems; the running policy stays."""
    old = gw.admin("GET", "/policy").json()["sha256"]
    gw.policy_path.write_text(gw.policy_path.read_text() + "    mode: sometimes\n")
    resp = gw.admin("POST", "/policy/reload")
    assert resp.status == 422
    problems = resp.json()["problems"]
    assert any("routes[0].mode" in p and "line" in p for p in problems), problems
    assert gw.admin("GET", "/policy").json()["sha256"] == old
    assert request(gw.port, "GET", "/api/debug/echo/x").status == 200


def test_sighup_reloads(gw: GatewayProc) -> None:
    """SIGHUP reloads the policy file."""
    gw.policy_path.write_text(gw.policy_path.read_text().replace(OPEN, CLOSED))
    gw.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and request(gw.port, "GET", "/api/debug/echo/x").status != 403:
        time.sleep(0.05)
    assert request(gw.port, "GET", "/api/debug/echo/x").status == 403


def test_validate_endpoint(gw: GatewayProc) -> None:
    """The validate endpoint checks a policy text without applying it."""
    bad = gw.admin("POST", "/policy/validate", body=b"upstream: {url: 'ftp://x'}\n")
    assert bad.status == 422 and "upstream.url (line 1)" in bad.json()["problems"][0]
    good = gw.admin("POST", "/policy/validate", body=gw.policy_path.read_bytes())
    assert good.status == 200 and good.json()["valid"] is True


def test_reload_under_load_fails_no_request(gw: GatewayProc) -> None:
    """Twenty reloads while four clients send requests: every request gets a 200."""
    failures: list[int] = []
    count = [0]
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            status = request(gw.port, "GET", "/api/health").status
            count[0] += 1
            if status != 200:
                failures.append(status)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        text = gw.policy_path.read_text()
        for i in range(20):
            gw.policy_path.write_text(text + f"# revision {i}\n")
            assert gw.admin("POST", "/policy/reload").status == 200
            time.sleep(0.02)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert count[0] > 50


def test_workers_with_memory_state_refused(backend: Backend, tmp_path: object) -> None:
    """`--workers 2` with memory:// is refused with a message that says to use redis://."""
    from pathlib import Path

    policy = Path(str(tmp_path)) / "p.yaml"
    policy.write_text(policy_text(backend.port, OPEN))
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "--policy", str(policy), "--workers", "2"],
                            capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert result.returncode == 2
    assert "redis://" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(redis_url() is None, reason="no Redis available (see scripts/with-services.sh)")
def test_two_workers_on_redis_serve_and_reload(backend: Backend, start_gateway: Callable[..., GatewayProc]) -> None:
    """Two workers sharing Redis state serve requests, and one reload reaches both workers."""
    gw = start_gateway(policy_text(backend.port, OPEN, state=str(redis_url())), workers=2)
    assert all(request(gw.port, "GET", "/api/debug/echo/x").status == 200 for _ in range(10))
    gw.policy_path.write_text(gw.policy_path.read_text().replace(OPEN, CLOSED))
    assert gw.admin("POST", "/policy/reload").status == 200
    deadline = time.monotonic() + 5
    statuses: list[int] = []
    while time.monotonic() < deadline:
        statuses = [request(gw.port, "GET", "/api/debug/echo/x").status for _ in range(20)]
        if set(statuses) == {403}:
            break
        time.sleep(0.1)
    assert set(statuses) == {403}


def test_versions_diff_and_rollback_under_load(gw: GatewayProc) -> None:
    """v1 open, v2 closed: the diff shows the change; rolling back to v1 under load restores the
    open behaviour without failing a request, writes v1's text back to the file and is audited."""
    original = gw.policy_path.read_text()
    gw.policy_path.write_text(original.replace(OPEN, CLOSED))
    assert gw.admin("POST", "/policy/reload").status == 200
    assert request(gw.port, "GET", "/api/debug/echo/x").status == 403
    diff = gw.admin("GET", "/policy/versions/1/diff/2").json()["diff"]
    assert "+  - id: lockdown" in diff and "-  - id: any" not in diff
    assert gw.admin("GET", "/policy/versions/1/diff/9").status == 404

    failures: list[int] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            status = request(gw.port, "GET", "/api/health").status
            if status != 200:
                failures.append(status)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        resp = request(gw.admin_port, "POST", "/policy/rollback", body=b'{"version": 1}',
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json",
                                "X-Tsgate-Actor": "alice@secops"})
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert resp.status == 200, resp.body
    assert resp.json()["restored"] == 1 and resp.json()["version"] == 3
    assert failures == []
    assert request(gw.port, "GET", "/api/debug/echo/x").status == 200
    assert gw.policy_path.read_text() == original
    versions = gw.admin("GET", "/policy/versions").json()
    assert [v["actor"] for v in versions] == ["startup", "admin-api", "admin-api:rollback:alice@secops"]
    assert versions[0]["sha256"] == versions[2]["sha256"]
    audit = [line for line in gw.log_path.read_text().splitlines() if '"audit": "policy.loaded"' in line]
    assert len(audit) == 3 and "alice@secops" in audit[-1]


def test_shadow_counts_in_the_admin_api(backend: Backend, start_gateway: Callable[..., GatewayProc]) -> None:
    shadow = """
routes:
  - id: trial
    match: {path: "/api/debug/echo/**"}
    mode: shadow
    ip: {deny: ["0.0.0.0/0"]}
  - id: any
    match: {path: "/**"}
"""
    gw = start_gateway(policy_text(backend.port, shadow))
    assert [request(gw.port, "GET", "/api/debug/echo/x").status for _ in range(3)] == [200] * 3
    assert gw.admin("GET", "/policy/shadow").json() == {"rules": {"trial": {"deny": 3.0}}}
    metrics = request(gw.admin_port, "GET", "/metrics").body.decode()
    assert 'tsgate_shadow_decisions_total{outcome="deny",rule="trial"} 3.0' in metrics
