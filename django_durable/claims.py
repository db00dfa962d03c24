"""Handing runnable executions to workers: the claim, the lease, and the wake-up.

On PostgreSQL one statement picks due executions with `FOR UPDATE SKIP LOCKED` and
leases them, so any number of workers can claim concurrently without blocking each
other or taking the same row. Elsewhere (SQLite, for development) each row is taken with
a conditional UPDATE, which is safe but serialised by the database's single writer.

A claim keeps the execution's phase (`models.CLAIMED_AS`): pending and waiting work runs
as `running`, a `compensating` execution stays `compensating` while it is held. Giving
work back is a change of status, so it goes through the door (`releases`).
"""

import functools
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta

from django.db import connection, models, transaction
from django.db.models import F
from django.db.models.functions import Coalesce

from . import clock, conf, ids
from .models import (
    ACTIVE_STATUSES,
    CLAIMED_AS,
    UNHELD_CLAIMABLE,
    ExecutionStatus,
    InputStatus,
    StepExecution,
    StepStatus,
    WaitStatus,
    WorkflowExecution,
)

CHANNEL = "durable_runnable"
COALESCE_SECONDS = 0.05
_last_sent: dict[str, float] = {}  # queue -> when this process last notified it (monotonic)
DUE_AT = "@"  # separates a queue from a due time in a notice's payload

# What an execution's lease is made of; cleared together whenever its holder lets go.
LEASE_CLEARED = {"locked_by": None, "locked_until": None, "run_token": None}

_CLAIMED_STATUS_SQL = " ".join(
    f"WHEN '{before}' THEN '{after}'" for before, after in CLAIMED_AS.items()
)

_CLAIMABLE_SQL = ", ".join(f"'{status}'" for status in CLAIMED_AS)

# Named, not `e.*`: a prepared claim must keep its result's shape when a migration adds a
# column while workers run.
_EXECUTION_COLUMNS = ", ".join(
    f'e."{field.column}"' for field in WorkflowExecution._meta.concrete_fields
)

# Only `ready` rows are in the index this reads (durable_exec_ready): however many
# executions are parked or finished, a claim reads a handful of index entries. Paused
# queues (a small table, usually empty) are skipped.
_PICK_AND_LEASE_SQL = f"""
picked AS (
    SELECT id, status AS claimed_from FROM durable_execution
    WHERE ready AND status IN ({_CLAIMABLE_SQL}) AND locked_by IS NULL {{queue_filter}}
        AND NOT EXISTS (SELECT 1 FROM durable_paused_queue p WHERE p.name = run_queue)
    ORDER BY priority DESC, run_at
    LIMIT {{limit}}
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE durable_execution AS e
    SET status = CASE picked.claimed_from {_CLAIMED_STATUS_SQL} END, ready = false,
        locked_by = %(worker)s, locked_until = %(until)s,
        error = CASE picked.claimed_from WHEN 'compensating' THEN e.error END,
        run_token = {{token}}, started_at = COALESCE(e.started_at, %(now)s)
    FROM picked
    WHERE e.id = picked.id
    RETURNING {_EXECUTION_COLUMNS}, picked.claimed_from
)"""

_CLAIM_SQL = f"WITH {_PICK_AND_LEASE_SQL} SELECT * FROM claimed"

# The claim and its first attempt in one statement: the attempt's id is the run token
# (as `engine` opens it), and the run the execution was parked on, if any, is resumed.
# A compensating execution's attempt names the plan entry it undoes, which only Python
# reads: the engine opens that one itself (`claims.start_attempt`). `more_ready` says
# whether other work looked runnable, so the worker wakes another thread only then.
_CLAIM_AND_START_SQL = f"""
WITH {_PICK_AND_LEASE_SQL},
forward AS (SELECT * FROM claimed WHERE claimed_from <> 'compensating'),
resumed AS (
    UPDATE durable_step SET status = '{StepStatus.RESUMED.value}'
    WHERE execution_id = (SELECT id FROM forward) AND status = '{StepStatus.WAITING.value}'
),
opened AS (
    INSERT INTO durable_step
        (id, execution_id, step_name, attempt, status, logs, worker, started_at, is_compensation)
    SELECT run_token, id, current_step, attempt, '{StepStatus.RUNNING.value}', '[]'::jsonb,
        %(worker)s, %(now)s, false
    FROM forward
)
SELECT claimed.*, EXISTS (
    SELECT 1 FROM durable_execution
    WHERE ready AND locked_by IS NULL {{queue_filter}} AND id <> claimed.id
) AS more_ready
FROM claimed
"""


