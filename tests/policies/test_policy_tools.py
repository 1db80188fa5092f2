"""`tsgate policy explain | test`: the sandbox decides like the gateway, touches no live state, and
the example policies pass the tests they ship with."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from policies.loader import PolicyError, load_policy, load_policy_text
from policies.policytest import load_tests, run_tests
from policies.sandbox import PolicySandbox, SandboxRequest
from policies.tools_cli import run as run_tool

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "policies"

POLICY = """
upstream: {url: "http://127.0.0.1:8000"}
state: "redis://127.0.0.1:1/0"   # never reached: the sandbox keeps its own state
auth: {}
routes:
  - id: admin
    match: {path: "/admin/**"}
    auth: required
    roles: [admin]
  - id: limited
    match: {methods: [POST], path: "/api/items/{id}"}
    limits:
      - {name: per-item, rate: "2/minute", key: "path:id"}
"""


@pytest.mark.parametrize("policy", sorted(p.stem for p in EXAMPLES.glob("*.yaml")))
async def test_every_example_policy_passes_its_shipped_tests(policy: str) -> None:
    tests_file = EXAMPLES / "tests" / f"{policy}.yaml"
    assert tests_file.exists(), f"examples/policies/{policy}.yaml ships without tests"
    passed, failures = await run_tests(load_policy(EXAMPLES / f"{policy}.yaml"), load_tests(tests_file))
    assert not failures, [(f.test, f.problems) for f in failures]
    assert passed == len(load_tests(tests_file).tests)


async def test_sandbox_decides_roles_limits_and_windows_from_its_own_clock() -> None:
    sandbox = PolicySandbox(load_policy_text(POLICY), start=1_800_000_000.0)
    try:
        admin = await sandbox.evaluate(SandboxRequest("GET", "/admin/x", user="u1", roles=frozenset({"user"})))
        assert (admin.decision, admin.status, admin.reason) == ("deny", 403, "auth.forbidden")
        assert [s.guard for s in admin.steps] == ["authn"]
        ok = await sandbox.evaluate(SandboxRequest("GET", "/admin/x", user="u1", roles=frozenset({"admin"})))
        assert ok.decision == "allow"
        answers = [(await sandbox.evaluate(SandboxRequest("POST", "/api/items/7"))).decision for _ in range(3)]
        assert answers == ["allow", "allow", "deny"]
        other = await sandbox.evaluate(SandboxRequest("POST", "/api/items/8"))
        assert other.decision == "allow" and other.params == {"id": "8"}
        later = await sandbox.evaluate(SandboxRequest("POST", "/api/items/7", at=1_800_000_000.0 + 121))
        assert later.decision == "allow"  # two windows later the item's budget is back
    finally:
        await sandbox.aclose()


def test_explain_prints_each_guard_and_the_outcome(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    args = argparse.Namespace(policy_command="explain", file=str(policy), method="POST", path="/api/items/7",
                              user=None, role=[], credential=None, ip="198.51.100.1", header=[], body=None,
                              repeat=3, json=True)
    assert run_tool(args) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["decision"] == "deny" and verdict["status"] == 429 and verdict["rule"] == "limited"
    assert verdict["steps"][-1]["reason"] == "ratelimit.exceeded"


def test_policy_test_exit_code_and_report(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    tests = tmp_path / "t.yaml"
    tests.write_text("""
tests:
  - name: admins only
    request: {method: GET, path: /admin/x, user: bob, roles: [user]}
    expect: {decision: allow}
  - name: anonymous is refused
    request: {method: GET, path: /admin/x}
    expect: {decision: deny, status: 401, reason: auth.required}
""")
    args = argparse.Namespace(policy_command="test", file=str(policy), tests=str(tests))
    assert run_tool(args) == 1
    out = capsys.readouterr().out
    assert "FAIL admins only" in out and "decision: expected 'allow', got 'deny'" in out
    assert "1/2 policy tests passed, 1 failed" in out


def test_a_malformed_tests_file_names_the_field_and_line(tmp_path: Path) -> None:
    tests = tmp_path / "t.yaml"
    tests.write_text("tests:\n  - name: x\n    request: {method: GET, path: /}\n    expect: {decison: allow}\n")
    with pytest.raises(PolicyError) as info:
        load_tests(tests)
    assert info.value.problems == [
        "tests[0].expect.decison (line 4): unknown field (check the spelling; see `tsgate policy schema`)"]
