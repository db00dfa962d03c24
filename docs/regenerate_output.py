"""Regenerate the command output pasted in docs/*.md from a real run of the example
project, so what the docs show stays true.

    .venv/bin/python docs/regenerate_output.py

It makes a fresh SQLite database in a temporary directory, migrates it, starts the
example shop's demo (an order that goes through, one declined and compensated, one
whose payment is retried later, and a refund request waiting for a manager), runs a
worker until nothing is runnable, then runs every command named in a marker

    <!-- output: durable_inspect {declined} -->

and writes what it printed into the ```text block right after the marker (stdout and
stderr, under a `$ python manage.py ...` line). A marker `<!-- output: python: EXPR -->`
shows what `print(EXPR)` gives in `manage.py shell` on the same database, with
`insights` imported (`from django_durable import insights`). In a marker's arguments `{declined}`,
`{completed}`, `{retrying}` and `{refund}` are the demo executions' ids, `{refund8}`
the first 8 characters of the refund request's id.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
MARKER = re.compile(r"^<!-- output: (?P<command>durable_\w+|python:)(?P<args>[^>]*)-->$")
PLACEHOLDERS = ("completed", "declined", "retrying", "refund", "refund8")
PLACEHOLDER = re.compile(r"\{(\w+)\}")

SEED = """
import json
from example_project.shop.workflows import process_order, refund_request
items = [{"sku": "MUG", "qty": 2, "price": "12.50"}, {"sku": "TEA", "qty": 1, "price": "4.99"}]
ids = {
    "completed": process_order.start({"id": "A-1001", "email": "ada@example.com", "items": items}),
    "declined": process_order.start(
        {"id": "A-1002", "email": "bo@example.com", "items": items, "card": "declined"}
    ),
    "retrying": process_order.start(
        {"id": "A-1003", "email": "cy@example.com", "items": items, "flaky_payment": 2}
    ),
    "refund": refund_request.start(
        {"order_id": "A-1001", "amount": "29.99", "reason": "mug arrived broken"}
    ),
}
print(json.dumps({name: str(value) for name, value in ids.items()}))
"""


def main() -> int:
    changed = [path.name for path in sorted(DOCS.glob("*.md")) if has_markers(path)]
    for name in changed:
        with tempfile.TemporaryDirectory() as scratch:
            env, ids = demo(scratch)  # each page starts from the same demo data
            rewrite(DOCS / name, env, ids)
    print("rewrote: " + (", ".join(changed) or "nothing (no markers)"))
    return 0


def has_markers(path: Path) -> bool:
    return any(MARKER.match(line.strip()) for line in path.read_text("utf-8").splitlines())


def demo(scratch: str) -> tuple[dict, dict]:
    """A migrated database with the demo run by a worker until nothing is runnable."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{scratch}/docs.sqlite3",
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "COLUMNS": "100",
    }
    manage(env, "migrate", "-v", "0")
    ids = json.loads(manage(env, "shell", "-v", "0", "-c", SEED).stdout.strip().splitlines()[-1])
    ids["refund8"] = ids["refund"][:8]
    manage(env, "durable_worker", "--burst")
    return env, ids


def manage(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    if check and done.returncode != 0:
        sys.exit(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done


def rewrite(path: Path, env: dict, ids: dict) -> None:
    """Replace the text block after each marker of `path` with the command's output."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, index = [], 0
    while index < len(lines):
        line = lines[index]
        out.append(line)
        index += 1
        matched = MARKER.match(line.strip())
        if not matched:
            continue
        if index >= len(lines) or lines[index].strip() != "```text":
            sys.exit(f"{path.name}: a ```text block must follow {line.strip()!r}")
        end = lines.index("```", index + 1)
        if matched["command"] == "python:":
            shown = run_python(env, fill(matched["args"], ids).strip())
        else:
            shown = run(env, matched["command"], shlex.split(fill(matched["args"], ids)))
        out += ["```text", *shown, "```"]
        index = end + 1
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def fill(args: str, ids: dict) -> str:
    """Put the demo's ids in for `{name}` (other braces, as in JSON, are left alone);
    an unknown name is an error."""
    return PLACEHOLDER.sub(lambda found: ids[found[1]], args)


def run_python(env: dict, expression: str) -> list[str]:
    code = f"from django_durable import insights\nprint({expression})"
    done = manage(env, "shell", "-v", "0", "-c", code, check=False)
    return [f">>> print({expression})", *(done.stdout + done.stderr).rstrip("\n").splitlines()]


def run(env: dict, command: str, args: list[str]) -> list[str]:
    done = manage(env, command, *args, check=False)
    shown = shlex.join(["python", "manage.py", command, *args])
    text = (done.stdout + done.stderr).rstrip("\n")
    tail = [f"(exit code {done.returncode})"] if done.returncode else []
    return [f"$ {shown}", *text.splitlines(), *tail]


if __name__ == "__main__":
    sys.exit(main())