def lease_duration() -> timedelta:
    return timedelta(seconds=conf.get("LEASE_SECONDS"))


def claim(worker: str, queues: Sequence[str] | None, limit: int) -> list[WorkflowExecution]:
    """Lease up to `limit` due executions to `worker`, highest priority then oldest first.

    Each comes back with `claimed_from`, the status it had before. Forward work carries
    no error (a failed execution is not runnable), except the note left by a worker that
    could not run it (`engine._set_aside`): cleared here. A compensating execution keeps
    the error that started its compensations.
    """
    now = clock.now()
    until = now + lease_duration()
    if connection.vendor == "postgresql":
        claimed = _claim_skip_locked(worker, queues, limit, now, until)
    else:
        claimed = _claim_conditional(worker, queues, limit, now, until)
    return sorted(claimed, key=lambda e: (-e.priority, e.run_at))


def claim_and_start(
    worker: str, queues: Sequence[str] | None, token: uuid.UUID
) -> WorkflowExecution | None:
    """Lease the next due execution to `worker` under `token` and open its first attempt
    (`opened_attempt`, whose id is `token`): one statement on PostgreSQL.

    For the thread that runs the step at once: a claim waiting in a queue could run a
    step after a cancel, which only the separate start (`start_attempt`) would see. The
    caller chooses the token, so a claim whose reply was lost can be given back by it
    (`releases.give_back_lost_claim`). A compensating execution comes back without
    `opened_attempt`; elsewhere than PostgreSQL, every execution does (the engine then
    opens it).
    """
    now = clock.now()
    until = now + lease_duration()
    if connection.vendor != "postgresql":
        claimed = _claim_conditional(worker, queues, 1, now, until, token)
        return claimed[0] if claimed else None
    sql = _CLAIM_AND_START_SQL
    claimed = _claim_skip_locked(worker, queues, 1, now, until, sql, token)
    if not claimed:
        return None
    [execution] = claimed
    if execution.claimed_from != ExecutionStatus.COMPENSATING:
        execution.opened_attempt = StepExecution(
            id=token,
            execution=execution,
            step_name=execution.current_step,
            attempt=execution.attempt,
            status=StepStatus.RUNNING,
            worker=worker,
            started_at=now,
        )
    return execution


def discard_opened_attempt(token: uuid.UUID) -> None:
    """Remove the attempt a claim opened (`claim_and_start`) that never ran: its claim was
    given back unheard, or the worker cannot run it."""
    StepExecution.objects.filter(id=token, status=StepStatus.RUNNING).delete()


def _claim_skip_locked(
    worker, queues, limit, now, until, sql=_CLAIM_SQL, token=None
) -> list[WorkflowExecution]:
    params = {"now": now, "until": until, "worker": worker, "limit": limit}
    if token is not None:
        params["token"] = _db_value("run_token", token)
    queue_filter = ""
    if queues is not None and len(queues) == 1:
        # `=` rather than `= ANY(...)`, so PostgreSQL walks the partial runnable index in
        # claim order instead of sorting the whole backlog.
        queue_filter = "AND run_queue = %(queue)s"
        params["queue"] = queues[0]
    elif queues is not None:
        queue_filter = "AND run_queue = ANY(%(queues)s)"
        params["queues"] = list(queues)
    token_sql = "gen_random_uuid()" if token is None else "%(token)s"
    # A thread claims one: a literal keeps the prepared statement's generic plan from
    # guessing at the limit.
    limit_sql = "%(limit)s" if token is None else "1"
    sql = _claim_sql(sql, queue_filter, token_sql, limit_sql)
    if token is None:
        return list(WorkflowExecution.objects.raw(sql, params))
    with _hot_cursor() as cursor:  # a worker thread's claim: prepared
        cursor.execute(sql, params)
        return _executions(cursor)


