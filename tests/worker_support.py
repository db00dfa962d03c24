"""Running real `manage.py durable_worker` processes against the test database.

`WorkerPool` starts workers as subprocesses (cwd = the repository, settings
`tests.settings`, DATABASE_URL pointing at the database pytest-django created), sends
them signals, and kills whatever is left when the test ends. Each worker's stdout and
stderr (where it logs) go to a file, and `report()` gathers them for failure messages.
Tests using it must be `django_db(transaction=True)`, so what they write is committed
and visible to the workers.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

REPO = Path(__file__).resolve().parent.parent
ENGINE = settings.DATABASES["default"]["ENGINE"]
IS_POSTGRES = "postgresql" in ENGINE
IS_SQLITE = "sqlite3" in ENGINE

needs_postgres = pytest.mark.skipif(not IS_POSTGRES, reason="several workers need PostgreSQL")

WAIT_SECONDS = 60.0
START_SECONDS = 30.0


def database_url() -> str:
    """A DATABASE_URL for the database this test process is using (the test database)."""
    db = connection.settings_dict
    if IS_SQLITE:
        name = str(db["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            raise RuntimeError("worker processes need a file-based SQLite test database")
        return f"sqlite:///{Path(name).resolve()}"
    if IS_POSTGRES:
        user = quote(db.get("USER") or "", safe="")
        password = quote(db.get("PASSWORD") or "", safe="")
        credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = db.get("HOST") or "127.0.0.1"
        port = f":{db['PORT']}" if db.get("PORT") else ""
        return f"postgres://{credentials}{host}{port}/{quote(db['NAME'], safe='')}"
    raise RuntimeError(f"worker tests do not know how to reach a {ENGINE} database")


def manage(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`manage.py <args>` in a subprocess against this test's database, for exit codes
    and what a person sees on stdout and stderr (the test must commit what it reads:
    `django_db(transaction=True)`)."""
    env = {**os.environ, "DATABASE_URL": database_url(), "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args, "--settings", "tests.settings"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(
    condition: Callable[[], object],
    what: str,
    *,
    timeout: float = WAIT_SECONDS,
    interval: float = 0.1,
    report: Callable[[], str] | None = None,
):
    """Poll `condition` until it returns something truthy (returned), else fail clearly."""
    give_up_at = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > give_up_at:
            details = report() if report is not None else ""
            pytest.fail(f"Timed out after {timeout:.0f}s waiting for {what}.\n{details}")
        time.sleep(interval)


class WorkerProcess:
    """One `durable_worker` subprocess and its log file."""

    def __init__(self, name: str, process: subprocess.Popen, log_path: Path, args: list[str]):
        self.name = name
        self.process = process
        self.log_path = log_path
        self.args = args

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send(self, signum: int) -> None:
        if self.alive:
            self.process.send_signal(signum)

    def terminate(self) -> None:
        """SIGTERM: stop claiming, finish running steps, release the rest, exit."""
        self.send(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: die at once, holding whatever was claimed."""
        self.send(signal.SIGKILL)
        self.process.wait(10)

    def wait(self, timeout: float = WAIT_SECONDS) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"Worker {self.name} did not exit within {timeout:.0f}s.\n{self.describe()}"
            )

    def describe(self) -> str:
        state = "running" if self.alive else f"exited with {self.returncode}"
        return (
            f"--- worker {self.name} (pid {self.pid}, {state}): {' '.join(self.args)}\n"
            f"{self.log() or '(no output)'}"
        )


class WorkerPool:
    """The workers of one test; `close()` kills those still running."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.workers: list[WorkerProcess] = []

    def start(
        self,
        *,
        name: str | None = None,
        queues: Sequence[str] = (),
        concurrency: int | None = None,
        burst: bool = False,
        grace: float | None = None,
        lease_seconds: float | None = None,
        heartbeat_seconds: float | None = None,
        poll_interval: float | None = None,
        wait_until_started: bool = True,
    ) -> WorkerProcess:
        name = name or f"test-worker-{len(self.workers) + 1}-{uuid.uuid4().hex[:6]}"
        args = [sys.executable, "manage.py", "durable_worker", "--settings", "tests.settings"]
        args += ["--name", name]
        for queue in queues:
            args += ["--queue", queue]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        if burst:
            args.append("--burst")
        if grace is not None:
            args += ["--grace", str(grace)]
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": database_url(),
            "PYTHONUNBUFFERED": "1",
        }
        for variable, value in (
            ("DURABLE_LEASE_SECONDS", lease_seconds),
            ("DURABLE_HEARTBEAT_SECONDS", heartbeat_seconds),
            ("DURABLE_POLL_INTERVAL", poll_interval),
        ):
            env.pop(variable, None)
            if value is not None:
                env[variable] = str(value)
        log_path = self.directory / f"{name}.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                args, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
        worker = WorkerProcess(name, process, log_path, args)
        self.workers.append(worker)
        if wait_until_started and not burst:
            self.wait_started(worker)
        return worker

    def wait_started(self, worker: WorkerProcess) -> None:
        """Wait for the worker's "started" log line (it has registered and is claiming)."""
        wait_for(
            lambda: f"Worker {worker.name} started" in worker.log() or not worker.alive,
            f"worker {worker.name} to start",
            timeout=START_SECONDS,
            report=self.report,
        )
        if not worker.alive:
            pytest.fail(f"Worker {worker.name} exited while starting.\n{self.report()}")

    def report(self) -> str:
        return "\n".join(worker.describe() for worker in self.workers) or "(no workers started)"

    def close(self) -> None:
        for worker in self.workers:
            if worker.alive:
                worker.process.kill()
        for worker in self.workers:
            try:
                worker.process.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a stuck process
                pass


def terminate_other_connections() -> int:
    """pg_terminate_backend every other client connection to the test database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        return len(cursor.fetchall())
