"""Policy unit tests: requests and the outcomes a security team expects, run in the sandbox.

A tests file (YAML)::

    tests:
      - name: anonymous reads are allowed
        request: {method: GET, path: /api/posts}
        expect: {decision: allow}
      - name: the 21st follow in an hour is refused
        steps:
          - {request: {method: POST, path: /api/users/bob/follow, user: alice}, repeat: 20,
             expect: {decision: allow}}
          - {request: {method: POST, path: /api/users/bob/follow, user: alice},
             expect: {decision: deny, status: 429, reason: ratelimit.exceeded}}

Each test gets a fresh sandbox (its own counters and clock); steps of one test share them, and
``after: 61s`` moves the clock before a step. ``expect`` is checked on every repetition."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.loader import LoadedPolicy, PolicyError, load_yaml_model
from policies.model import Duration
from policies.sandbox import PolicySandbox, SandboxRequest, Verdict

__all__ = ["TestFailure", "TestsFile", "load_tests", "run_tests"]

_START = 1_800_000_000.0  # a fixed sandbox epoch: results never depend on when the tests run


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestSpec(_Strict):
    method: str = Field("GET", pattern=r"^[A-Za-z]{1,16}$")
    path: str = Field(pattern=r"^/")
    ip: str = "203.0.113.10"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = Field(None, description="Request body as text (JSON, form, ...).")
    user: str | None = None
    roles: list[str] = Field(default_factory=lambda: ["user"])
    credential: Literal["none", "valid", "invalid", "unavailable"] | None = None
    upstream_status: int | None = Field(None, ge=100, le=599,
                                        description="What the backend answers (for count_on limits).")

    def to_request(self, at: float) -> SandboxRequest:
        return SandboxRequest(
            method=self.method, path=self.path, client_ip=self.ip, headers=tuple(self.headers.items()),
            body=self.body.encode() if self.body is not None else None, user=self.user,
            roles=frozenset(self.roles) if self.user is not None else frozenset(),
            credential=self.credential, at=at, status=self.upstream_status)


class Expect(_Strict):
    decision: Literal["allow", "deny", "challenge", "hold"] | None = None
    status: int | None = None
    reason: str | None = None
    rule: str | None = None
    guard: str | None = None
    would_have: Literal["allow", "deny", "challenge", "hold"] | None = None

    def mismatches(self, verdict: Verdict) -> list[str]:
        got = {"decision": verdict.decision, "status": verdict.status, "reason": verdict.reason,
               "rule": verdict.rule, "guard": verdict.guard, "would_have": verdict.would_have or "allow"}
        wanted = self.model_dump(exclude_none=True)
        return [f"{key}: expected {value!r}, got {got[key]!r}" for key, value in wanted.items() if got[key] != value]


class Step(_Strict):
    request: RequestSpec
    expect: Expect
    repeat: int = Field(1, ge=1, le=100_000)
    after: Duration = Field(0.0, description="Move the sandbox clock forward by this much first.")


class PolicyTest(_Strict):
    name: str = Field(min_length=1)
    request: RequestSpec | None = None
    expect: Expect | None = None
    repeat: int = Field(1, ge=1, le=100_000)
    steps: list[Step] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_form(self) -> PolicyTest:
        single = self.request is not None or self.expect is not None
        if single == bool(self.steps):
            raise ValueError("give either request + expect, or steps")
        if single and (self.request is None or self.expect is None):
            raise ValueError("request and expect go together")
        return self

    def all_steps(self) -> list[Step]:
        if self.request is not None and self.expect is not None:
            return [Step(request=self.request, expect=self.expect, repeat=self.repeat)]
        return self.steps


class TestsFile(_Strict):
    tests: list[PolicyTest] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class TestFailure:
    test: str
    step: int
    repetition: int
    problems: list[str]
    verdict: Verdict


def load_tests(path: str | Path) -> TestsFile:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    return load_yaml_model(text, str(path), TestsFile, "a policy tests file")


async def run_tests(loaded: LoadedPolicy, tests: TestsFile) -> tuple[int, list[TestFailure]]:
    """Run every test; return (tests passed, failures). Stops a test at its first failure."""
    passed = 0
    failures: list[TestFailure] = []
    for test in tests.tests:
        sandbox = PolicySandbox(loaded, start=_START)
        try:
            failure = await _run_one(sandbox, test)
        finally:
            await sandbox.aclose()
        if failure is None:
            passed += 1
        else:
            failures.append(failure)
    return passed, failures


async def _run_one(sandbox: PolicySandbox, test: PolicyTest) -> TestFailure | None:
    for number, step in enumerate(test.all_steps(), start=1):
        sandbox.move_to(sandbox.clock.now() + step.after)
        for repetition in range(1, step.repeat + 1):
            verdict = await sandbox.evaluate(step.request.to_request(sandbox.clock.now()))
            problems = step.expect.mismatches(verdict)
            if problems:
                return TestFailure(test.name, number, repetition, problems, verdict)
    return None