def _executions(cursor) -> list[WorkflowExecution]:
    """The rows a claim returned, as model instances (what `raw()` would build: each
    value through its field's converters), extra columns as attributes."""
    columns = [column.name for column in cursor.description]
    fields = _execution_fields(tuple(columns))
    claimed = []
    for row in cursor.fetchall():
        names, values, extra = [], [], {}
        for column, value, field in zip(columns, row, fields, strict=True):
            if field is None:
                extra[column] = value
                continue
            for converter in field.get_db_converters(connection):
                value = converter(value, None, connection)
            names.append(field.attname)
            values.append(value)
        execution = WorkflowExecution.from_db(connection.alias, names, values)
        execution.__dict__.update(extra)
        claimed.append(execution)
    return claimed


@functools.cache
def _execution_fields(columns: tuple[str, ...]) -> list:
    by_column = {field.column: field for field in WorkflowExecution._meta.concrete_fields}
    return [by_column.get(column) for column in columns]


@functools.cache
def _claim_sql(template: str, queue_filter: str, token_sql: str, limit_sql: str) -> str:
    return template.format(queue_filter=queue_filter, token=token_sql, limit=limit_sql)


def _claim_conditional(worker, queues, limit, now, until, token=None) -> list[WorkflowExecution]:
    candidates = (
        WorkflowExecution.objects.runnable(queues).in_claim_order().values_list("id", "status")
    )
    claimed_from = {}
    for execution_id, status in list(candidates[:limit]):
        taken = WorkflowExecution.objects.filter(
            id=execution_id, status=status, ready=True, locked_by__isnull=True
        ).update(
            status=CLAIMED_AS[status],
            ready=False,
            locked_by=worker,
            locked_until=until,
            run_token=ids.time_ordered() if token is None else token,
            started_at=Coalesce(F("started_at"), now),
            **({} if status == ExecutionStatus.COMPENSATING else {"error": None}),
        )
        if taken:
            claimed_from[execution_id] = status
    claimed = list(WorkflowExecution.objects.filter(id__in=list(claimed_from)))
    for execution in claimed:
        execution.claimed_from = claimed_from[execution.id]
    return claimed


def unmark_unclaimable() -> int:
    """Clear `ready` on rows that cannot be claimed: held or finished rows that a process
    older than the flag (during a rolling deploy) left marked. Claims skip them anyway;
    this keeps them out of the claim's index. Workers run it when they start."""
    return (
        WorkflowExecution.objects.filter(ready=True).exclude(UNHELD_CLAIMABLE).update(ready=False)
    )


def renew_leases(worker: str, execution_ids: Collection[uuid.UUID]) -> int:
    """Extend the leases of the executions `worker` is really working on.

    Only the ids the worker holds in memory: a row it claimed but never heard back
    about (the reply was lost) must lapse and be reclaimed, not be renewed forever.
    """
    if not execution_ids:
        return 0
    return WorkflowExecution.objects.filter(
        id__in=list(execution_ids), locked_by=worker, locked_until__isnull=False
    ).update(locked_until=clock.now() + lease_duration())


def start_attempt(attempt, execution_id: uuid.UUID, run_token: uuid.UUID) -> bool:
    """Insert a claim's first attempt row only while the execution still carries
    `run_token`, and mark the run it was parked on (if any) `resumed`.

    A cancel (or a release) that lands between the claim and the start stops the
    attempt before it runs; on PostgreSQL the check takes a share lock on the execution
    row, so a cancel that has not committed yet is waited for, not missed. One
    statement on PostgreSQL; two in one transaction elsewhere.
    """
    step_table = attempt._meta.db_table
    fields, columns, typed = _insert_parts(type(attempt), connection.vendor)
    values = _row(attempt)
    held = [_db_value("id", execution_id), _db_value("run_token", run_token)]
    resumed = [StepStatus.RESUMED.value, _db_value("id", execution_id), StepStatus.WAITING.value]
    if connection.vendor == "postgresql":
        with _hot_cursor() as cursor:
            cursor.execute(
                f"WITH held AS ({_HELD_SQL} FOR SHARE), "
                f"resumed AS (UPDATE {step_table} SET status = %s WHERE execution_id = %s "
                f"AND status = %s AND EXISTS (SELECT 1 FROM held)) "
                f"INSERT INTO {step_table} ({columns}) SELECT {typed} FROM held",
                [*held, *resumed, *values],
            )
            return cursor.rowcount == 1
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {step_table} SET status = %s WHERE execution_id = %s AND status = %s "
            f"AND EXISTS ({_HELD_SQL})",
            [*resumed, *held],
        )
        placeholders = ", ".join(["%s"] * len(fields))
        cursor.execute(
            f"INSERT INTO {step_table} ({columns}) SELECT {placeholders} "
            f"WHERE EXISTS ({_HELD_SQL})",
            [*values, *held],
        )
        return cursor.rowcount == 1


