"""Insights: how the whole system is doing, how a workflow's executions flow through its
steps, why one execution is not finished, and a workflow's picture as Mermaid text.

- `status()`: health (`health.check()`), per-workflow counts of executions and of step
  attempts by status with their first and last activity, queues with their workers.
- `flow_analytics(workflow, since=None)`: a funnel. How many executions, how long the
  completed ones took (average, median), and per step how many executions reached it,
  how long after their start, and how many stopped there.
- `introspect(execution)`: plain text answering "why is this not finished?"; `describe`
  is the same facts as a JSON-able dict (`durable_inspect --json`).
- `mermaid(workflow_or_execution)`: `diagram.to_mermaid` of the one diagram model.
- `to_text(report)`: a `status()` or `flow_analytics()` report for a person.

The reports are plain JSON-able dicts (times as ISO 8601 strings, durations in
seconds). Every count is an aggregate computed by the database (GROUP BY); no report
loads one row per execution or per attempt into Python.
"""

import re
import uuid
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import DatabaseError, connections, router, transaction
from django.db.models import Count, Max, Min, Q

from . import clock, conf, diagram, forks, health, models, registry
from .errors import UnknownWorkflow
from .models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    ExecutionKind,
    ExecutionStatus,
    InputStatus,
    PendingInput,
    StepExecution,
    StepStatus,
    Wait,
    WaitStatus,
    Worker,
    WorkflowExecution,
)
from .reports import (
    RULE,
    SUB_RULE,
    analysis_opening,
    format_duration,
    format_time,
    funnel_line,
)

WORKER_CAP = health.WORKER_CAP  # worker rows listed at most
MEMBERS_SHOWN = 10  # open branches or items described, per block
STEPS_SHOWN = 20  # completed steps listed by `introspect` (the latest ones)
MEMBER_DEPTH = 3  # levels of nested blocks whose open members are listed
# The marks `to_text` puts before a status's count.
MARKS = {
    "completed": "✓",
    "failed": "✗",
    "compensation_failed": "✗",
    "cancelled": "⊘",
    "compensated": "↺",
    "compensating": "↺",
    "running": "▶",
    "waiting": "⏸",
    "resumed": "↻",
    "pending": "◯",
    "skipped": "·",
}
_EXECUTION_ORDER = list(ExecutionStatus.values)
_STEP_ORDER = list(StepStatus.values)


# -- status ----------------------------------------------------------------------------


def status(now: datetime | None = None, *, using: str | None = None) -> dict[str, Any]:
    """How the system is doing: `status` ("healthy", "degraded" or "unhealthy", from
    `health.check()`), `database_connected`, `health` (the health report with its
    checks), `queues` (each with its paused state, live workers and active executions
    by status), `workers`, and `workflows` (per workflow name: executions by status,
    step attempts by status, first and last activity). Parallel branches and foreach
    items are not counted as executions (their attempts are counted as steps)."""
    now = clock.now() if now is None else now
    alias = using or router.db_for_read(WorkflowExecution)
    checked = health.check(now, using=alias)
    connected = next(c["ok"] for c in checked["checks"] if c["name"] == "database")
    report: dict[str, Any] = {
        "status": checked["status"],
        "checked_at": checked["checked_at"],
        "database": alias,
        "database_connected": connected,
        "health": checked,
        "queues": [],
        "workers": [],
        "workflows": [],
    }
    if connected:
        workers = _workers(alias, now)
        report["workers"] = workers
        report["queues"] = _queues(alias, workers)
        report["workflows"] = _workflows(alias)
    return report


def _workers(alias: str, now: datetime) -> list[dict[str, Any]]:
    cutoff = now - health.live_window()
    rows = Worker.objects.using(alias).order_by("name")[:WORKER_CAP]
    return [
        {
            "name": worker.name,
            "host": worker.host,
            "pid": worker.pid,
            "queues": list(worker.queues or []),
            "concurrency": worker.concurrency,
            "started_at": _iso(worker.started_at),
            "last_seen_at": _iso(worker.last_seen_at),
            "live": worker.last_seen_at >= cutoff,
        }
        for worker in rows
    ]


