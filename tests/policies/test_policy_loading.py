"""Policy files: typed, strict, and errors that name the field path and the line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from policies.loader import PolicyError, load_policy, load_policy_text
from policies.matcher import RouteMatcher, parse_template

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "policies").glob("*.yaml"))

MINIMAL = 'upstream: {url: "http://127.0.0.1:8000"}\n'


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "t.yaml")
    return info.value.problems


def test_minimal_policy_loads_with_defaults() -> None:
    """A policy with only an upstream is valid and gets documented defaults."""
    loaded = load_policy_text(MINIMAL)
    assert loaded.policy.state == "memory://"
    assert loaded.policy.upstream.read_timeout == 30.0
    assert len(loaded.sha256) == 64


def test_errors_name_path_and_line() -> None:
    """Each error names the field path and its line."""
    problems = problems_of(
        MINIMAL
        + "routes:\n"
        + "  - id: a\n"
        + "    match: {path: /x}\n"
        + "    mode: enforced\n"
        + "  - id: b\n"
        + "    match: {path: /y}\n"
        + "    ip: {deny: [10.0.0.300]}\n"
    )
    assert any(p.startswith("routes[0].mode (line 5)") for p in problems), problems
    assert any(p.startswith("routes[1].ip.deny[0] (line 8)") and "10.0.0.300" in p for p in problems), problems


def test_unknown_field_is_refused() -> None:
    """A misspelled field is an error, not silently ignored (extra='forbid')."""
    problems = problems_of(MINIMAL + "routes:\n  - id: a\n    match: {path: /x}\n    mdoe: shadow\n")
    assert problems == ["routes[0].mdoe (line 5): unknown field (check the spelling; see `tsgate policy schema`)"]


def test_duplicate_yaml_key_is_refused() -> None:
    """Two equal keys in one mapping are refused with the line, instead of keeping the last."""
    problems = problems_of(MINIMAL + "routes:\n  - id: a\n    match: {path: /x}\n    mode: shadow\n    mode: off\n")
    assert problems and "duplicate key 'mode'" in problems[0] and "line 6" in problems[0]


def test_missing_upstream_and_bad_values() -> None:
    """A missing required field and bad durations/sizes/URLs are reported together."""
    problems = problems_of(
        "request: {max_body_bytes: 1XB}\nupstream: {url: 'ftp://x', read_timeout: -1s}\n"
    )
    joined = "\n".join(problems)
    assert "request.max_body_bytes (line 1)" in joined
    assert "upstream.url (line 2)" in joined
    assert "upstream.read_timeout (line 2)" in joined


def test_duplicate_rule_ids_refused() -> None:
    """Rule ids are unique (they key metrics, logs and replay)."""
    problems = problems_of(MINIMAL + "routes:\n  - {id: a, match: {path: /x}}\n  - {id: a, match: {path: /y}}\n")
    assert "used by an earlier route" in problems[0]


@pytest.mark.parametrize("template", ["x", "/a/**/b", "/a/{x}/{x}", "/a/{x", "/a//b", "/a/../b", "/a/*"])
def test_bad_templates(template: str) -> None:
    """Templates that could be read two ways are refused at load."""
    with pytest.raises(ValueError):
        parse_template(template)


def test_yaml_syntax_error_has_line() -> None:
    """Broken YAML names its line."""
    problems = problems_of("upstream: {url: x\nroutes: [\n")
    assert problems[0].startswith("line ")


def test_not_a_mapping() -> None:
    """A YAML list or scalar is not a policy."""
    assert "mapping" in problems_of("- a\n- b\n")[0]


def test_matcher_first_match_in_policy_order() -> None:
    """The first matching rule in file order wins, methods filter, literals are case-insensitive."""
    m = RouteMatcher([("/api/users/{name}/follow", ["POST"]), ("/api/users/{id}", None),
                      ("/api/**", None), ("/**", None)])
    assert m.match("POST", "/api/users/bob/follow") == m.match("POST", "/API/Users/bob/follow")
    hit = m.match("POST", "/api/users/bob/follow")
    assert hit is not None and hit.index == 0 and hit.params == {"name": "bob"}
    other = m.match("GET", "/api/users/bob/follow")
    assert other is not None and other.index == 2
    user = m.match("GET", "/api/users/Bob/")
    assert user is not None and user.index == 1 and user.params == {"id": "Bob"}
    root = m.match("GET", "/")
    assert root is not None and root.index == 3


def test_matcher_hundreds_of_routes() -> None:
    """Hundreds of routes compile and match correctly (the trie, not a regex scan)."""
    routes = [(f"/api/v1/resource{i}/{{id}}/action{i}", ["POST"]) for i in range(500)]
    m = RouteMatcher([*routes, ("/**", None)])
    hit = m.match("POST", "/api/v1/resource377/abc/action377")
    assert hit is not None and hit.index == 377 and hit.params == {"id": "abc"}
    miss = m.match("POST", "/api/v1/resource377/abc/action378")
    assert miss is not None and miss.index == 500


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_policies_are_valid(path: Path) -> None:
    """Every shipped example policy loads."""
    load_policy(path)


def test_examples_exist() -> None:
    """The demo policy is among the examples."""
    assert any(p.name == "demo.yaml" for p in EXAMPLES)


def test_cli_policy_check_and_schema(tmp_path: Path) -> None:
    """`tsgate policy check` exits 0 on a good file and 2 with path+line on a bad one; schema is JSON."""
    good = subprocess.run([sys.executable, "-m", "gateway.cli", "policy", "check", str(EXAMPLES[0])],
                          capture_output=True, text=True, cwd=ROOT)
    assert good.returncode == 0 and "OK" in good.stdout
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(MINIMAL + "routes:\n  - id: a\n    match: {path: /x}\n    mode: sometimes\n")
    bad = subprocess.run([sys.executable, "-m", "gateway.cli", "policy", "check", str(bad_file)],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2
    assert "routes[0].mode (line 5)" in bad.stderr
    assert "Traceback" not in bad.stderr
    schema = subprocess.run([sys.executable, "-m", "gateway.cli", "policy", "schema"],
                            capture_output=True, text=True, cwd=ROOT)
    assert schema.returncode == 0
    assert json.loads(schema.stdout)["properties"]["routes"]["type"] == "array"


def test_policy_reference_is_current() -> None:
    """docs/policy-reference.md matches the policy model (regenerate: python -m policies.reference)."""
    from policies.reference import render_reference

    committed = (ROOT / "docs" / "policy-reference.md").read_text(encoding="utf-8")
    assert committed == render_reference(), "stale: run `python -m policies.reference > docs/policy-reference.md`"


def test_state_urls_including_redis_cluster() -> None:
    """redis+cluster:// is accepted with host:port nodes; a malformed node list names the field."""
    ok = load_policy_text(MINIMAL + 'state: "redis+cluster://10.0.0.1:6379,10.0.0.2:6379/?prefix=gw:"\n')
    assert ok.policy.state.startswith("redis+cluster://")
    (problem,) = problems_of(MINIMAL + 'state: "redis+cluster://10.0.0.1,10.0.0.2:6379"\n')
    assert problem.startswith("state (line 2)") and "host:port" in problem
    (problem,) = problems_of(MINIMAL + 'state: "memcached://127.0.0.1:11211"\n')
    assert "redis+cluster://" in problem
