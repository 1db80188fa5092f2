"""`tsgate policy explain | test | replay`: the security team's tools, all side-effect free (they
evaluate in ``policies.sandbox``, never against the live state store)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from policies.loader import load_policy
from policies.policytest import load_tests, run_tests
from policies.replay import read_log, replay
from policies.sandbox import PolicySandbox, SandboxRequest, Verdict

__all__ = ["register", "run"]


def register(psub: Any) -> None:
    """Add the subcommands to ``tsgate policy``'s subparsers."""
    explain = psub.add_parser("explain", help="which rule matches a request, each guard's answer and the outcome")
    explain.add_argument("file", help="policy YAML")
    explain.add_argument("method")
    explain.add_argument("path", help="request path (with ?query if you like)")
    explain.add_argument("--user", help="an authenticated user id (default: anonymous)")
    explain.add_argument("--role", action="append", default=[], help="a role of --user (repeatable)")
    explain.add_argument("--credential", choices=["none", "valid", "invalid", "unavailable"],
                         help="what the presented credential was (default: valid with --user, else none)")
    explain.add_argument("--ip", default="203.0.113.10", help="client IP (default 203.0.113.10)")
    explain.add_argument("--header", action="append", default=[], metavar="NAME:VALUE", help="a request header")
    explain.add_argument("--body", help="request body (e.g. JSON)")
    explain.add_argument("--repeat", type=int, default=1, help="send it N times (limits count); show the last")
    explain.add_argument("--json", action="store_true", help="machine-readable output")

    test = psub.add_parser("test", help="run policy unit tests (exit 1 when any fails)")
    test.add_argument("file", help="policy YAML")
    test.add_argument("tests", help="tests YAML (requests and expected outcomes)")

    rep = psub.add_parser("replay", help="re-decide recorded traffic under a candidate policy and diff")
    rep.add_argument("--policy", required=True, help="the candidate policy YAML")
    rep.add_argument("--log", required=True, action="append", help="decision log JSONL (repeatable, in order)")
    rep.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int | None:
    """Run a subcommand of this module; None when it is not one of ours."""
    command = args.policy_command
    if command == "explain":
        return asyncio.run(_explain(args))
    if command == "test":
        return asyncio.run(_test(args))
    if command == "replay":
        return asyncio.run(_replay(args))
    return None


async def _explain(args: argparse.Namespace) -> int:
    loaded = load_policy(args.file)
    headers = []
    for raw in args.header:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            print(f"tsgate: --header {raw!r}: expected NAME:VALUE", file=sys.stderr)
            return 2
        headers.append((name.strip(), value.strip()))
    request = SandboxRequest(
        method=args.method, path=args.path, client_ip=args.ip, headers=tuple(headers),
        body=args.body.encode() if args.body is not None else None, user=args.user,
        roles=frozenset(args.role or (["user"] if args.user else [])), credential=args.credential)
    sandbox = PolicySandbox(loaded)
    try:
        verdict = await sandbox.evaluate(request)
        for _ in range(max(0, args.repeat - 1)):
            verdict = await sandbox.evaluate(request)
    finally:
        await sandbox.aclose()
    if args.json:
        print(json.dumps(verdict.to_json(), indent=2))
    else:
        print(_explain_text(verdict))
    return 0


def _explain_text(verdict: Verdict) -> str:
    lines = [f"rule: {verdict.rule} (mode {verdict.mode})"]
    if verdict.params:
        lines.append("path parameters: " + ", ".join(f"{k}={v}" for k, v in verdict.params.items()))
    if not verdict.steps:
        lines.append("guards: none")
    for step in verdict.steps:
        text = f"  {step.guard}: {step.decision}"
        if step.decision != "allow":
            text += f" {step.status} {step.reason}" + (f" ({step.detail})" if step.detail else "")
        lines.append(text)
    if verdict.signals:
        lines.append("signals: " + ", ".join(verdict.signals))
    if verdict.would_have:
        lines.append(f"shadow: would have been {verdict.would_have} {verdict.would_have_reason}")
    outcome = "allow (forwarded to the upstream)" if verdict.decision == "allow" else (
        f"{verdict.decision} {verdict.status} {verdict.reason} (by {verdict.guard})")
    lines.append(f"outcome: {outcome}")
    return "\n".join(lines)


async def _test(args: argparse.Namespace) -> int:
    loaded = load_policy(args.file)
    tests = load_tests(args.tests)
    passed, failures = await run_tests(loaded, tests)
    for failure in failures:
        print(f"FAIL {failure.test} (step {failure.step}, repetition {failure.repetition}):")
        for problem in failure.problems:
            print(f"  {problem}")
        print("  " + _explain_text(failure.verdict).replace("\n", "\n  "))
    total = len(tests.tests)
    print(f"{passed}/{total} policy tests passed" + ("" if not failures else f", {len(failures)} failed"))
    return 0 if not failures else 1


async def _replay(args: argparse.Namespace) -> int:
    loaded = load_policy(args.policy)
    try:
        report = await replay(loaded, read_log(args.log))
    except OSError as exc:
        print(f"tsgate: cannot read the log: {exc}", file=sys.stderr)
        return 2
    summary = report.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['replayed']} of {summary['records']} records replayed under {args.policy}: "
          f"{summary['unchanged']} unchanged, {summary['changed']} changed")
    for reason, count in sorted(summary["skipped"].items()):
        print(f"  skipped {count}: {reason}")
    for kind, count in sorted(summary["by_kind"].items()):
        print(f"  {kind}: {count}")
    for row in summary["changes"]:
        print(f"- {row['kind']} x{row['count']}: rule {row['rule']} {row['path']}: {row['before']} -> {row['after']}"
              f" (e.g. {', '.join(row['examples'])})")
    return 0