def _queues(alias: str, workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Configured queues, queues workers serve, queues with active work and paused
    ones; each with its active executions (branches and items included: they are
    claimed from queues too) by status, `ready` (runnable, unheld) and its workers."""
    counts: dict[str, dict[str, int]] = {}
    rows = (
        WorkflowExecution.objects.using(alias)
        .filter(status__in=ACTIVE_STATUSES)
        .values("run_queue", "status")
        .annotate(n=Count("id"), ready=Count("id", filter=Q(ready=True, locked_by__isnull=True)))
        .order_by()
    )
    for row in rows:
        queue = counts.setdefault(row["run_queue"], {"ready": 0})
        queue[row["status"]] = row["n"]
        queue["ready"] += row["ready"]
    paused = _paused_queues(alias)
    names = set(conf.get("QUEUES")) | set(counts) | set(paused or {})
    names |= {queue for worker in workers for queue in worker["queues"]}
    queues = []
    for name in sorted(names):
        serving = [w for w in workers if not w["queues"] or name in w["queues"]]
        active = counts.get(name, {"ready": 0})
        queues.append(
            {
                "name": name,
                "configured": name in conf.get("QUEUES"),
                "paused": None if paused is None else name in paused,
                "paused_at": (paused or {}).get(name),
                "workers": [w["name"] for w in serving if w["live"]],
                "stale_workers": [w["name"] for w in serving if not w["live"]],
                "executions": {
                    "ready": active["ready"],
                    **{s: active.get(s, 0) for s in ACTIVE_STATUSES},
                },
            }
        )
    return queues


def _paused_queues(alias: str) -> dict[str, str | None] | None:
    """The paused queues (name -> when paused), or None when this installation has no
    pause model (`PausedQueue`, or a `QueueState` with a `paused` flag) or its table
    cannot be read yet (not migrated)."""
    model = getattr(models, "PausedQueue", None) or getattr(models, "QueueState", None)
    if model is None:
        return None
    fields = {field.name for field in model._meta.get_fields()}
    key = next((name for name in ("name", "queue") if name in fields), None)
    if key is None:
        return None
    try:
        with transaction.atomic(using=alias):  # a savepoint: a missing table is no harm
            rows = model.objects.using(alias).all()
            if "paused" in fields:
                rows = rows.filter(paused=True)
            elif "paused_at" in fields:
                rows = rows.filter(paused_at__isnull=False)
            when = "paused_at" if "paused_at" in fields else key
            return {
                name: (_iso(at) if isinstance(at, datetime) else None)
                for name, at in rows.values_list(key, when)
            }
    except DatabaseError:
        return None


def _workflows(alias: str) -> list[dict[str, Any]]:
    """Two GROUP BY queries: executions by (workflow, status), attempts likewise. The
    last activity is the latest creation, start or completion of either."""
    found: dict[str, dict[str, Any]] = {}
    times: dict[str, list[datetime | None]] = {}

    def entry(name: str) -> dict[str, Any]:
        return found.setdefault(
            name,
            {
                "workflow": name,
                "executions": {"total": 0, "by_status": {}},
                "steps": {"total": 0, "by_status": {}},
                "first_activity": None,
                "last_activity": None,
            },
        )

    executions = (
        WorkflowExecution.objects.using(alias)
        .filter(kind=ExecutionKind.WORKFLOW)
        .values("workflow_name", "status")
        .annotate(
            n=Count("id"),
            first=Min("created_at"),
            created=Max("created_at"),
            started=Max("started_at"),
            completed=Max("completed_at"),
        )
        .order_by()
    )
    for row in executions:
        item = entry(row["workflow_name"])
        item["executions"]["by_status"][row["status"]] = row["n"]
        item["executions"]["total"] += row["n"]
        first = item["first_activity"]
        item["first_activity"] = row["first"] if first is None else min(first, row["first"])
        times.setdefault(item["workflow"], []).extend(
            [row["created"], row["started"], row["completed"]]
        )
    attempts = (
        StepExecution.objects.using(alias)
        .values("execution__workflow_name", "status")
        .annotate(n=Count("id"), started=Max("started_at"), completed=Max("completed_at"))
        .order_by()
    )
    for row in attempts:
        item = entry(row["execution__workflow_name"])
        item["steps"]["by_status"][row["status"]] = row["n"]
        item["steps"]["total"] += row["n"]
        times.setdefault(item["workflow"], []).extend([row["started"], row["completed"]])
    workflows = []
    for name in sorted(found):
        item = found[name]
        moments = [moment for moment in times.get(name, []) if moment is not None]
        item["last_activity"] = _iso(max(moments, default=None))
        item["first_activity"] = _iso(item["first_activity"])
        executions, steps = item["executions"], item["steps"]
        executions["by_status"] = _ordered(executions["by_status"], _EXECUTION_ORDER)
        steps["by_status"] = _ordered(steps["by_status"], _STEP_ORDER)
        workflows.append(item)
    return workflows


def _ordered(counts: dict[str, int], order: list[str]) -> dict[str, int]:
    rank = {name: index for index, name in enumerate(order)}
    return dict(sorted(counts.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


# -- flow analytics --------------------------------------------------------------------


def flow_analytics(
    workflow: Any, since: datetime | timedelta | None = None, *, using: str | None = None
) -> dict[str, Any]:
    """The funnel of a workflow (a name or a `Workflow`): its executions created since
    `since` (an aware datetime, or a timedelta meaning that long ago; default all),
    child executions included, branches and items not (their attempts count for their
    workflow's steps).

    `executions`: `count`, `by_status`, and of the completed ones `completed`,
    `duration_avg_seconds` and `duration_median_seconds` (completed_at - started_at).
    `steps`, in the workflow's order (the diagram's), each: `reached_count` and
    `reached_percentage` (executions with at least one attempt of it),
    `average_seconds_to_reach` (its first attempt's start - the execution's start),
    `ends_here_count` (executions that end there: the completed ones whose last step
    it is, the others that stopped there or are there now; those between two steps,
    pending the next one, are not counted) and its percentages of all and of those that
    reached it. Steps no longer in the definition but found in the attempts come last.
    A workflow no longer registered is analysed from its rows, its steps in the order
    they are reached; a name with no definition and no execution is `UnknownWorkflow`.

    Two aggregate statements (three on SQLite), whatever the number of executions; see
    `_FlowQuery`. A graph (or a name only a graph has): `graphs.insights.flow_analytics`.
    """
    from .graphs import insights as graph_insights

    if graph_insights.is_graph_name(workflow, using=using):
        return graph_insights.flow_analytics(workflow, since=since, using=using)
    alias = using or router.db_for_read(WorkflowExecution)
    connection = connections[alias]
    name = workflow if isinstance(workflow, str) else getattr(workflow, "name", None)
    try:
        definition = registry.get(workflow)
    except UnknownWorkflow:
        definition = None
        if not WorkflowExecution.objects.using(alias).filter(workflow_name=name).exists():
            raise
    now = clock.now()
    if isinstance(since, timedelta):
        since = now - since
    query = _FlowQuery(connection, name, since)
    by_status, completed, average, median = query.executions()
    count = sum(by_status.values())
    order = _step_order(definition) if definition is not None else {}
    reached = query.steps(list(order))
    for step_id in sorted(set(reached) - set(order), key=lambda s: (reached[s][1] or 0, s)):
        order[step_id] = {"label": step_id, "kind": "step"}
    steps = []
    for step_id, node in order.items():
        hits, to_reach, ends = reached.get(step_id, (0, None, 0))
        steps.append(
            {
                "step": step_id,
                "label": node["label"],
                "kind": node["kind"],
                "reached_count": hits,
                "reached_percentage": _percent(hits, count),
                "average_seconds_to_reach": _seconds(to_reach),
                "ends_here_count": ends,
                "ends_here_percentage_of_all": _percent(ends, count),
                "ends_here_percentage_of_reached": _percent(ends, hits),
            }
        )
    return {
        "workflow": name,
        "version": getattr(definition, "version", None),
        "analyzed_at": _iso(now),
        "since": _iso(since),
        "executions": {
            "count": count,
            "by_status": _ordered(by_status, _EXECUTION_ORDER),
            "completed": completed,
            "duration_avg_seconds": _seconds(average),
            "duration_median_seconds": _seconds(median),
        },
        "steps": steps,
    }


def _step_order(definition: Any) -> dict[str, dict[str, str]]:
    """The nodes of the diagram model in its (definition) order, markers and
    compensations left out."""
    model = diagram.model(definition)
    return {
        node.id: {"label": node.label, "kind": node.kind}
        for node in model.nodes.values()
        if node.kind not in ("start", "end", "compensation")
    }


class _FlowQuery:
    """The SQL of `flow_analytics`, in two statements (three on SQLite, whose median is
    read as the middle rows of an ORDER BY ... LIMIT ... OFFSET).

    The executions are a workflow's rows of kind workflow (durable_exec_workflow); the
    attempts counted are those of their rows and of their members' (a member names its
    workflow's row in `root`), compensations left out. An execution "ends" at the step
    of the attempt that completed it (its `completed_at` is the execution's), or, while
    not completed, at its `current_step` if that step was reached. Attempts that ended
    at the same instant (steps chained within one claim, on a coarse or a test clock)
    go to the step later in the definition.

    The steps are counted per execution: by pivoting its attempts into one column per
    step of the definition (one GROUP BY execution, whose cost grows with the number of
    steps, so up to `PIVOT_MAX` steps), else by one GROUP BY (execution, step), which
    also finds steps the definition no longer has.
    """

    PIVOT_MAX = 12

    def __init__(self, connection, workflow: str, since: datetime | None) -> None:
        self.connection = connection
        self.vendor = connection.vendor
        self.table = WorkflowExecution._meta.db_table
        self.steps_table = StepExecution._meta.db_table
        self.workflow = workflow
        self.since = None if since is None else connection.ops.adapt_datetimefield_value(since)

    def _fetch(self, sql: str, params: Iterable[Any]) -> list[tuple]:
        with self.connection.cursor() as cursor:
            cursor.execute(sql, list(params))
            return cursor.fetchall()

    def _where(self, alias: str, kind: bool = True) -> tuple[str, list[Any]]:
        """The executions analysed (with `kind`), or the rows of their workflow (members
        too), as a condition on the table under `alias`."""
        sql, params = f"{alias}.workflow_name = %s", [self.workflow]
        if kind:
            sql += f" AND {alias}.kind = %s"
            params.append(ExecutionKind.WORKFLOW)
        if self.since is not None:
            sql += f" AND {alias}.created_at >= %s"
            params.append(self.since)
        return sql, params

    def seconds(self, end: str, start: str) -> str:
        """SQL for `end - start` in seconds (a float)."""
        if self.vendor == "postgresql":
            return f"EXTRACT(EPOCH FROM ({end} - {start}))::float8"
        if self.vendor == "sqlite":
            return f"((julianday({end}) - julianday({start})) * 86400.0)"
        if self.vendor == "mysql":
            return f"(TIMESTAMPDIFF(MICROSECOND, {start}, {end}) / 1000000.0)"
        raise NotImplementedError(f"flow_analytics does not support {self.vendor}")

    def executions(self) -> tuple[dict[str, int], int, float | None, float | None]:
        """Executions by status; how many completed, their average and median duration
        in seconds. One GROUP BY status (the median in it on PostgreSQL)."""
        where, params = self._where("e")
        completed = ExecutionStatus.COMPLETED
        took = f"CASE WHEN e.status = %s THEN {self.seconds('e.completed_at', 'e.started_at')} END"
        median = "NULL"
        if self.vendor == "postgresql":
            median = f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {took})"
        rows = self._fetch(
            f"SELECT e.status, COUNT(*), COUNT({took}), AVG({took}), {median} "
            f"FROM {self.table} e WHERE {where} GROUP BY e.status",
            [completed] * (3 if self.vendor == "postgresql" else 2) + params,
        )
        by_status = {status: n for status, n, *_ in rows}
        done = next((row[2:] for row in rows if row[0] == completed), (0, None, None))
        count, average, middle = done
        if count and self.vendor != "postgresql":
            middle = self._median(count)
        return by_status, count, average, middle

    def _median(self, count: int) -> float:
        """The middle duration (the mean of the two middle ones): the database sorts
        the completed executions' durations and returns those one or two rows."""
        where, params = self._where("e")
        took = self.seconds("e.completed_at", "e.started_at")
        rows = self._fetch(
            f"SELECT {took} AS took FROM {self.table} e WHERE {where} AND e.status = %s "
            "AND e.started_at IS NOT NULL AND e.completed_at IS NOT NULL "
            "ORDER BY took LIMIT %s OFFSET %s",
            [*params, ExecutionStatus.COMPLETED, 2 - count % 2, (count - 1) // 2],
        )
        return sum(row[0] for row in rows) / len(rows)

    def steps(self, order: list[str]) -> dict[str, tuple[int, float | None, int]]:
        """Per step id: (executions that reached it, average seconds from their start to
        its first attempt, executions that end there)."""
        if 0 < len(order) <= self.PIVOT_MAX:
            found, unknown = self._pivoted(order)
            if not unknown:
                return found
        return self._grouped(order)

    def _units(self) -> tuple[str, list[Any]]:
        """The `units` CTE: each row of the workflow (the executions and their members)
        with its execution's id (`root`) and completion time."""
        root_where, root_params = self._where("r")
        unit_where, unit_params = self._where("u", kind=False)
        sql = (
            "units AS (SELECT u.id AS unit, r.id AS root, r.completed_at "
            f"FROM {self.table} u JOIN {self.table} r ON r.id = u.root_id "
            f"WHERE {unit_where} AND {root_where})"
        )
        return sql, unit_params + root_params

    # The attempt that ended its execution (that completed it, if it completed).
    FINAL = "s.execution_id = u.root AND s.completed_at = u.completed_at"

    def _pivoted(self, order: list[str]) -> tuple[dict[str, tuple], int]:
        """One GROUP BY execution with a column per step (the first attempt's start),
        then one row of sums over the executions; also how many attempts have a step
        name the definition does not have."""
        units, params = self._units()
        firsts = ", ".join(
            f"MIN(CASE WHEN s.step_name = %s THEN s.started_at END) AS f{index}"
            for index in range(len(order))
        )
        position = "CASE s.step_name " + "WHEN %s THEN %s " * len(order) + "ELSE -1 END"
        names = ", ".join(["%s"] * len(order))
        params += [*order, *(v for index, step in enumerate(order) for v in (step, index))]
        params += [*order, False]
        completed = ExecutionStatus.COMPLETED
        sums = []
        for index, step in enumerate(order):
            reach = self.seconds(f"p.f{index}", "e.started_at")
            sums.append(
                f"COUNT(p.f{index}), AVG({reach}), "
                f"SUM(CASE WHEN e.status = %s AND p.final_pos = {index} THEN 1 "
                f"WHEN e.status <> %s AND e.current_step = %s AND p.f{index} IS NOT NULL "
                "THEN 1 ELSE 0 END)"
            )
            params += [completed, completed, step]
        sql = f"""
            WITH {units},
            per_execution AS (
                SELECT u.root, {firsts},
                       MAX(CASE WHEN {self.FINAL} THEN {position} END) AS final_pos,
                       SUM(CASE WHEN s.step_name IN ({names}) THEN 0 ELSE 1 END) AS unknown
                FROM {self.steps_table} s JOIN units u ON u.unit = s.execution_id
                WHERE s.is_compensation = %s
                GROUP BY u.root
            )
            SELECT {", ".join(sums)}, SUM(p.unknown)
            FROM per_execution p JOIN {self.table} e ON e.id = p.root
        """
        [row] = self._fetch(sql, params)
        found = {}
        for index, step in enumerate(order):
            hits, to_reach, ends = row[3 * index : 3 * index + 3]
            if hits:
                found[step] = (hits, to_reach, int(ends or 0))
        return found, int(row[-1] or 0)

    def _grouped(self, order: list[str]) -> dict[str, tuple]:
        """One GROUP BY (execution, step); the attempts that completed an execution at
        the same instant are ranked (a window over those rows only)."""
        units, params = self._units()
        completed = ExecutionStatus.COMPLETED
        params += [False, completed, completed]
        position = "-1"
        if order:
            position = "CASE step " + "WHEN %s THEN %s " * len(order) + "ELSE -1 END"
            params += [value for index, step in enumerate(order) for value in (step, index)]
        reach = self.seconds("j.first_at", "j.began")
        sql = f"""
            WITH {units},
            per_step AS (
                SELECT u.root, s.step_name AS step, MIN(s.started_at) AS first_at,
                       MAX(CASE WHEN {self.FINAL} THEN 1 ELSE 0 END) AS is_final
                FROM {self.steps_table} s JOIN units u ON u.unit = s.execution_id
                WHERE s.is_compensation = %s
                GROUP BY u.root, s.step_name
            ),
            joined AS (
                SELECT p.root, p.step, p.first_at, e.started_at AS began,
                       CASE WHEN e.status = %s THEN p.is_final ELSE 0 END AS done,
                       CASE WHEN e.status <> %s AND p.step = e.current_step
                            THEN 1 ELSE 0 END AS still_open
                FROM per_step p JOIN {self.table} e ON e.id = p.root
            ),
            finals AS (
                SELECT step, ROW_NUMBER() OVER (
                    PARTITION BY root ORDER BY {position} DESC, step DESC
                ) AS place
                FROM joined WHERE done = 1
            ),
            ends AS (SELECT step, COUNT(*) AS n FROM finals WHERE place = 1 GROUP BY step)
            SELECT j.step, COUNT(*), AVG({reach}), SUM(j.still_open), MAX(ends.n)
            FROM joined j LEFT JOIN ends ON ends.step = j.step
            GROUP BY j.step
        """
        return {
            step: (hits, to_reach, int(opened or 0) + int(done or 0))
            for step, hits, to_reach, opened, done in self._fetch(sql, params)
        }


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


# -- one execution ---------------------------------------------------------------------


def describe(execution: Any) -> dict[str, Any]:
    """Everything `durable_inspect --json` shows of an execution (an id or a
    `WorkflowExecution`), JSON-able: `execution` (its fields), `error` (its own, else
    the last failed attempt's), `steps` (the timeline: its attempts and its members', in
    `forks.timeline` order), `waits` and `pending_inputs` (of it and its members, open
    or not), `children` (child workflows it or its members started, with the step that
    started each) and `open_members` (its parallel branches or foreach items still
    active). Unknown id: `ExecutionNotFound`."""
    execution = _load(execution)
    tree = Q(execution__root_id=execution.root_id)
    units = _units(execution)
    steps = [
        {
            "step": row.step_name,
            "unit": _unit_json(row.unit),
            "attempt": row.attempt,
            "status": row.status,
            "started_at": _iso(row.started_at),
            "completed_at": _iso(row.completed_at),
            "duration_ms": row.duration_ms,
            "worker": row.worker,
            "error": row.error,
            "is_compensation": row.is_compensation,
            "compensation_for": row.compensation_for,
            "child": _str(row.child_id),
        }
        for row in forks.timeline(execution)
    ]
    waits = [
        {
            "unit": _unit_json(units.get(wait.execution_id)),
            "step": wait.step_name,
            "kind": wait.kind,
            "key": wait.key,
            "events": list(wait.event_names or []),
            "child": (wait.result or {}).get("child") if wait.kind == Wait.Kind.CHILD else None,
            "status": wait.status,
            "since": _iso(wait.created_at),
            "until": _iso(wait.wake_at),
            "resolved_at": _iso(wait.resolved_at),
        }
        for wait in Wait.objects.filter(tree).order_by("created_at", "id")
        if wait.execution_id in units
    ]
    inputs = [
        {
            "id": pending.id,
            "unit": _unit_json(units.get(pending.execution_id)),
            "step": pending.step_name,
            "name": pending.input_name,
            "type": pending.input_type,
            "prompt": pending.prompt,
            "choices": pending.choices,
            "fields": pending.fields,
            "status": pending.status,
            "since": _iso(pending.created_at),
            "until": _iso(pending.timeout_at),
            "response": _plain(pending.response),
            "responded_by": pending.responded_by,
            "responded_at": _iso(pending.responded_at),
        }
        for pending in PendingInput.objects.filter(tree).order_by("created_at", "id")
        if pending.execution_id in units
    ]
    return {
        "execution": _execution_json(execution),
        "error": _last_error(execution),
        "steps": steps,
        "waits": waits,
        "pending_inputs": inputs,
        "children": _children(execution, units),
        "open_members": [_member_json(member) for member in _open_members(execution)[0]],
    }


def introspect(execution: Any) -> str:
    """Why an execution (an id or a `WorkflowExecution`) is not finished, as plain text:
    its status, workflow and current step; what it waits on (events, inputs with their
    prompt, a sleep's wake-up time, a child workflow, parallel branches or foreach items
    still open), each since when and until when; its last error; its completed steps.
    For a finished one: how it ended. Unknown id: `ExecutionNotFound`. A graph
    execution: `graphs.insights.introspect`."""
    execution = _load(execution)
    if execution.kind == ExecutionKind.GRAPH:
        from .graphs import insights as graph_insights

        return graph_insights.introspect(execution)
    lines = [f"Execution {execution.id}"]
    lines.append(f"Workflow: '{execution.workflow_name}' (version {execution.workflow_version})")
    if execution.kind != ExecutionKind.WORKFLOW:
        lines.append(
            f"Part of: {_member_name(execution)} of execution {execution.parent_id} "
            f"(its events and inputs are sent to {execution.root_id})"
        )
    elif execution.parent_id is not None:
        lines.append(f"Child of: execution {execution.parent_id}")
    lines.append(f"Status: {execution.status}")
    if execution.current_step:
        lines.append(f"Current step: '{execution.current_step}' (attempt {execution.attempt})")
    times = [f"Created: {format_time(execution.created_at)}"]
    times.append(f"Started: {format_time(execution.started_at)}")
    if execution.completed_at:
        times.append(f"Finished: {format_time(execution.completed_at)}")
    lines.append(" | ".join(times))
    lines.append("")
    if execution.status in FINAL_STATUSES:
        lines += _how_it_ended(execution)
    else:
        lines.append("Why it is not finished:")
        lines += _situation(execution, clock.now(), depth=0)
    lines.append("")
    error = _last_error(execution)
    if error:
        where = f" (step '{error['step']}', attempt {error['attempt']}, {format_time(error['at'])})"
        where = where if error.get("step") else ""
        lines.append(f"Last error: {error.get('type')}: {error.get('message')}{where}")
    else:
        lines.append("Last error: none")
    lines.append("")
    lines += _completed_steps(execution)
    if execution.compensation_results:
        lines.append("")
        lines.append(f"Compensations ({len(execution.compensation_results)}):")
        for result in execution.compensation_results:
            outcome = result.get("result", {})
            failed = f": {outcome['error'].get('message')}" if outcome.get("error") else ""
            lines.append(
                f"- {result.get('compensation')} (undoes '{result.get('step')}'): "
                f"{outcome.get('status')}{failed}"
            )
    return "\n".join(lines) + "\n"


def _load(execution: Any) -> WorkflowExecution:
    if isinstance(execution, WorkflowExecution):
        return execution
    return WorkflowExecution.objects.by_id(execution)


def _how_it_ended(execution: WorkflowExecution) -> list[str]:
    took = ""
    if execution.completed_at and execution.started_at:
        elapsed = execution.completed_at - execution.started_at
        took = f" after {format_duration(elapsed.total_seconds())}"
    at = f" at {format_time(execution.completed_at)}{took}"
    ending = {
        ExecutionStatus.COMPLETED: f"It is finished: it completed{at}. Nothing is left to do.",
        ExecutionStatus.FAILED: f"It is finished: it failed{at}"
        + (f", in step '{execution.current_step}'" if execution.current_step else "")
        + ". Nothing runs until it is resumed (durable.resume).",
        ExecutionStatus.CANCELLED: f"It is finished: it was cancelled{at}"
        + (f" (reason: {execution.cancel_reason})" if execution.cancel_reason else "")
        + ". Nothing runs until it is resumed (durable.resume).",
        ExecutionStatus.COMPENSATED: f"It is finished: it failed and its completed steps "
        f"were undone{at}.",
        ExecutionStatus.COMPENSATION_FAILED: f"It is finished: it failed and undoing its "
        f"completed steps failed too{at}.",
    }
    return [ending.get(execution.status, f"It is finished: {execution.status}{at}.")]


def _situation(execution: WorkflowExecution, now: datetime, depth: int) -> list[str]:
    """Bullet lines: what an active execution (or member) waits on, indented by depth."""
    pad = "    " * depth
    lines: list[str] = []
    if execution.status == ExecutionStatus.RUNNING:
        until = execution.locked_until
        lease = f", lease until {format_time(until)}" if until else ""
        lines.append(
            f"{pad}- It is running step '{execution.current_step}' (attempt "
            f"{execution.attempt}) on worker '{execution.locked_by or '?'}'{lease}."
        )
    elif execution.status == ExecutionStatus.COMPENSATING:
        done, planned = len(execution.compensation_results), len(execution.compensation_plan)
        lines.append(
            f"{pad}- It failed and is undoing its completed steps: {done} of {planned} "
            "compensations done."
        )
    elif execution.status == ExecutionStatus.PENDING:
        lines.append(pad + _pending(execution, now))
    if execution.status != ExecutionStatus.WAITING:
        return lines
    waits = Wait.objects.filter(
        execution=execution, step_seq=execution.step_seq, status=WaitStatus.WAITING
    ).order_by("created_at", "id")
    for wait in waits:
        lines.append(pad + _wait_line(wait))
    inputs = PendingInput.objects.filter(
        execution=execution, step_seq=execution.step_seq, status=InputStatus.PENDING
    ).order_by("created_at", "id")
    for pending in inputs:
        lines.append(
            f"{pad}- It waits for input '{pending.input_name}' ({pending.input_type}), asked "
            f"{format_time(pending.created_at)}, {_until(pending.timeout_at)}."
        )
        if pending.prompt:
            lines.append(f'{pad}    Prompt: "{_one_line(pending.prompt)}"')
        choices = [str(choice.get("value")) for choice in pending.choices or []]
        if choices:
            lines.append(f"{pad}    Choices: {', '.join(choices)}")
        fields = [str(field.get("name")) for field in pending.fields or []]
        if fields:
            lines.append(f"{pad}    Fields: {', '.join(fields)}")
    members, open_count = _open_members(execution)
    if open_count and depth // 2 < MEMBER_DEPTH:
        kind = members[0].kind if members else ExecutionKind.ITEM
        noun = {"branch": ("branch", "branches")}.get(kind, (kind, f"{kind}s"))
        lines.append(
            f"{pad}- It waits for its block '{execution.current_step}': {open_count} "
            f"{noun[open_count != 1]} still open:"
        )
        for member in members:
            lines.append(
                f"{pad}    - {_member_name(member)} at step '{member.current_step}': "
                f"{member.status}, since {format_time(member.created_at)}"
            )
            lines += _situation(member, now, depth + 2)
        if open_count > len(members):
            lines.append(f"{pad}    - ... and {open_count - len(members)} more")
    if not lines:
        due = f", runnable from {format_time(execution.run_at)}" if execution.run_at else ""
        lines.append(
            f"{pad}- It is parked with no open wait{due}: what it waited for has happened "
            "and it will run again."
        )
    return lines


def _pending(execution: WorkflowExecution, now: datetime) -> str:
    step = f"step '{execution.current_step}'" if execution.current_step else "its first step"
    if execution.run_at is None and not execution.ready:
        if execution.kind == ExecutionKind.ITEM:
            return "- It is held: its foreach runs at most `concurrency` items at once."
        return "- It is pending with no time to run: nothing will start it."
    if execution.run_at is not None and execution.run_at > now:
        if execution.started_at is None:
            return f"- It is scheduled to start at {format_time(execution.run_at)}."
        if execution.attempt > 1:
            return (
                f"- It will retry {step} (attempt {execution.attempt}) at "
                f"{format_time(execution.run_at)}."
            )
        return f"- It will run {step} at {format_time(execution.run_at)}."
    since = format_time(execution.run_at) if execution.run_at else "now"
    return (
        f"- It is ready to run {step} since {since} and waits for a worker on queue "
        f"'{execution.run_queue}'."
    )


def _wait_line(wait: Wait) -> str:
    since = f"since {format_time(wait.created_at)}"
    if wait.kind == Wait.Kind.SLEEP:
        return f"- It sleeps until {format_time(wait.wake_at)} ({since})."
    if wait.kind == Wait.Kind.CHILD:
        child_id = (wait.result or {}).get("child")
        child = (
            WorkflowExecution.objects.filter(id=child_id)
            .values("workflow_name", "status", "current_step")
            .first()
        )
        about = "not found"
        if child is not None:
            at = f", at step '{child['current_step']}'" if child["current_step"] else ""
            about = f"'{child['workflow_name']}', {child['status']}{at}"
        return (
            f"- It waits for child workflow {child_id} ({about}), {since}, {_until(wait.wake_at)}."
        )
    names = ", ".join(f"'{name}'" for name in wait.event_names or [])
    if wait.kind == Wait.Kind.EVENT:
        what = f"event {names}"
    elif wait.kind == Wait.Kind.ANY:
        what = f"any of the events {names}"
    else:
        received = sorted(wait.result or {})
        got = f" (received: {', '.join(received)})" if received else ""
        what = f"all of the events {names}{got}"
    return f"- It waits for {what}, {since}, {_until(wait.wake_at)}."


def _until(moment: datetime | None) -> str:
    return f"until {format_time(moment)} (timeout)" if moment is not None else "no timeout"


def _open_members(execution: WorkflowExecution) -> tuple[list[WorkflowExecution], int]:
    """The first open members of the block the execution is parked at, and how many
    are open (durable_exec_open_members)."""
    if execution.status != ExecutionStatus.WAITING:
        return [], 0
    members = forks.open_members(execution.id, execution.step_seq)
    shown = list(members.order_by("item_index")[:MEMBERS_SHOWN])
    count = len(shown) if len(shown) < MEMBERS_SHOWN else members.count()
    return shown, count


def _member_name(member: WorkflowExecution) -> str:
    return f"{member.kind} {member.item_index}"


def _completed_steps(execution: WorkflowExecution) -> list[str]:
    done = StepExecution.objects.filter(
        execution=execution, status=StepStatus.COMPLETED, is_compensation=False
    )
    count = done.count()
    rows = list(reversed(done.order_by("-started_at")[:STEPS_SHOWN]))
    lines = [f"Completed steps ({count}):"]
    if count > len(rows):
        lines.append(f"- ... {count - len(rows)} earlier not shown")
    for row in rows:
        took = "" if row.duration_ms is None else f" ({format_duration(row.duration_ms / 1000)})"
        lines.append(f"- {row.step_name}: {format_time(row.completed_at or row.started_at)}{took}")
    if not rows:
        lines.append("- none yet")
    return lines


def _last_error(execution: WorkflowExecution) -> dict[str, Any] | None:
    """The execution's error, else its latest failed attempt's (a retry pending), with
    the step, attempt and time of the attempt it came from when one did."""
    failed = (
        StepExecution.objects.filter(execution=execution, error__isnull=False)
        .order_by("-started_at")
        .values("step_name", "attempt", "error", "completed_at", "started_at")
        .first()
    )
    error = execution.error or (failed or {}).get("error")
    if not error:
        return None
    found = {key: error.get(key) for key in ("type", "message", "traceback")}
    if failed and (execution.error is None or failed["error"] == execution.error):
        found.update(
            step=failed["step_name"],
            attempt=failed["attempt"],
            at=_iso(failed["completed_at"] or failed["started_at"]),
        )
    return found


def _units(execution: WorkflowExecution) -> dict[uuid.UUID, tuple[str, int] | None]:
    """The execution and its members (of any depth) by id: None for itself, else
    (kind, index)."""
    units: dict[uuid.UUID, tuple[str, int] | None] = {execution.id: None}
    rows = (
        WorkflowExecution.objects.filter(root_id=execution.root_id)
        .exclude(kind=ExecutionKind.WORKFLOW)
        .values_list("id", "parent_id", "kind", "item_index")
    )
    parents = {row[0]: row for row in rows}

    def under(member_id: uuid.UUID) -> bool:
        seen = set()
        while member_id in parents and member_id not in seen:
            seen.add(member_id)
            member_id = parents[member_id][1]
            if member_id == execution.id:
                return True
        return False

    for member_id, _parent, kind, index in parents.values():
        if under(member_id):
            units[member_id] = (kind, index)
    return units


def _children(execution: WorkflowExecution, units: dict) -> list[dict[str, Any]]:
    children = list(
        WorkflowExecution.objects.filter(kind=ExecutionKind.WORKFLOW, parent_id__in=list(units))
        .exclude(id=execution.id)
        .order_by("created_at", "id")
    )
    started_by = dict(
        StepExecution.objects.filter(child_id__in=[child.id for child in children]).values_list(
            "child_id", "step_name"
        )
    )
    return [
        {
            "id": str(child.id),
            "workflow": child.workflow_name,
            "status": child.status,
            "current_step": child.current_step,
            "started_by_step": started_by.get(child.id),
            "unit": _unit_json(units.get(child.parent_id)),
            "created_at": _iso(child.created_at),
            "completed_at": _iso(child.completed_at),
            "error": child.error,
        }
        for child in children
    ]


def _execution_json(execution: WorkflowExecution) -> dict[str, Any]:
    return {
        "id": str(execution.id),
        "workflow": execution.workflow_name,
        "version": execution.workflow_version,
        "status": execution.status,
        "kind": execution.kind,
        "item_index": execution.item_index,
        "queue": execution.queue,
        "run_queue": execution.run_queue,
        "priority": execution.priority,
        "current_step": execution.current_step,
        "attempt": execution.attempt,
        "parent": _str(execution.parent_id),
        "root": _str(execution.root_id),
        "idempotency_key": execution.idempotency_key,
        "created_at": _iso(execution.created_at),
        "scheduled_at": _iso(execution.scheduled_at),
        "started_at": _iso(execution.started_at),
        "completed_at": _iso(execution.completed_at),
        "deadline": _iso(execution.deadline),
        "run_at": _iso(execution.run_at),
        "ready": execution.ready,
        "locked_by": execution.locked_by,
        "locked_until": _iso(execution.locked_until),
        "cancel_reason": execution.cancel_reason,
        "input": _plain(execution.input),
        "context": _plain(execution.context),
        "compensation_results": execution.compensation_results,
    }


def _member_json(member: WorkflowExecution) -> dict[str, Any]:
    return {
        "id": str(member.id),
        "kind": member.kind,
        "index": member.item_index,
        "status": member.status,
        "current_step": member.current_step,
        "created_at": _iso(member.created_at),
    }


def _unit_json(unit: tuple[str, int] | None) -> dict[str, Any] | None:
    return None if unit is None else {"kind": unit[0], "index": unit[1]}


def _plain(value: Any) -> Any:
    """A decoded context as plain JSON: dates, times, decimals and UUIDs as text."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID | timedelta):
        return str(value)
    return value


# -- diagrams ----------------------------------------------------------------------------


def mermaid(workflow_or_execution: Any) -> str:
    """Mermaid text of a workflow (its name or the `Workflow`), or of an execution (a
    `WorkflowExecution`, a UUID, or an id string that names no workflow), whose nodes
    are then coloured by status. An unknown name is `UnknownWorkflow`, an unknown id
    `ExecutionNotFound`. A graph, or a graph execution: `graphs.insights.mermaid`."""
    from .graphs import insights as graph_insights

    if (graph := graph_insights.graph_subject(workflow_or_execution)) is not None:
        return graph_insights.mermaid(graph)
    subject = workflow_or_execution
    if isinstance(subject, str) and not _looks_like_id(subject):
        return diagram.to_mermaid(diagram.model(subject))
    if isinstance(subject, str | uuid.UUID):
        if isinstance(subject, str):
            try:
                return diagram.to_mermaid(diagram.model(subject))
            except UnknownWorkflow:
                pass
        subject = WorkflowExecution.objects.by_id(subject)
    if isinstance(subject, WorkflowExecution):
        return diagram.to_mermaid(diagram.model(subject.workflow_name, subject))
    return diagram.to_mermaid(diagram.model(subject))


_ID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


def _looks_like_id(text: str) -> bool:
    return bool(_ID.match(text.strip()))


# -- text ------------------------------------------------------------------------------


def to_text(report: dict[str, Any]) -> str:
    """A `status()` or a `flow_analytics()` report (a graph's too) as text for a person."""
    if "nodes" in report and "graph" in report:
        from .graphs import insights as graph_insights

        return graph_insights.to_text(report)
    if "health" in report and "workflows" in report:
        return _status_text(report)
    if "steps" in report and "executions" in report and "workflow" in report:
        return _flow_text(report)
    raise ValueError("to_text() renders the reports of status() and flow_analytics().")


def _status_text(report: dict[str, Any]) -> str:
    lines = [
        f"System Status: {report['status'].upper()}",
        f"Database: {'Connected' if report['database_connected'] else 'NOT CONNECTED'}"
        f" ({report['database']})",
        f"Checked at: {format_time(report['checked_at'])}",
        RULE,
        "",
        "HEALTH CHECKS:",
        SUB_RULE,
    ]
    for check in report["health"]["checks"]:
        mark = "✓" if check["ok"] else "✗"
        severity = "" if check["ok"] else f" [{check['severity']}]"
        lines.append(f"{mark} {check['name']}: {check['detail']}{severity}")
    lines += ["", f"QUEUES ({len(report['queues'])} total):", SUB_RULE]
    for queue in report["queues"]:
        paused = {True: " (paused)", False: "", None: ""}[queue["paused"]]
        counts = ", ".join(f"{name}: {n}" for name, n in queue["executions"].items())
        workers = ", ".join(queue["workers"]) or "none live"
        lines.append(f"Queue: '{queue['name']}'{paused}")
        lines.append(f"Workers: {workers}")
        lines.append(f"Executions: {counts}")
        lines.append("")
    if not report["queues"]:
        lines.append("")
    live = [worker for worker in report["workers"] if worker["live"]]
    lines += [f"WORKERS ({len(live)} live, {len(report['workers'])} total):", SUB_RULE]
    for worker in report["workers"]:
        state = "live" if worker["live"] else "not seen lately"
        lines.append(
            f"- {worker['name']} ({state}): queues {', '.join(worker['queues']) or 'all'}, "
            f"concurrency {worker['concurrency']}, last seen {format_time(worker['last_seen_at'])}"
        )
    lines += ["", f"WORKFLOWS ({len(report['workflows'])} total):", SUB_RULE]
    for item in report["workflows"]:
        lines.append(f"Name: '{item['workflow']}'")
        lines.append(f"Executions ({item['executions']['total']}):")
        lines += [f"- {name}: {n}" for name, n in item["executions"]["by_status"].items()]
        lines.append(f"First activity: {format_time(item['first_activity'])}")
        lines.append(f"Last activity: {format_time(item['last_activity'])}")
        lines.append(f"Step attempts ({item['steps']['total']}):")
        lines += [
            f"{MARKS.get(name, '-')} {name}: {n}" for name, n in item["steps"]["by_status"].items()
        ]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _flow_text(report: dict[str, Any]) -> str:
    stats = report["executions"]
    title = [f"Workflow: '{report['workflow']}'"]
    if report.get("version"):
        title.append(f"Version: '{report['version']}'")
    lines = analysis_opening(title, report)
    lines.append(f"Average duration: {format_duration(stats['duration_avg_seconds'])}")
    lines.append(f"Median duration: {format_duration(stats['duration_median_seconds'])}")
    if stats["completed"] != stats["count"]:
        lines.append(f"(durations of the {stats['completed']} completed executions)")
    steps = report["steps"]
    lines += ["", f"FUNNEL ({len(steps)} steps):", SUB_RULE]
    width = max((len(step["step"]) for step in steps), default=4)
    for step in steps:
        lines.append(f"{step['step']:<{width}}  {funnel_line(step)}")
    return "\n".join(lines) + "\n"


# -- wording -------------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