_HELD_SQL = "SELECT 1 FROM durable_execution WHERE id = %s AND run_token = %s"


def hand_over(
    execution_id: uuid.UUID,
    run_token: uuid.UUID,
    changes: dict,
    finished_id: uuid.UUID,
    finished: dict,
    next_attempt,
) -> bool:
    """A chained step in one statement (PostgreSQL): advance the execution, fenced on
    the finished attempt's `run_token`; close that attempt; insert the next one. False,
    and nothing written, if the attempt no longer holds the execution."""
    step_table = next_attempt._meta.db_table
    fields, columns, typed = _insert_parts(type(next_attempt), connection.vendor)
    values = _row(next_attempt)
    advance, advance_params = _assignments(WorkflowExecution, changes)
    close, close_params = _assignments(next_attempt.__class__, finished)
    sql = (
        f"WITH advanced AS (UPDATE durable_execution SET {advance} "
        f"WHERE id = %s AND run_token = %s RETURNING id), "
        f"closed AS (UPDATE {step_table} SET {close} "
        f"WHERE id = %s AND EXISTS (SELECT 1 FROM advanced)) "
        f"INSERT INTO {step_table} ({columns}) SELECT {typed} FROM advanced"
    )
    params = [
        *advance_params,
        _db_value("id", execution_id),
        _db_value("run_token", run_token),
        *close_params,
        _db_value("id", finished_id),
        *values,
    ]
    with _hot_cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1


def end(
    execution_id: uuid.UUID,
    fence: tuple[str, object],
    changes: dict,
    own_end: tuple[uuid.UUID, dict] | None,
    interruption: dict,
    now: datetime,
    lock_parent: uuid.UUID | None = None,
) -> tuple[bool, dict | None]:
    """An execution's ending in one statement (PostgreSQL): write its row (only while
    `fence`, a column and the value the caller holds, still matches), close the
    caller's attempt as `own_end` says, close the other open attempts with
    `interruption`, withdraw open waits and pending inputs. With `lock_parent`, the
    parent's row is locked first in the same statement (the lock order), and what the
    ending needs of it comes back. Returns whether the fence held, and the parent."""
    column, held = fence
    end_row, end_params = _assignments(WorkflowExecution, changes)
    own_id, own_ending = own_end if own_end is not None else (None, {"status": StepStatus.FAILED})
    own_set, own_params = _assignments(StepExecution, own_ending)
    others_set, others_params = _assignments(
        StepExecution,
        {"status": StepStatus.FAILED, "completed_at": now, "error": interruption},
    )
    after_end = "EXISTS (SELECT 1 FROM ended)"
    parent_cte, after_parent, parent_params = "", "", []
    if lock_parent is not None:
        parent_cte = f"parent AS ({_PARENT_SQL} FOR UPDATE), "
        after_parent = " AND EXISTS (SELECT 1 FROM parent)"
        parent_params = [_db_value("id", lock_parent)]
    sql = (
        f"WITH {parent_cte}ended AS (UPDATE durable_execution SET {end_row} "
        f"WHERE id = %s AND {column} IS NOT DISTINCT FROM %s{after_parent} RETURNING id), "
        f"own AS (UPDATE durable_step SET {own_set} WHERE id = %s AND {after_end}), "
        f"others AS (UPDATE durable_step SET {others_set} WHERE execution_id = %s "
        f"AND status IN (%s, %s) AND id IS DISTINCT FROM %s AND {after_end}), "
        f"waits AS (UPDATE durable_wait SET status = %s, resolved_at = %s "
        f"WHERE execution_id = %s AND status = %s AND {after_end}), "
        f"inputs AS (UPDATE durable_pending_input SET status = %s "
        f"WHERE execution_id = %s AND status = %s AND {after_end}) "
        f"SELECT (SELECT count(*) FROM ended){', parent.*' if parent_cte else ''} "
        f"FROM (SELECT 1) AS one{' LEFT JOIN parent ON true' if parent_cte else ''}"
    )
    execution = _db_value("id", execution_id)
    own = StepExecution._meta.get_field("id").get_db_prep_value(own_id, connection)
    params = [
        *parent_params,
        *end_params,
        execution,
        WorkflowExecution._meta.get_field(column).get_db_prep_value(held, connection),
        *own_params,
        own,
        *others_params,
        execution,
        StepStatus.RUNNING.value,
        StepStatus.WAITING.value,
        own,
        WaitStatus.CANCELLED.value,
        WorkflowExecution._meta.get_field("completed_at").get_db_prep_value(now, connection),
        execution,
        WaitStatus.WAITING.value,
        InputStatus.CANCELLED.value,
        execution,
        InputStatus.PENDING.value,
    ]
    with _hot_cursor() as cursor:
        cursor.execute(sql, params)
        ended, *parent = cursor.fetchone()
    return ended == 1, dict(zip(PARENT_FIELDS, parent, strict=True)) if parent_cte else None


