#!/usr/bin/env python3
"""Developer entry point: `python3 dev.py example` or `python3 dev.py test [pytest args]`.

Standard library only, so it runs on a machine that has nothing but Python 3.11+. It
keeps a virtualenv in `.venv/` next to this file, installs the project into it
(`pip install -e ".[dev]"`) and runs everything with that venv's Python, so the
commands behave the same on every machine and in CI.
"""

from __future__ import annotations  # so Python < 3.10 gets as far as the version check

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent
VENV = REPO / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
STAMP = VENV / ".dev-installed"  # holds the pyproject.toml hash of the last install
ADDRESS = "127.0.0.1:8000"
ADMIN_USER = ADMIN_PASSWORD = "admin"

USAGE = """usage: python3 dev.py example          migrate, start a worker and the admin on {address}
       python3 dev.py test [ARGS...]   run pytest (DATABASE_URL=postgres://... for PostgreSQL)"""

CREATE_ADMIN = f"""
from django.contrib.auth import get_user_model
User = get_user_model()
if not User.objects.filter(username={ADMIN_USER!r}).exists():
    User.objects.create_superuser({ADMIN_USER!r}, "admin@example.com", {ADMIN_PASSWORD!r})
"""

# Run with `manage.py shell -c`: three orders that show a success, retries and a failure.
DEMO_ORDERS = """
import uuid
from example_project.shop.workflows import process_order, refund_request
items = [{"sku": "MUG", "qty": 2, "price": "12.50"}, {"sku": "TEA", "qty": 1, "price": "4.99"}]
demos = [
    ("goes through: stock held per line, charged, confirmed in parallel", {}),
    ("flaky gateway, charged on the 3rd attempt", {"flaky_payment": 2}),
    ("declined card: not retried, stock released (compensated)", {"card": "declined"}),
]
for label, extra in demos:
    order = {"id": uuid.uuid4().hex[:8], "email": "ada@example.com", "items": items, **extra}
    execution_id = process_order.start(order)
    print(f"Started process_order {execution_id}: {label}")
request = {"order_id": order["id"], "amount": "29.99", "reason": "mug arrived broken"}
print(f"Started refund_request {refund_request.start(request)}: answer it in Pending inputs")
"""


def main(argv: list[str]) -> int:
    """Check the Python version, then run the command; Ctrl-C exits quietly."""
    if sys.version_info < (3, 11):  # noqa: UP036 (this script may be run by any python3)
        print("django-durable needs Python 3.11 or newer.", file=sys.stderr)
        return 2
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    try:
        return dispatch(command, args)
    except KeyboardInterrupt:
        return 130


def dispatch(command: str, args: list[str]) -> int:
    if command == "test":
        ensure_venv()
        return run_tests(args)
    if command == "example" and not args:
        ensure_venv()
        return run_example()
    print(USAGE.format(address=ADDRESS), file=sys.stderr)
    return 2


def ensure_venv() -> None:
    """Create .venv and install the project, skipping pip when nothing changed.

    pip takes seconds even when everything is installed, so a stamp file records the
    hash of pyproject.toml it installed; a changed pyproject.toml installs again.
    """
    if not PYTHON.exists():
        print(f"Creating a virtualenv in {VENV} ...", flush=True)
        try:
            venv.create(VENV, with_pip=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            sys.exit(
                f"Could not create {VENV}: {exc}\n"
                "On Debian/Ubuntu install the venv module: apt-get install python3-venv"
            )
    wanted = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    print('Installing the project into .venv (pip install -e ".[dev]") ...', flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if subprocess.run([*pip, "-e", ".[dev]"], cwd=REPO).returncode != 0:
        sys.exit("pip install failed; see the output above.")
    STAMP.write_text(wanted + "\n")


def manage(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run `manage.py` with the venv's Python from the repository root."""
    return subprocess.run([str(PYTHON), "manage.py", *args], cwd=REPO, **kwargs)


def manage_or_exit(*args: str) -> None:
    """Like `manage`, but a failure ends the script: nothing after it can work."""
    if manage(*args).returncode != 0:
        sys.exit(f"manage.py {args[0]} failed; see the output above.")


def run_tests(pytest_args: list[str]) -> int:
    """pytest in the venv; DATABASE_URL and other settings come from the environment."""
    return subprocess.run([str(PYTHON), "-m", "pytest", *pytest_args], cwd=REPO).returncode


def run_example() -> int:
    """Migrate, make an admin user, start a worker and demo orders, serve the admin.

    The worker gets its own session so the terminal's Ctrl-C reaches only runserver
    and this script; we then stop the worker with one SIGTERM, which lets it finish
    its running steps and hand back the rest instead of exiting abruptly.
    """
    manage_or_exit("migrate", "--noinput")
    manage_or_exit("shell", "-v", "0", "-c", CREATE_ADMIN)
    # Turn SIGTERM into SystemExit so the `finally` below also runs then.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    worker = start_worker()
    try:
        manage_or_exit("shell", "-v", "0", "-c", DEMO_ORDERS)
        print(
            f"\n  Admin:    http://{ADDRESS}/admin/\n"
            f"  Login:    {ADMIN_USER} / {ADMIN_PASSWORD}\n"
            "  Stop:     Ctrl-C (stops the server and the worker)\n",
            flush=True,
        )
        server = subprocess.Popen([str(PYTHON), "manage.py", "runserver", ADDRESS], cwd=REPO)
        try:
            return server.wait()
        except KeyboardInterrupt:
            stop(server, signal.SIGINT)
            return 0
        finally:
            stop(server, signal.SIGTERM)
    finally:
        if worker is not None:
            stop(worker, signal.SIGTERM, grace=35)


def start_worker() -> subprocess.Popen | None:
    """Start `manage.py durable_worker`, or say why not and carry on without it."""
    probe = manage("help", "durable_worker", capture_output=True, text=True)
    if probe.returncode != 0:
        print(
            "Notice: this checkout has no `durable_worker` command yet; executions will "
            "stay pending.",
            flush=True,
        )
        return None
    print("Starting a worker: manage.py durable_worker", flush=True)
    return subprocess.Popen(
        [str(PYTHON), "manage.py", "durable_worker"], cwd=REPO, start_new_session=True
    )


def stop(process: subprocess.Popen, signum: int, grace: float = 10) -> int:
    """Signal a child if it still runs and wait for it, killing it after `grace` seconds."""
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
