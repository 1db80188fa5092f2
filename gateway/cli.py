"""The ``tsgate`` command: run | demo | policy check | schema | explain | test | replay | ...

Settings come from flags, else ``TSGATE_*`` environment variables, else defaults. Errors are one
clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from followers.cli import register as register_followers
from followers.cli import run as run_followers
from gateway.core.errors import ConfigError
from moderation.cli import register as register_moderation
from moderation.cli import run as run_moderation
from policies.loader import PolicyError, load_policy, with_overrides
from policies.model import Policy
from policies.tools_cli import register as register_policy_tools
from policies.tools_cli import run as run_policy_tools
from review.cli import register as register_review
from review.cli import run as run_review

__all__ = ["main"]

DEMO_POLICY = Path(__file__).parent / "demo" / "policy.yaml"
DEMO_PASSWORD = "violet tangerine orbit forty-two"  # noqa: S105 - printed as an example to try


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get("TSGATE_" + name, default)


def _int_env(name: str, default: int) -> int:
    value = _env(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"TSGATE_{name}: {value!r} is not a number") from None


def _seconds_env(name: str, default: float) -> float:
    value = _env(name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"TSGATE_{name}: {value!r} is not a number of seconds") from None
    if seconds < 0:
        raise ConfigError(f"TSGATE_{name}: {value!r} is negative")
    return seconds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tsgate", description="Security and trust-and-safety gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway with a policy file")
    run.add_argument("--policy", default=_env("POLICY"), help="policy YAML (env TSGATE_POLICY)")
    run.add_argument("--workers", type=int, default=None, help="worker processes (env TSGATE_WORKERS, default 1)")
    run.add_argument("--state", default=_env("STATE"), help="state URL overriding the policy (env TSGATE_STATE)")
    run.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="proxy listen address")
    run.add_argument("--port", type=int, default=None, help="proxy port (env TSGATE_PORT, default 8080)")
    run.add_argument("--admin-host", default=_env("ADMIN_HOST", "127.0.0.1"), help="admin listen address")
    run.add_argument("--admin-port", type=int, default=None, help="admin port (env TSGATE_ADMIN_PORT, default 9090)")
    run.add_argument("--header-timeout", type=float, default=None,
                     help="seconds for a complete request head, else 408 (env TSGATE_HEADER_TIMEOUT, default 10; "
                          "0 turns it off)")
    run.add_argument("--body-timeout", type=float, default=None,
                     help="longest pause between request body reads, then close (env TSGATE_BODY_TIMEOUT, "
                          "default 30; 0 turns it off)")
    run.add_argument("--keepalive-timeout", type=float, default=None,
                     help="idle seconds between requests (env TSGATE_KEEPALIVE_TIMEOUT, default 15)")
    run.add_argument("--max-connections", type=int, default=None,
                     help="open proxy connections per worker, past it 503 (env TSGATE_MAX_CONNECTIONS, default none)")
    run.add_argument("--drain-delay", type=float, default=None,
                     help="seconds from SIGTERM (readiness false) to closing the listener (env TSGATE_DRAIN_DELAY, "
                          "default 0)")
    run.add_argument("--drain-timeout", type=float, default=None,
                     help="seconds in-flight requests get after the listener closes (env TSGATE_DRAIN_TIMEOUT, "
                          "default 20)")

    demo = sub.add_parser("demo", help="run the demo backend with the gateway in front of it")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--admin-port", type=int, default=9090)
    demo.add_argument("--backend-port", type=int, default=8000)

    accounts = sub.add_parser("accounts", help="tsgate accounts (the identity provider's users)")
    asub = accounts.add_subparsers(dest="accounts_command", required=True)
    create = asub.add_parser("create", help="create an account, e.g. the first admin")
    create.add_argument("--policy", default=_env("POLICY"), required=_env("POLICY") is None,
                        help="policy YAML (its database: is used)")
    create.add_argument("--username", required=True)
    create.add_argument("--email", required=True)
    create.add_argument("--role", action="append", choices=["user", "moderator", "admin"],
                        help="repeatable; default user")
    create.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    keys = sub.add_parser("keys", help="signing and refresh-token key rings")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    gen = ksub.add_parser("generate", help="write a new key ring file (0600)")
    gen.add_argument("--out", required=True)
    gen.add_argument("--refresh", action="store_true", help="an AES-256 ring for refresh tokens")
    gen.add_argument("--alg", choices=["EdDSA", "ES256"], default="EdDSA")
    rot = ksub.add_parser("rotate", help="add a new active key; older keys keep verifying until dropped")
    rot.add_argument("--file", required=True)
    rot.add_argument("--refresh", action="store_true")
    rot.add_argument("--alg", choices=["EdDSA", "ES256"], default=None)

    limits_cmd = sub.add_parser("limits", help="inspect or clear one rate-limit key")
    lsub = limits_cmd.add_subparsers(dest="limits_command", required=True)
    for verb, text in (("inspect", "show each window of a key"), ("clear", "forget one key's windows")):
        cmd = lsub.add_parser(verb, help=text)
        cmd.add_argument("--policy", default=_env("POLICY"), required=_env("POLICY") is None)
        cmd.add_argument("--state", default=_env("STATE"), help="state URL overriding the policy")
        cmd.add_argument("--limit", required=True, help="the limit's name")
        cmd.add_argument("--key", required=True,
                         help="the key's values joined by '|', as the limit composes them (e.g. 203.0.113.7)")

    policy = sub.add_parser("policy", help="policy tools")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    check = psub.add_parser("check", help="validate a policy file")
    check.add_argument("file")
    psub.add_parser("schema", help="print the policy JSON Schema")
    register_policy_tools(psub)
    register_moderation(sub)
    register_followers(sub)
    register_review(sub)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway.api.auth import admin_token_from_env
    from gateway.server import ServeOptions, serve

    if not args.policy:
        raise ConfigError("--policy (or TSGATE_POLICY) is required")
    workers = args.workers if args.workers is not None else _int_env("WORKERS", 1)
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    overrides: dict[str, Any] = {"state": args.state} if args.state else {}
    loaded = with_overrides(load_policy(args.policy), overrides)
    if workers > 1 and loaded.policy.state.startswith("memory://"):
        raise ConfigError(
            f"--workers {workers} with state memory:// would give each worker its own limits and "
            "revocations; use a shared store: --state redis://127.0.0.1:6379/0 (or state: in the policy)"
        )
    opts = ServeOptions(
        host=args.host,
        port=args.port if args.port is not None else _int_env("PORT", 8080),
        admin_host=args.admin_host,
        admin_port=args.admin_port if args.admin_port is not None else _int_env("ADMIN_PORT", 9090),
        workers=workers,
        admin_token=admin_token_from_env(),
        overrides=overrides,
        **_slow_client_options(args),
    )
    return serve(loaded, opts)


def _slow_client_options(args: argparse.Namespace) -> dict[str, Any]:
    """Timeouts, the connection cap and draining: flag, else TSGATE_* env, else the default."""
    def seconds(flag: float | None, name: str, default: float) -> float:
        if flag is not None and flag < 0:
            raise ConfigError(f"--{name.lower().replace('_', '-')} must not be negative")
        return flag if flag is not None else _seconds_env(name, default)

    max_connections = args.max_connections if args.max_connections is not None else (
        _int_env("MAX_CONNECTIONS", 0) or None)
    if max_connections is not None and max_connections < 1:
        raise ConfigError("--max-connections must be at least 1")
    return {
        "header_timeout": seconds(args.header_timeout, "HEADER_TIMEOUT", 10.0),
        "body_timeout": seconds(args.body_timeout, "BODY_TIMEOUT", 30.0),
        "keepalive_timeout": seconds(args.keepalive_timeout, "KEEPALIVE_TIMEOUT", 15.0),
        "max_connections": max_connections,
        "drain_delay": seconds(args.drain_delay, "DRAIN_DELAY", 0.0),
        "drain_timeout": seconds(args.drain_timeout, "DRAIN_TIMEOUT", 20.0),
    }


def _wait_http(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=0.5) as response:  # noqa: S310 - local URL we built
                return bool(response.status < 500)
        except OSError:
            time.sleep(0.1)
    return False


def _cmd_demo(args: argparse.Namespace) -> int:
    token = os.environ.get("TSGATE_ADMIN_TOKEN") or secrets.token_urlsafe(24)
    env = {**os.environ, "TSGATE_ADMIN_TOKEN": token}
    # The backend checks X-Tsgate-Assertion against the gateway's public keys.
    backend_env = {**os.environ, "DEMO_TSGATE_JWKS_URL": f"http://127.0.0.1:{args.port}/.well-known/jwks.json"}
    backend = subprocess.Popen(
        [sys.executable, "-m", "gateway.demo", "--host", "127.0.0.1", "--port", str(args.backend_port)],
        env=backend_env,
    )
    gateway: subprocess.Popen[bytes] | None = None
    try:
        if not _wait_http(f"http://127.0.0.1:{args.backend_port}/api/health", 15):
            raise ConfigError(f"the demo backend did not start on port {args.backend_port}")
        policy_file = _demo_policy_file(args.backend_port)
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--policy", str(policy_file),
             "--port", str(args.port), "--admin-port", str(args.admin_port)],
            env=env,
        )
        if not _wait_http(f"http://127.0.0.1:{args.admin_port}/healthz", 15):
            raise ConfigError(f"the gateway did not start on ports {args.port}/{args.admin_port}")
        proxy = f"http://127.0.0.1:{args.port}"
        print(
            f"\ntsgate demo is running\n"
            f"  proxy    {proxy}   (what clients talk to)\n"
            f"  admin    http://127.0.0.1:{args.admin_port}   (token: {token})\n"
            f"  backend  http://127.0.0.1:{args.backend_port}   (the demo social API)\n"
            f"  policy   {policy_file}\n\n"
            f"Try:\n"
            f"  curl -s {proxy}/api/debug/echo -H 'X-Tsgate-User: mallory' | python3 -m json.tool\n"
            f"  curl -s {proxy}/_tsgate/auth/register -H 'content-type: application/json' -d \\\n"
            f"       '{{\"username\":\"alice\",\"email\":\"alice@example.org\",\"password\":\"{DEMO_PASSWORD}\"}}'\n"
            f"  curl -s {proxy}/_tsgate/auth/login -H 'content-type: application/json' -d \\\n"
            f"       '{{\"login\":\"alice\",\"password\":\"{DEMO_PASSWORD}\"}}'\n"
            f"  curl -si '{proxy}/api/posts/%2e%2e/admin'\n"
            f"  curl -s -H 'Authorization: Bearer {token}' http://127.0.0.1:{args.admin_port}/policy\n\n"
            f"Ctrl+C stops everything.\n",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while backend.poll() is None and gateway.poll() is None:
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in (gateway, backend):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _demo_policy_file(backend_port: int) -> Path:
    """The embedded demo policy, pointed at the backend's port when it is not the default."""
    if backend_port == 8000:
        return DEMO_POLICY
    text = DEMO_POLICY.read_text(encoding="utf-8").replace("127.0.0.1:8000", f"127.0.0.1:{backend_port}")
    out = Path(tempfile.gettempdir()) / f"tsgate-demo-{backend_port}.yaml"
    out.write_text(text, encoding="utf-8")
    return out