# What an ending member (a branch, an item) needs of its parent: where it is, to tell
# whether it still waits on the block the member belongs to.
PARENT_FIELDS = ("id", "status", "step_seq", "workflow_name", "current_step", "run_queue")
_PARENT_SQL = f"SELECT {', '.join(PARENT_FIELDS)} FROM durable_execution WHERE id = %s"

_ACTIVE_SQL = ", ".join(f"'{status}'" for status in ACTIVE_STATUSES)

# A member ended, its parent locked: let the next held item run (with `release`), and if
# none is left open and the parent is parked on the block, make it runnable to join.
_OPEN_MEMBERS_SQL = f"""
    SELECT id FROM durable_execution
    WHERE parent_id = %(parent)s AND parent_step_seq = %(visit)s AND kind <> 'workflow'
      AND status IN ({_ACTIVE_SQL})"""
_ADVANCE_BLOCK_SQL = f"""
WITH released AS (
    UPDATE durable_execution SET ready = true, run_at = %(now)s
    WHERE id = ({_OPEN_MEMBERS_SQL}
      AND %(release)s AND status = 'pending' AND NOT ready AND run_at IS NULL
      AND locked_by IS NULL
    ORDER BY item_index LIMIT 1)
    RETURNING run_queue
),
woken AS (
    UPDATE durable_execution SET ready = true, run_at = %(now)s
    WHERE id = %(parent)s AND status = 'waiting' AND NOT EXISTS ({_OPEN_MEMBERS_SQL})
    RETURNING run_queue
)
SELECT (SELECT run_queue FROM released), (SELECT run_queue FROM woken)
"""


def advance_block(
    parent_id: uuid.UUID, visit: int, release: bool, now: datetime
) -> tuple[str | None, str | None]:
    """One statement (PostgreSQL) for a member that ended under its locked parent: the
    queues of the item it released and of the parent it woke (None: none)."""
    params = {
        "parent": _db_value("id", parent_id),
        "visit": visit,
        "release": release,
        "now": _db_value("run_at", now),
    }
    with _hot_cursor() as cursor:
        cursor.execute(_ADVANCE_BLOCK_SQL, params)
        return cursor.fetchone()


def _hot_cursor():
    """A cursor for the statements a step runs on PostgreSQL (the claim, the hand-over,
    the ending, the fenced first attempt): bound and prepared on the server, so each
    connection parses and plans them once, not once per step (planning took longer than
    running them). Off for a connection pooler in transaction mode that cannot keep
    prepared statements (PgBouncer before 1.21, or without `max_prepared_statements`):
    see `_prepares`. Django's execute wrappers and query log still see every statement."""
    if connection.vendor != "postgresql" or not _prepares():
        return connection.cursor()
    connection.close_if_health_check_failed()  # what Django's own cursor() does first
    connection.ensure_connection()
    connection.validate_thread_sharing()
    preparing, logged = _cursor_classes()
    with connection.wrap_database_errors:
        raw = preparing(connection.connection)
        _match_timezone(raw)
    return logged(raw, connection) if connection.queries_logged else connection.make_cursor(raw)


