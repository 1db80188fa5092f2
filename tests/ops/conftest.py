"""Fault fixtures: services of our own that a test may stop, restart, starve or fill.

Never the shared Redis on 6379 or the shared PostgreSQL on 5432: every test here starts a private
``redis-server`` / PostgreSQL cluster on a free port in a temporary directory, and a tiny tmpfs
for the disk-full case. Each fixture stops and removes what it started, also when a test fails."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Response, free_port, request, stop, wait_port

REDIS_SERVER = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server")
                                                else None)
PG_BIN = next((d for d in ("/usr/lib/postgresql/15/bin", "/usr/local/bin")
               if os.path.exists(os.path.join(d, "pg_ctl"))), None)


def poll(check: Callable[[], bool], seconds: float, what: str, every: float = 0.05) -> None:
    """Wait until ``check()`` is true, failing with ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds}s: {what}")
        time.sleep(every)



# A gateway that holds spam comments for review (the queue is the durable record under test);
# ``{db}`` is the database URL. Every spam post is held (no block): near-duplicates must stay holds.
HOLD_POLICY = """
database: "{db}"
routes:
  - id: comments
    match: {{methods: [POST], path: "/api/debug/echo/comments"}}
    moderation: {{content: [/body], thresholds: {{flag: 5, hold: 10, block: null}}}}
  - id: any
    match: {{path: "/**"}}
"""
SPAM = ("WINNER!! As a valued network customer you have been selected to receive a £900 prize reward! "
        "To claim call 09061701461. Claim code KL341. Valid 12 hours only. Ref {n}")

def assert_problem(response: Response) -> dict[str, object]:
    """A refusal tsgate wrote: RFC 9457 problem+json with a stable reason id and the decision id."""
    assert response.headers.get("content-type", "").startswith("application/problem+json"), (
        response.status, response.headers, response.body[:300])
    problem = json.loads(response.body)
    assert isinstance(problem.get("reason"), str) and problem["reason"], problem
    assert isinstance(problem.get("decision_id"), str) and problem["decision_id"], problem
    assert problem["status"] == response.status, problem
    assert response.headers.get("tsgate-decision") == problem["decision_id"], response.headers
    return dict(problem)


def safe_request(port: int, method: str, path: str, **kw: object) -> Response | str:
    """A request whose transport failure is a value (``"error: ..."``), for load threads."""
    try:
        return request(port, method, path, **kw)  # type: ignore[arg-type]
    except (OSError, http.client.HTTPException) as exc:  # refused, reset, or a response cut short
        return f"error: {type(exc).__name__}: {exc}"


@dataclass
class Load:
    """Client threads sending ``make()`` requests in a loop until stopped; every answer is kept."""

    make: Callable[[int], Response | str]
    threads: int = 4
    answers: list[tuple[float, int, Response | str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for index in range(self.threads):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def _run(self, index: int) -> None:
        while not self._stop.is_set():
            self.answers.append((time.monotonic(), index, self.make(index)))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(15)

    def since(self, moment: float) -> list[Response | str]:
        return [a for t, _, a in list(self.answers) if t >= moment]

    def wait(self, check: Callable[[list[Response | str]], bool], since: float, seconds: float, what: str) -> None:
        """Poll until ``check`` holds for the answers received from ``since`` on."""
        poll(lambda: check(self.since(since)), seconds, what)

    def wait_steady(self, check: Callable[[list[Response | str]], bool], window: float, seconds: float,
                    what: str) -> None:
        """Poll until ``check`` holds for the answers of the last ``window`` seconds (a state
        that has settled, not one lucky answer)."""
        poll(lambda: check(self.since(time.monotonic() - window)), seconds, what)


# -- Redis ------------------------------------------------------------------------------------------
class RedisServer:
    """A private redis-server that tests stop (SIGTERM), freeze (SIGSTOP) and restart on one port."""

    def __init__(self, workdir: Path) -> None:
        if REDIS_SERVER is None:
            pytest.skip("NO redis-server binary: the Redis fault tests are SKIPPED (apt-get install redis-server)")
        self.port = free_port()
        self.dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.resume()
            stop(self.proc)
            self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers (a hung server)."""
        assert self.proc is not None
        self.proc.send_signal(19)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(18)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- PostgreSQL ---------------------------------------------------------------------------------------
class PostgresServer:
    """A private PostgreSQL cluster (initdb as user postgres, trust auth on 127.0.0.1, a free port,
    its unix socket in its own directory) that tests stop and start again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()

    def _pg(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        assert PG_BIN is not None
        return subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(PG_BIN, tool), *args],
                              capture_output=True, text=True, timeout=timeout, check=True)

    def init(self) -> None:
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "-N")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=200")
        self._pg("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w",
                 "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def running(self) -> bool:
        assert PG_BIN is not None
        return subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(PG_BIN, "pg_ctl"), "-D",
                               str(self.data), "status"], capture_output=True, timeout=30).returncode == 0

    def create_database(self) -> str:
        name = f"tsgate_{uuid.uuid4().hex[:12]}"
        self._pg("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"

    def query(self, database_url: str, sql: str) -> list[str]:
        """Rows of ``sql`` as text lines (psql, unaligned, tuples only)."""
        name = database_url.rsplit("/", 1)[1]
        out = self._pg("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", name, "-At",
                       "-c", sql)
        return [line for line in out.stdout.splitlines() if line]


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PostgresServer]:
    if PG_BIN is None or shutil.which("runuser") is None:
        pytest.skip("NO PostgreSQL binaries (pg_ctl/initdb) or runuser: the PostgreSQL fault tests are SKIPPED")
    try:
        import pwd

        postgres = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("NO 'postgres' system user to run initdb as: the PostgreSQL fault tests are SKIPPED")
    root = Path(tempfile.mkdtemp(prefix="tsgate-pg-"))
    os.chown(root, postgres.pw_uid, postgres.pw_gid)
    os.chmod(root, 0o700)
    server = PostgresServer(root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            if server.running():
                server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_up(private_postgres: PostgresServer) -> Iterator[PostgresServer]:
    """The private cluster, running at the start and again at the end of each test."""
    if not private_postgres.running():
        private_postgres.start()
    yield private_postgres
    if not private_postgres.running():
        private_postgres.start()


# -- a tiny file system -------------------------------------------------------------------------------
@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs under tmp_path (root only); unmounted in teardown."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0777", "tmpfs", str(mountpoint)],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        pytest.skip(f"CANNOT MOUNT a tmpfs here ({result.stderr.strip() or result.returncode}): the disk-full "
                    "test is SKIPPED (it needs root or CAP_SYS_ADMIN)")
    try:
        yield mountpoint
    finally:
        for _ in range(50):
            if subprocess.run(["umount", str(mountpoint)], capture_output=True, timeout=30).returncode == 0:
                break
            time.sleep(0.1)  # a process still holding a file there is being stopped
        else:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=30)


def port_refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return False
    except OSError:
        return True
