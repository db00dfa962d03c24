"""What a step logs and prints, kept on its attempt row (`StepExecution.logs`).

While a step runs, `logging` records and `print` output made by that thread go to the
step's `Capture` as well as where they always went. Capturing follows the running
context (a `ContextVar`), so steps running at once on other threads, parallel branches
and foreach items included, each keep only their own lines, and code outside a step is
untouched. The entries are written by the statement that closes the attempt, never by a
round trip of their own.

Records below the root logger's level are never created by `logging`, so capturing
lowers the root logger to `DURABLE["LOG_CAPTURE_LEVEL"]` (INFO by default) once, and
pins the root's existing handlers at the level the root had, so what the project's
console shows does not change.
"""

import io
import logging
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime

from . import clock, conf

MAX_ENTRIES = 1000
MAX_MESSAGE = 10_000
TRUNCATED = " …[truncated]"

_current: ContextVar["Capture | None"] = ContextVar("durable_log_capture", default=None)
_install_lock = threading.Lock()
_installed = False


class Capture:
    """The entries of one attempt, capped at MAX_ENTRIES; the last kept entry says how
    many more were left out."""

    def __init__(self) -> None:
        self.entries: list[dict] = []
        self.dropped = 0
        self._partial = {"STDOUT": "", "STDERR": ""}

    def add(self, level: str, message: str, at: datetime | None = None) -> None:
        if len(self.entries) >= MAX_ENTRIES - 1:
            self.dropped += 1
            return
        message = message.replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - len(TRUNCATED)] + TRUNCATED
        self.entries.append(
            {"timestamp": (at or clock.now()).isoformat(), "level": level, "message": message}
        )

    def write(self, stream: str, text: str) -> None:
        """Printed text becomes one entry per line; a line still open waits for its end."""
        lines = (self._partial[stream] + text).split("\n")
        self._partial[stream] = lines.pop()
        for line in lines:
            self.add(stream, line)

    def close(self) -> list[dict]:
        for stream, rest in self._partial.items():
            if rest:
                self.add(stream, rest)
        self._partial = {"STDOUT": "", "STDERR": ""}
        if self.dropped:
            note = f"{self.dropped} more log entries were not kept (at most {MAX_ENTRIES})."
            self.entries.append(
                {"timestamp": clock.now().isoformat(), "level": "WARNING", "message": note}
            )
            self.dropped = 0
        return self.entries


@contextmanager
def captured() -> Iterator[Capture]:
    """Capture what this context logs and prints until the block ends."""
    _install()
    capture = Capture()
    token = _current.set(capture)
    try:
        yield capture
    finally:
        _current.reset(token)
        capture.close()


class _Handler(logging.Handler):
    """On the root logger: hands a record to the capture of the context logging it."""

    def emit(self, record: logging.LogRecord) -> None:
        capture = _current.get()
        if capture is None:
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not fail the step
            message = f"{record.msg!r} {record.args!r}"
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        at = datetime.fromtimestamp(record.created, tz=clock.now().tzinfo)
        capture.add(record.levelname, message, at)


class _Stream(io.TextIOBase):
    """Stands in for sys.stdout or sys.stderr: text printed inside a step is captured,
    and everything still reaches the stream it replaced."""

    def __init__(self, name: str, wrapped) -> None:
        self.name, self.wrapped = name, wrapped

    def write(self, text: str) -> int:
        capture = _current.get()
        if capture is not None:
            capture.write(self.name, text)
        return self.wrapped.write(text)

    def flush(self) -> None:
        self.wrapped.flush()

    def __getattr__(self, attribute: str):
        return getattr(self.wrapped, attribute)


def _install() -> None:
    global _installed
    if _installed and isinstance(sys.stdout, _Stream) and isinstance(sys.stderr, _Stream):
        return
    with _install_lock:
        if not isinstance(sys.stdout, _Stream):
            sys.stdout = _Stream("STDOUT", sys.stdout)
        if not isinstance(sys.stderr, _Stream):
            sys.stderr = _Stream("STDERR", sys.stderr)
        if not _installed:
            _hook_logging()
            _installed = True


def _hook_logging() -> None:
    root = logging.getLogger()
    level = logging.getLevelName(str(conf.get("LOG_CAPTURE_LEVEL")).upper())
    if not isinstance(level, int):
        level = logging.INFO
    if root.getEffectiveLevel() > level:
        for handler in root.handlers:
            if handler.level == logging.NOTSET:
                handler.setLevel(root.level)
        root.setLevel(level)
    root.addHandler(_Handler())