def _cmd_keys(args: argparse.Namespace) -> int:
    from authn.keys import AesKeyRing, SigningKeyRing

    if args.keys_command == "generate":
        ring: AesKeyRing | SigningKeyRing = AesKeyRing.generate() if args.refresh else SigningKeyRing.generate(args.alg)
        ring.save(args.out)
        print(f"wrote {args.out}; set TSGATE_{'REFRESH' if args.refresh else 'SIGNING'}_KEYS_FILE={args.out}")
        return 0
    if args.refresh:
        AesKeyRing.load(args.file).rotate().save(args.file)
    else:
        SigningKeyRing.load(args.file).rotate(alg=args.alg).save(args.file)
    print(f"rotated {args.file}; reload the gateways (SIGHUP or POST /policy/reload) to start using it")
    return 0


def _cmd_accounts(args: argparse.Namespace) -> int:
    import asyncio
    import getpass

    from authn.accounts import AccountStore
    from authn.db import Database
    from authn.errors import AccountExistsError
    from authn.passwords import PROFILES, PasswordHasher, PasswordPolicy, PasswordProblem

    policy = load_policy(args.policy).policy
    auth = policy.auth
    if auth is None:
        raise ConfigError(f"{args.policy}: the policy has no auth: section")
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("password: ")
    checked = PasswordPolicy(auth.password.min_length, auth.password.max_length).check(
        password, username=args.username, email=args.email)
    if isinstance(checked, PasswordProblem):
        raise ConfigError(f"password refused ({checked.reason}): {checked.detail}")

    async def create() -> str:
        database = Database(policy.database)
        hasher = PasswordHasher(PROFILES[auth.password.profile])
        try:
            await database.migrate()
            account = await AccountStore(database).create(args.username, args.email, await hasher.hash(checked),
                                                          roles=tuple(args.role or ["user"]))
            return account.id
        finally:
            hasher.close()
            await database.dispose()

    try:
        account_id = asyncio.run(create())
    except AccountExistsError:
        raise ConfigError(f"an account named {args.username!r} or with that email exists") from None
    print(f"created {args.username} ({account_id}) with roles {','.join(args.role or ['user'])}")
    return 0


