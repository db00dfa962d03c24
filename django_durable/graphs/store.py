"""A graph execution's values as rows (`GraphValue`), and what they call for next.

Every read here happens inside the transaction that writes after it, under the
execution's row lock (taken by `set_value` and by the worker recording a compute), so
what is planned is planned on the values as they are.
"""

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection

from .. import codec
from ..models import GraphValue
from .definition import Graph, NodeValue


@dataclass
class Values:
    """The rows of one execution by node, and what `Graph` conditions read of them."""

    rows: dict[str, GraphValue] = field(default_factory=dict)

    def view(self) -> dict[str, NodeValue]:
        """Each node as conditions and users see it: unset ones at revision 0."""
        return {name: node_value(row) for name, row in self.rows.items()}

    def revisions(self, names) -> dict[str, int]:
        """The revisions a compute reads its upstream at (unset ones too: unsetting a
        node is a change)."""
        return {name: self.rows[name].revision if name in self.rows else 0 for name in names}


def node_value(row: GraphValue | None) -> NodeValue:
    if row is None or not row.is_set:
        return NodeValue()
    return NodeValue(row.value, row.revision, row.set_at)  # the field decodes typed values


def row(execution_id: uuid.UUID, name: str) -> GraphValue | None:
    return GraphValue.objects.filter(execution_id=execution_id, node=name).first()


def load(execution_id: uuid.UUID) -> Values:
    return Values({row.node: row for row in GraphValue.objects.filter(execution_id=execution_id)})


def write(execution_id: uuid.UUID, values: Values, name: str, value: Any, now: datetime, **extra):
    """Set `name` to `value` (encoded), a new revision only if it changed; True if it did."""
    stored = _spelled(value, name)
    row = values.rows.get(name)
    if row is not None and row.is_set and _spelled(row.value, name) == stored:
        if extra:
            GraphValue.objects.filter(id=row.id).update(**extra)
            _apply(row, extra)
        return False
    changes = {"value": value, "is_set": True, "set_at": now, **extra}
    return _change(execution_id, values, name, changes)


def _spelled(value: Any, name: str) -> str:
    """The value as stored, spelled exactly (`True` is not `1`): what "the same value"
    means. ContextNotSerializable if it cannot be stored."""
    return json.dumps(codec.encode(value, name), sort_keys=True)


def clear(execution_id: uuid.UUID, values: Values, name: str, now: datetime) -> bool:
    """Unset `name` (a new revision, so what read it is stale), and drop a schedule's
    next time; True if it was set."""
    row = values.rows.get(name)
    if row is not None and row.due_at is not None:
        GraphValue.objects.filter(id=row.id).update(due_at=None, computed_from=None)
        _apply(row, {"due_at": None, "computed_from": None})
    if row is None or not row.is_set:
        return False
    changes = {"value": None, "is_set": False, "set_at": now, "computed_from": None}
    return _change(execution_id, values, name, changes)


def mutate(execution_id: uuid.UUID, values: Values, name: str, value: Any, now: datetime):
    """Change a node's value in place (a `mutate` node's target): its revision stays, so
    what was computed from it is not computed again (clearing personal data must not
    recompute what was derived from it)."""
    row = values.rows.get(name)
    if row is None or not row.is_set:
        write(execution_id, values, name, value, now)
        return
    _spelled(value, name)  # storable, or ContextNotSerializable
    announce(execution_id)
    changes = {"value": value, "set_at": now}
    GraphValue.objects.filter(id=row.id).update(**changes)
    _apply(row, changes)


def note(execution_id: uuid.UUID, values: Values, name: str, **changes: Any) -> None:
    """Record facts about a node that do not change its value (what it was computed
    from, its next time, its last error)."""
    row = values.rows.get(name)
    if row is None:
        row = GraphValue.objects.create(execution_id=execution_id, node=name)
        values.rows[name] = row
    GraphValue.objects.filter(id=row.id).update(**changes)
    _apply(row, changes)


def _change(execution_id: uuid.UUID, values: Values, name: str, changes: dict) -> bool:
    announce(execution_id)
    row = values.rows.get(name)
    if row is None:
        row = GraphValue.objects.create(execution_id=execution_id, node=name, revision=1, **changes)
        values.rows[name] = row
        return True
    changes["revision"] = row.revision + 1
    GraphValue.objects.filter(id=row.id).update(**changes)
    _apply(row, changes)
    return True


CHANNEL = "durable_value"


def announce(execution_id: uuid.UUID) -> None:
    """Wake `get_value(wait=)` callers of this execution (PostgreSQL: a NOTIFY the
    commit delivers; elsewhere they poll)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(execution_id)])


def _apply(row: GraphValue, changes: dict) -> None:
    for attribute, value in changes.items():
        setattr(row, attribute, value)


SCHEDULES = ("schedule_once", "schedule_recurring")


@dataclass
class Plan:
    """What the values call for: computed nodes to unset (their condition stopped
    holding), the first node to run now, in dependency order, and otherwise the
    schedule node due first (`wake`, `wake_at`)."""

    unset: list[str]
    next: str | None
    wake: str | None = None
    wake_at: datetime | None = None


def plan(graph: Graph, values: Values, now: datetime) -> Plan:
    """Walk the computed nodes upstream first. One whose condition does not hold loses
    its value (and so may its downstream, further on). One whose condition holds runs
    if it never ran on these upstream revisions, and a schedule node also when its time
    came."""
    view = values.view()
    result = Plan([], None)
    for name in graph.computed():
        node = graph.node(name)
        row = values.rows.get(name)
        if not _holds(node, view):
            if row is not None and (row.is_set or row.due_at is not None):
                result.unset.append(name)
                view[name] = NodeValue()
            continue
        if result.next is not None:
            continue
        if row is None or row.computed_from != values.revisions(node.upstream):
            result.next = name
        elif node.kind in SCHEDULES and row.due_at is not None:
            if row.due_at <= now:
                result.next = name
            elif result.wake_at is None or row.due_at < result.wake_at:
                result.wake, result.wake_at = name, row.due_at
    return result


def _holds(node, view: dict[str, NodeValue]) -> bool:
    """A condition that raises does not hold (it is tried again at the next change)."""
    try:
        return bool(node.condition.holds(view))
    except Exception:
        return False
