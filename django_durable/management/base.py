"""What every `durable_*` command shares: exit codes, one-line errors, execution ids
given as a unique prefix, JSON-or-text data, durations, tables that fit the terminal,
JSON output and progress lines. Commands stay thin: the library does the work.

Exit codes scripts can rely on:

- 0: done.
- 1: the command ran and reports a failure: `durable_run --wait` on a workflow that
  failed or was cancelled, `durable_doctor` finding problems it did not fix,
  `durable_queue drain` timing out, `durable_status` when the system is unhealthy.
- 2: bad input, nothing done: an unknown or ambiguous id, invalid JSON, an unknown
  workflow, a bad duration, an action the execution's state refuses (argparse's own
  usage errors exit 2 too).
"""

import json
import re
import shutil
import sys
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from ..errors import DurableError
from ..models import WorkflowExecution

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
ID_PREFIX_MIN = 4
MAX_CANDIDATES = 10
HEX = frozenset("0123456789abcdef")
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class Failed(CommandError):
    """The command ran and what it reports is a failure (exit 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, returncode=EXIT_FAILED)


def usage_error(message: str) -> CommandError:
    return CommandError(message, returncode=EXIT_USAGE)


class DurableCommand(BaseCommand):
    """A command whose library errors end it with one line and exit code 2, never a
    traceback (`--traceback` still shows one)."""

    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute(*args, **options)
        except DurableError as exc:
            if options.get("traceback"):
                raise
            raise usage_error(str(exc)) from exc

    # -- output ------------------------------------------------------------------------

    def write_json(self, data: Any) -> None:
        self.stdout.write(to_json(data))

    def write_table(self, rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
        self.stdout.write(table(rows, headers))


def add_format_arguments(parser, *, default: str = "table") -> None:
    """`--format table|json`, and `--json` for `--format json`."""
    parser.add_argument("--format", choices=["table", "json"], default=default)
    parser.add_argument("--json", action="store_const", const="json", dest="format")


def to_json(data: Any) -> str:
    """JSON for scripts: ids, times and decimals as strings."""
    return json.dumps(data, indent=2, default=_plain, ensure_ascii=False)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, timedelta)) or hasattr(value, "as_tuple"):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# -- input -----------------------------------------------------------------------------


def resolve_execution(text: str, queryset=None) -> WorkflowExecution:
    """The execution named by a full id or a unique prefix of one (at least 4 hex
    characters, dashes ignored). An ambiguous prefix is refused with its candidates."""
    rows = WorkflowExecution.objects.all() if queryset is None else queryset
    prefix = str(text).strip().replace("-", "").lower()
    if len(prefix) < ID_PREFIX_MIN or not set(prefix) <= HEX or len(prefix) > 32:
        raise usage_error(
            f"{text!r} is not an execution id (give the id or at least its first "
            f"{ID_PREFIX_MIN} hex characters)."
        )
    low, high = uuid.UUID(prefix.ljust(32, "0")), uuid.UUID(prefix.ljust(32, "f"))
    found = list(rows.filter(id__gte=low, id__lte=high).order_by("id")[: MAX_CANDIDATES + 1])
    if not found:
        raise usage_error(f"No execution id starts with {text!r}.")
    if len(found) > 1:
        listed = "\n".join(
            f"  {execution.id}  {execution.workflow_name}  {execution.status}"
            for execution in found[:MAX_CANDIDATES]
        )
        more = " (and more)" if len(found) > MAX_CANDIDATES else ""
        raise usage_error(
            f"{text!r} is ambiguous: it starts {len(found[:MAX_CANDIDATES])} execution "
            f"ids{more}. Give more characters:\n{listed}"
        )
    return found[0]


def parse_data(text: str | None) -> Any:
    """A command-line value: JSON when it looks like JSON (an object, array, string,
    number, true/false/null), otherwise the text itself."""
    if text is None:
        return None
    stripped = text.strip()
    if not _looks_like_json(stripped):
        return text
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise usage_error(
            f"Invalid JSON ({exc.msg} at character {exc.pos}): {text!r:.80}"
        ) from None


def _looks_like_json(text: str) -> bool:
    if not text:
        return False
    if text in ("true", "false", "null"):
        return True
    return text[0] in '{["-' or text[0].isdigit()


def parse_json(text: str, what: str) -> Any:
    """Strict JSON (for options such as `--input`)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise usage_error(f"{what} is not valid JSON ({exc.msg} at character {exc.pos}).") from None