def _cmd_limits(args: argparse.Namespace) -> int:
    import asyncio

    from policies.features import build_limiter, limit_spec

    overrides: dict[str, Any] = {"state": args.state} if args.state else {}
    policy = with_overrides(load_policy(args.policy), overrides).policy
    named = dict(policy.limit_names())
    if args.limit not in named:
        raise ConfigError(f"--limit: no limit named {args.limit!r} (known: {', '.join(sorted(named)) or 'none'})")
    if policy.state.startswith("memory://"):
        raise ConfigError("state: memory:// counters live inside the gateway process; inspecting them needs a "
                          "shared store (redis://), e.g. --state redis://127.0.0.1:6379/0")
    spec = limit_spec(args.limit, named[args.limit])
    identifier = f"{spec.name}:{args.key}"

    async def run() -> list[str]:
        limiter = build_limiter(policy)
        limiter.timeout = max(limiter.timeout, 2.0)  # an operator can wait longer than a request
        try:
            if args.limits_command == "clear":
                await limiter.clear(spec, identifier)
                return [f"cleared {identifier}"]
            return [f"{identifier}  {rate}: {remaining} left, resets in {reset:.0f}s"
                    for rate, remaining, reset in await limiter.inspect(spec, identifier)]
        finally:
            await limiter.aclose()

    for line in asyncio.run(run()):
        print(line)
    return 0


def _cmd_policy(args: argparse.Namespace) -> int:
    handled = run_policy_tools(args)
    if handled is not None:
        return handled
    if args.policy_command == "schema":
        print(json.dumps(Policy.model_json_schema(), indent=2))
        return 0
    loaded = load_policy(args.file)
    rules = loaded.policy.routes
    print(f"{args.file}: OK ({len(rules)} routes, sha256 {loaded.sha256[:12]})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "keys":
            return _cmd_keys(args)
        if args.command == "accounts":
            return _cmd_accounts(args)
        if args.command == "limits":
            return _cmd_limits(args)
        if args.command == "moderation":
            return run_moderation(args)
        if args.command == "followers":
            return run_followers(args)
        if args.command == "review":
            return run_review(args)
        return _cmd_policy(args)
    except PolicyError as exc:
        print(f"tsgate: invalid policy {exc.source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"tsgate: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"tsgate: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