def _prepares() -> bool:
    """DURABLE["PREPARED_STATEMENTS"], or if unset: yes, unless the database is set up
    for a pooler in transaction mode (Django's DISABLE_SERVER_SIDE_CURSORS)."""
    if not _psycopg3():
        return False  # psycopg2 binds on the client only
    chosen = conf.get("PREPARED_STATEMENTS")
    if chosen is None:
        return not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
    return bool(chosen)


@functools.cache
def _psycopg3() -> bool:
    return connection.Database.__name__ == "psycopg"


def _match_timezone(cursor) -> None:
    """What Django's own create_cursor() does: read times in the connection's zone when
    the settings changed it after connecting (override_settings)."""
    from django.db.backends.postgresql.base import TIMESTAMPTZ_OID, register_tzloader
    from psycopg.pq import Format

    loader = cursor.connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
    if connection.timezone != loader.timezone:
        register_tzloader(connection.timezone, cursor)


_NEVER_AUTOMATIC = 2**31  # a threshold no statement reaches: only prepare=True prepares


@functools.cache
def _cursor_classes():
    from django.db.backends.postgresql.base import CursorDebugWrapper, ServerBindingCursor
    from django.db.backends.utils import CursorWrapper
    from psycopg import OperationalError, errors
    from psycopg.pq import TransactionStatus

    class PreparingCursor(ServerBindingCursor):
        """Prepares what it runs. Django leaves the connection's automatic preparing off
        (`prepare_threshold` None, which also refuses an explicit `prepare=True`): it is
        lifted for this statement only, so the project's own queries stay unprepared."""

        def execute(self, query, params=None, **options):
            pgconn = self.connection
            threshold, pgconn.prepare_threshold = pgconn.prepare_threshold, _NEVER_AUTOMATIC
            try:
                return super().execute(query, params, prepare=True, **options)
            except (errors.InvalidSqlStatementName, errors.FeatureNotSupported) as exc:
                # The server lost the statement (a pooler moved us to another backend)
                # or its plan no longer fits the table (a migration changed a column).
                # Outside a transaction nothing was done: start afresh, unprepared.
                # Inside one, the connection's trouble, not the step's: the worker
                # releases the execution and drops the connection (DATABASE_ERRORS).
                if pgconn.info.transaction_status != TransactionStatus.IDLE:
                    raise OperationalError(f"A prepared statement is unusable: {exc}") from exc
                super().execute("DEALLOCATE ALL")  # psycopg forgets its names too
                return super().execute(query, params, prepare=False, **options)
            finally:
                pgconn.prepare_threshold = threshold

    class LoggedCursor(CursorDebugWrapper):
        """Logs the statement with its values in place (Django's own log would read the
        prepared statement's text, which is not kept)."""

        def execute(self, sql, params=None):
            with self.debug_sql(self.db.ops.compose_sql(sql, params)):
                return CursorWrapper.execute(self, sql, params)

    return PreparingCursor, LoggedCursor


def _assignments(model, values: dict) -> tuple[str, list]:
    """`col = %s, ...` and its parameters, each value prepared by its model field."""
    names, vendor = tuple(values), connection.vendor
    return _set_clause(model, names, vendor), _prepared(_fields(model, names, vendor), values)


def _row(instance) -> list:
    """The values of an INSERT of `instance` (all its concrete fields, in order)."""
    model = type(instance)
    names = tuple(field.attname for field in model._meta.concrete_fields)
    fields = _fields(model, names, connection.vendor)
    return _prepared(fields, {name: getattr(instance, name) for name in names})


def _prepared(fields: tuple, values: dict) -> list:
    """Each value as its field prepares it for the database, except a value of the
    type psycopg sends as it is (`_fields`): Django's preparation of those is an
    identity that costs microseconds a value, and a chained step writes about 25."""
    params = []
    for (field, native), value in zip(fields, values.values(), strict=True):
        as_is = native is not None and (value is None or type(value) is native)
        if as_is and native is datetime and value is not None and value.tzinfo is None:
            as_is = False  # Django warns about and converts a naive time
        params.append(value if as_is else field.get_db_prep_save(value, connection))
    return params


# The SQL around the values is the same on every call: built once per model and vendor
# (on the hot path, Django's type lookups cost more than the statement's round trip).


