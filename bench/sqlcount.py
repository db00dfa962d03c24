"""Counting the SQL a Django connection sends, and the transactions it commits.

`SQLCounter` is an execute wrapper (see Django's `connection.execute_wrapper`) that also
wraps the connection's `commit`/`rollback`, which `transaction.atomic` calls when its
outermost block exits. A statement run outside an atomic block is a transaction of its
own (autocommit). SQLite's `BEGIN`, which Django sends itself at the start of an atomic
block, is counted apart, not as a statement, so SQLite and PostgreSQL compare.
"""

import atexit
import json
import os
import re
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

# A WITH statement writes if any of its parts does (`x AS (UPDATE ...)`), whatever its
# last part is (the claim and the ending end with a SELECT).
_WRITE = re.compile(
    r"^\s*(INSERT|UPDATE|DELETE)\b|^\s*WITH\b.*\b(UPDATE|INSERT\s+INTO|DELETE\s+FROM)\b",
    re.I | re.S,
)
_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"?(\w+)"?', re.I)


def is_write(sql: str) -> bool:
    return bool(_WRITE.search(sql))


def kind(sql: str) -> str:
    """A short name for a statement: verb and table, e.g. `UPDATE durable_step`."""
    text = " ".join(sql.split())
    verb = text.split(" ", 1)[0].upper()
    if "pg_notify" in text:
        return "SELECT pg_notify"
    if verb == "WITH":
        match = re.search(r"\)\s*(UPDATE|INSERT INTO|DELETE FROM)\s+(\w+)", text, re.I)
        if match:
            return f"WITH .. {match.group(1).split()[0].upper()} {match.group(2)}"
    table = _TABLE.search(text)
    name = f"{verb} {table.group(1)}" if table else verb
    if verb == "SELECT" and re.search(r"\bMIN\(", text, re.I):
        name += " (MIN)"
    if verb == "SELECT" and re.search(r"\bFOR UPDATE\b", text, re.I):
        name += " FOR UPDATE"
    return name


@dataclass
class Tally:
    statements: Counter = field(default_factory=Counter)  # sql -> times run
    autocommit: Counter = field(default_factory=Counter)  # sql -> times run outside atomic
    commits: int = 0  # atomic blocks committed
    writing_commits: int = 0  # ... of which wrote something
    rollbacks: int = 0
    begins: int = 0  # SQLite's BEGIN (not counted as a statement)
    connections: int = 0  # database connections opened (count_process only)

    @property
    def statement_count(self) -> int:
        return sum(self.statements.values())

    @property
    def transactions(self) -> int:
        """Every transaction the server committed, read-only ones included."""
        return self.commits + sum(self.autocommit.values())

    @property
    def writing_transactions(self) -> int:
        """Transactions that wrote (and so must reach the disk on commit)."""
        autocommit_writes = sum(n for sql, n in self.autocommit.items() if is_write(sql))
        return self.writing_commits + autocommit_writes

    def by_kind(self) -> Counter:
        kinds = Counter()
        for sql, n in self.statements.items():
            kinds[kind(sql)] += n
        return kinds

    def to_json(self) -> dict:
        return {
            "statements": dict(self.statements),
            "autocommit": dict(self.autocommit),
            "commits": self.commits,
            "writing_commits": self.writing_commits,
            "rollbacks": self.rollbacks,
            "begins": self.begins,
            "connections": self.connections,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Tally":
        return cls(
            statements=Counter(data["statements"]),
            autocommit=Counter(data["autocommit"]),
            commits=data["commits"],
            writing_commits=data["writing_commits"],
            rollbacks=data["rollbacks"],
            begins=data["begins"],
            connections=data["connections"],
        )

    def __add__(self, other: "Tally") -> "Tally":
        return Tally(
            self.statements + other.statements,
            self.autocommit + other.autocommit,
            self.commits + other.commits,
            self.writing_commits + other.writing_commits,
            self.rollbacks + other.rollbacks,
            self.begins + other.begins,
            self.connections + other.connections,
        )


class SQLCounter:
    def __init__(self) -> None:
        self.tally = Tally()
        self._lock = threading.Lock()
        self._writes: dict[str, bool] = {}

    def __call__(self, execute, sql, params, many, context):
        connection = context["connection"]
        if sql.strip().upper().startswith("BEGIN"):
            with self._lock:
                self.tally.begins += 1
            return execute(sql, params, many, context)
        writes = self._writes.get(sql)
        if writes is None:
            writes = self._writes[sql] = is_write(sql)
        with self._lock:
            self.tally.statements[sql] += 1
            if not connection.in_atomic_block:
                self.tally.autocommit[sql] += 1
        if writes and connection.in_atomic_block:
            connection._bench_wrote = True
        return execute(sql, params, many, context)

    def watch(self, connection) -> None:
        """Count `connection`'s statements, commits and rollbacks from now on."""
        if getattr(connection, "_bench_counter", None) is self:
            return
        connection._bench_counter = self
        connection._bench_wrote = False
        connection.execute_wrappers.append(self)
        commit, rollback = connection.commit, connection.rollback

        def counted_commit():
            with self._lock:
                self.tally.commits += 1
                self.tally.writing_commits += bool(connection._bench_wrote)
            connection._bench_wrote = False
            return commit()

        def counted_rollback():
            with self._lock:
                self.tally.rollbacks += 1
            connection._bench_wrote = False
            return rollback()

        connection.commit, connection.rollback = counted_commit, counted_rollback

    def unwatch(self, connection) -> None:
        connection.execute_wrappers.remove(self)
        del connection.commit, connection.rollback  # back to the class's methods
        connection._bench_counter = None

    @contextmanager
    def counting(self, connection):
        self.watch(connection)
        try:
            yield self
        finally:
            self.unwatch(connection)


def count_process(path_template: str) -> None:
    """Count every connection this process opens; write the tally to a file at exit.

    `path_template` may hold `{pid}`. Used in the worker processes the bench spawns.
    """
    from django.db.backends.signals import connection_created

    counter = SQLCounter()

    def on_connection_created(sender, connection, **kwargs):
        with counter._lock:
            counter.tally.connections += 1
        counter.watch(connection)

    def dump():
        path = path_template.format(pid=os.getpid())
        with open(path, "w") as out:
            json.dump(counter.tally.to_json(), out)

    connection_created.connect(on_connection_created, weak=False)
    atexit.register(dump)
