"""`tsgate policy replay`: what a candidate policy would have done to recorded traffic.

The decision log (``log.decision_log``) holds, per request, what replay needs: time, method,
canonical path, client IP, the principal and its roles, what the credential was (none, valid,
invalid, unavailable), allow-listed headers (``log.replay_headers``), the body where the policy
permits (``log.replay_content``), and what tsgate decided. Records are re-evaluated in time order
in the sandbox (private memory state, the clock set to each record's time) and compared with
what happened: newly denied / challenged / held, newly allowed, or refused differently.

Known limits, reported rather than hidden: requests refused at intake (malformed, oversized) are
skipped; a request whose rule did not check credentials cannot be re-authenticated; CAPTCHA
clearances are not replayed; windows follow the memory backend (clock-aligned), so a log recorded
on Redis (windows from the first hit) can differ for requests right at a window edge."""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from policies.loader import LoadedPolicy
from policies.sandbox import Credential, PolicySandbox, SandboxRequest, Verdict

__all__ = ["Change", "ReplayReport", "read_log", "replay"]

MAX_EXAMPLES = 3
_CREDENTIALS = {"none", "valid", "invalid", "unavailable"}


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # newly_denied | newly_challenged | newly_held | newly_allowed | refused_differently
    rule: str
    path: str
    before: str  # decision[:reason]
    after: str
    decision_id: str


@dataclass(slots=True)
class ReplayReport:
    records: int = 0
    replayed: int = 0
    unchanged: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    changes: list[Change] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        by_kind: Counter[str] = Counter(c.kind for c in self.changes)
        groups: dict[tuple[str, str, str, str, str], list[str]] = defaultdict(list)
        for c in self.changes:
            groups[(c.kind, c.rule, c.path, c.before, c.after)].append(c.decision_id)
        rows = [{"kind": kind, "rule": rule, "path": path, "before": before, "after": after, "count": len(ids),
                 "examples": ids[:MAX_EXAMPLES]}
                for (kind, rule, path, before, after), ids in sorted(groups.items(), key=lambda kv: -len(kv[1]))]
        return {"records": self.records, "replayed": self.replayed, "unchanged": self.unchanged,
                "changed": len(self.changes), "by_kind": dict(by_kind), "skipped": dict(self.skipped),
                "changes": rows}


def read_log(paths: Iterable[str | Path]) -> Iterator[dict[str, Any] | None]:
    """Every line of the logs as a record (None for a line that is not a JSON object)."""
    for path in paths:
        with Path(path).open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    yield None
                    continue
                yield record if isinstance(record, dict) else None


def _label(decision: str, reason: str) -> str:
    return decision if decision == "allow" else f"{decision}:{reason}"


def _request(record: dict[str, Any]) -> SandboxRequest | str:
    """The recorded request, or why it cannot be replayed."""
    if not record.get("rule") or record.get("rule") == "none":
        return "refused at intake"
    method, path, ts = record.get("method"), record.get("path"), record.get("ts")
    if not isinstance(method, str) or not isinstance(path, str) or not isinstance(ts, int | float):
        return "missing method, path or ts"
    if record.get("reason") in ("client.disconnected", "request.body_too_large"):
        return "not decided by the policy"
    credential = record.get("credential") or "none"
    if credential not in _CREDENTIALS:
        return "unknown credential value"
    checked = cast(Credential, credential)
    principal = record.get("principal")
    user = principal if credential == "valid" and isinstance(principal, str) else None
    roles = record.get("roles") or []
    headers = record.get("headers") or {}
    body = None
    if isinstance(record.get("body_b64"), str):
        try:
            body = base64.b64decode(record["body_b64"], validate=True)
        except ValueError:
            return "body_b64 is not base64"
    status = record.get("status")
    return SandboxRequest(
        method=method, path=path, client_ip=str(record.get("client_ip") or "0.0.0.0"),
        headers=tuple((str(k), str(v)) for k, v in headers.items()) if isinstance(headers, dict) else (),
        body=body, user=user, roles=frozenset(str(r) for r in roles) if isinstance(roles, list) else frozenset(),
        credential=checked, at=float(ts),
        status=status if record.get("decision") == "allow" and isinstance(status, int) else None)


def _compare(record: dict[str, Any], verdict: Verdict) -> str | None:
    before_decision = str(record.get("decision"))
    before_reason = str(record.get("reason") or "") if before_decision != "allow" else ""
    after_reason = verdict.reason if verdict.decision != "allow" else ""
    if (before_decision, before_reason) == (verdict.decision, after_reason):
        return None
    if verdict.decision == "allow":
        return "newly_allowed"
    if before_decision != "allow":
        return "refused_differently"
    return {"deny": "newly_denied", "challenge": "newly_challenged", "hold": "newly_held"}[verdict.decision]


async def replay(loaded: LoadedPolicy, records: Iterable[dict[str, Any] | None]) -> ReplayReport:
    report = ReplayReport()
    usable: list[tuple[float, int, dict[str, Any], SandboxRequest]] = []
    for index, record in enumerate(records):
        report.records += 1
        if record is None:
            report.skipped["not a JSON object"] += 1
            continue
        request = _request(record)
        if isinstance(request, str):
            report.skipped[request] += 1
            continue
        usable.append((request.at or 0.0, index, record, request))
    usable.sort(key=lambda item: (item[0], item[1]))  # time order; log order breaks ties
    sandbox = PolicySandbox(loaded, start=usable[0][0] if usable else None)
    try:
        for _, _, record, request in usable:
            verdict = await sandbox.evaluate(request)
            report.replayed += 1
            kind = _compare(record, verdict)
            if kind is None:
                report.unchanged += 1
                continue
            report.changes.append(Change(
                kind=kind, rule=verdict.rule, path=request.path,
                before=_label(str(record.get("decision")), str(record.get("reason") or "")),
                after=_label(verdict.decision, verdict.reason), decision_id=str(record.get("decision_id") or "")))
    finally:
        await sandbox.aclose()
    return report