@functools.cache
def _insert_parts(model, vendor: str) -> tuple[list, str, str]:
    """A model's concrete fields, their column list, and typed placeholders for an
    INSERT ... SELECT (PostgreSQL would read an untyped SELECT list as text)."""
    fields = list(model._meta.concrete_fields)
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    typed = ", ".join(f"%s::{field.cast_db_type(connection)}" for field in fields)
    return fields, columns, typed


# A field's value psycopg sends as it is, on PostgreSQL; JSON goes through the field.
_NATIVE_TYPES = (
    (models.UUIDField, uuid.UUID),
    (models.BooleanField, bool),
    (models.IntegerField, int),
    (models.CharField, str),
    (models.DateTimeField, datetime),
)


@functools.cache
def _fields(model, names: tuple[str, ...], vendor: str) -> tuple:
    """The fields named (by name or column attribute), each with the Python type whose
    values need no preparation (None: always prepare)."""
    by_attname = {field.attname: field for field in model._meta.concrete_fields}
    fields = [by_attname.get(name) or model._meta.get_field(name) for name in names]
    return tuple(
        (field, _native_type(field) if vendor == "postgresql" else None) for field in fields
    )


def _native_type(field) -> type | None:
    target = field.target_field if field.is_relation else field
    return next((kind for base, kind in _NATIVE_TYPES if isinstance(target, base)), None)


@functools.cache
def _set_clause(model, names: tuple[str, ...], vendor: str) -> str:
    columns = (model._meta.get_field(name).column for name in names)
    return ", ".join(f"{connection.ops.quote_name(column)} = %s" for column in columns)


def _db_value(field_name: str, value):
    field = WorkflowExecution._meta.get_field(field_name)
    return field.get_db_prep_value(value, connection)


def notify(run_queue: str, due_at: datetime | None = None) -> None:
    """Wake idle workers of `run_queue` (PostgreSQL): for work runnable now, or with
    `due_at` for work that will be then (a start scheduled from outside a worker), so
    they wake for it without polling.

    Sent after the transaction commits, in a statement of its own: PostgreSQL takes a
    global lock at the commit of any transaction that notified, so the transaction that
    wrote the work does not carry it. Notices of work runnable now are coalesced: a
    queue notified by this process less than COALESCE_SECONDS ago is not notified again,
    because a worker that hears a notice claims once more that long after it (see
    `Worker._heard`). A notice that fails to go out is logged; polling is the fallback.
    Elsewhere (SQLite) there is no NOTIFY: the notice reaches this process's own
    listeners only (`listen_here`), which is where a development worker runs its steps.
    """
    payload = run_queue if due_at is None else f"{run_queue}{DUE_AT}{due_at.isoformat()}"
    if connection.vendor == "postgresql":
        transaction.on_commit(lambda: _send(run_queue, payload, due_at is None), robust=True)
    elif _here:
        transaction.on_commit(lambda: _tell_here(payload), robust=True)


_here: list[Callable[[str], None]] = []  # this process's listeners, where NOTIFY is not


def listen_here(listener: Callable[[str], None]) -> Callable[[], None]:
    """Hear this process's notices (their payloads) where the database cannot send them;
    returns what stops it."""
    _here.append(listener)
    return lambda: _here.remove(listener)


def _tell_here(payload: str) -> None:
    for listener in list(_here):
        listener(payload)


def _send(run_queue: str, payload: str, coalesce: bool) -> None:
    now = time.monotonic()
    if coalesce and now - _last_sent.get(run_queue, -COALESCE_SECONDS) < COALESCE_SECONDS:
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, payload])
    if coalesce:
        _last_sent[run_queue] = now


def parse_notice(payload: str) -> tuple[str, datetime | None]:
    """The queue a notice is for, and the time its work falls due (None: now). A due
    time is the last part and never holds the separator; a queue name may."""
    queue, separator, due_at = payload.rpartition(DUE_AT)
    if separator:
        try:
            return queue, datetime.fromisoformat(due_at)
        except ValueError:
            pass
    return payload, None


def listener(channel: str):
    """A connection of its own (autocommit) listening on `channel` (PostgreSQL): for
    waiting on NOTIFYs outside Django's connection, which may be in a transaction."""
    import psycopg

    params = {
        key: value
        for key, value in connection.get_connection_params().items()
        if key not in ("cursor_factory", "context")
    }
    opened = psycopg.connect(**params, autocommit=True)
    opened.execute(f"LISTEN {channel}")
    return opened