def read_json_file(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise usage_error(f"Cannot read {path}: {exc.strerror or exc}.") from None
    return parse_json(text, path)


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `15m`, `45s`, `2w` (a number and a unit)."""
    matched = DURATION.match(str(text))
    if not matched:
        raise usage_error(
            f"{text!r} is not a duration: use a number and a unit, e.g. 30d, 12h, 15m, 45s, 2w."
        )
    number, unit = matched.groups()
    return timedelta(**{UNITS[unit]: float(number)})


def answer_from(data: str | None, json_file: str | None, *, required: bool):
    """The value given on the command line (parse_data) or in a JSON file."""
    if data is not None and json_file is not None:
        raise usage_error("Give the value on the command line or with --json-file, not both.")
    if json_file is not None:
        return read_json_file(json_file)
    if data is None and required:
        raise usage_error("Give the value (DATA) or --json-file PATH.")
    return parse_data(data)


# -- tables and progress -----------------------------------------------------------------


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], width: int | None = None) -> str:
    """Rows as aligned columns that fit the terminal: the widest columns are cut (with
    "…") until the line fits."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [
        max([len(header), *(len(row[index]) for row in cells)])
        for index, header in enumerate(headers)
    ]
    while sum(widths) + 2 * (len(widths) - 1) > width and max(widths) > 8:
        widths[widths.index(max(widths))] -= 1
    lines = [_line(headers, widths), _line(["-" * w for w in widths], widths)]
    lines += [_line(row, widths) for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return " ".join(str(value).split())


def _line(values: Sequence[str], widths: Sequence[int]) -> str:
    fitted = [
        value if len(value) <= width else value[: width - 1] + "…"
        for value, width in zip(values, widths, strict=True)
    ]
    return "  ".join(
        value.ljust(width) for value, width in zip(fitted, widths, strict=True)
    ).rstrip()


def short_span(delta: timedelta | None) -> str | None:
    """`850ms`, `12.3s`, `4m 05s`, `3h 12m`, `2d 4h`."""
    if delta is None:
        return None
    seconds = max(delta.total_seconds(), 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


class Progress:
    """Progress of a long command on stderr: a bar redrawn in place on a terminal,
    plain lines (at most one per `every` items) otherwise, so logs stay readable."""

    def __init__(self, total: int | None, label: str, stream=None, every: int = 1000) -> None:
        self.total, self.label, self.done, self.every = total, label, 0, every
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_line = 0

    def advance(self, count: int) -> None:
        self.done += count
        if self.tty:
            self._write("\r" + self._text())
        elif self.done - self._last_line >= self.every or self.done == self.total:
            self._last_line = self.done
            self._write(self._text() + "\n")

    def finish(self) -> None:
        if self.tty:
            self._write("\r" + self._text() + "\n")
        elif self.done != self._last_line:
            self._write(self._text() + "\n")

    def _write(self, text: str) -> None:
        """As is: a command's OutputWrapper would add a line ending (a bar redraws its
        line with "\\r") and colour stderr as an error."""
        if isinstance(self.stream, OutputWrapper):
            self.stream.write(text, style_func=str, ending="")
        else:
            self.stream.write(text)
        self.stream.flush()

    def _text(self) -> str:
        if not self.total:
            return f"{self.label}: {self.done}"
        share = self.done / self.total
        bar = "#" * int(share * 30)
        return f"{self.label}: [{bar:<30}] {self.done}/{self.total} ({share:.0%})"
