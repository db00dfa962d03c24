"""What is wrong that nothing will put right by itself, and putting right what is safe.

`diagnose()` looks for five kinds of problem (a `Finding` each, `Finding.check` names
the kind):

- `stale_lease`: an execution held by a lease that lapsed more than `health.live_window()`
  ago (the grace `health.check` allows): no live worker reclaims it.
- `unwakeable_wait`: an execution parked (`waiting`) that nothing can wake: no timer
  (`run_at`), no open event wait, no pending input, no open branch, item or awaited child
  workflow of its current step visit. Parked forever.
- `stuck_compensation`: a `compensating` execution neither held, ready nor due later (or
  whose timer is more than `health.LATE_AFTER` late): its undoing never runs.
- `auto_disabled_schedule`: a schedule disabled after too many failed runs in a row.
- `silent_worker`: a worker row not heartbeated for `health.live_window()`.

Each check is one query bounded by a LIMIT (`limit` + 1 rows, `health.CAP` by default),
on an index where there is one: durable_exec_lease for leases, durable_exec_status for
parked and compensating rows (the parked scan looks at the oldest `PARKED_SCAN` parked
rows without a timer at most, each probed through durable_wait_open,
durable_input_unique and durable_exec_open_members), durable_worker's `last_seen_at`
index for workers; schedules are a small table. A check that found more than `limit`
says so in `Report.truncated`.

`repair(findings)` fixes only what is safe, each change through the same path the
workers use, and returns one sentence per thing it did:

- a stale lease is given back (`releases.requeue`, as a worker reclaiming it would: the
  attempt is fenced out and counts as an interruption);
- a silent worker's leases are given back (`releases.release`) and its row removed;
- a stuck compensation is made runnable again (`executions.transition` to
  `compensating` with `run_at` now: `ready` follows).

Waits nothing can wake and auto-disabled schedules need a person: their findings carry
a `hint` (cancel or resume the execution; the call that re-enables the schedule) and are
left as they are.
"""

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, Subquery

from . import claims, clock, executions, health, releases
from .errors import ExecutionNotFound
from .models import (
    ACTIVE_STATUSES,
    ExecutionKind,
    ExecutionStatus,
    InputStatus,
    PendingInput,
    Schedule,
    Wait,
    WaitStatus,
    Worker,
    WorkflowExecution,
)

STALE_LEASE = "stale_lease"
UNWAKEABLE_WAIT = "unwakeable_wait"
STUCK_COMPENSATION = "stuck_compensation"
AUTO_DISABLED_SCHEDULE = "auto_disabled_schedule"
SILENT_WORKER = "silent_worker"
CHECKS = (STALE_LEASE, SILENT_WORKER, STUCK_COMPENSATION, UNWAKEABLE_WAIT, AUTO_DISABLED_SCHEDULE)
FIXABLE = frozenset({STALE_LEASE, SILENT_WORKER, STUCK_COMPENSATION})
TITLES = {
    STALE_LEASE: "Stale leases",
    SILENT_WORKER: "Workers gone silent",
    STUCK_COMPENSATION: "Stuck compensations",
    UNWAKEABLE_WAIT: "Waits nothing can wake",
    AUTO_DISABLED_SCHEDULE: "Auto-disabled schedules",
}
# At most this many parked executions without a timer (the oldest) are examined for
# waits nothing can wake, so the check stays bounded however many are parked.
PARKED_SCAN = 10_000
EVENT_KINDS = (Wait.Kind.EVENT, Wait.Kind.ANY, Wait.Kind.ALL)
DOCTOR = "durable_doctor"


@dataclass(frozen=True)
class Finding:
    """One problem: `check` (its kind), `subject` (an execution id, a worker or schedule
    name), `detail` (one sentence for a person), `hint` (what a person can do) and
    whether `repair` can fix it."""

    check: str
    subject: str
    detail: str
    hint: str = ""
    fixable: bool = False
    data: dict[str, Any] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Report(list):
    """The findings of `diagnose`, a list; `truncated` names the checks that found more
    than the limit (run again after fixing to see the rest)."""

    def __init__(self, findings=(), truncated=()):
        super().__init__(findings)
        self.truncated = set(truncated)


def diagnose(now: datetime | None = None, *, limit: int = health.CAP) -> Report:
    """Every problem found at `now` (the engine clock's time by default), at most `limit`
    per check, in the order of `CHECKS`."""
    now = clock.now() if now is None else now
    report = Report()
    for check, finder in (
        (STALE_LEASE, _stale_leases),
        (SILENT_WORKER, _silent_workers),
        (STUCK_COMPENSATION, _stuck_compensations),
        (UNWAKEABLE_WAIT, _unwakeable_waits),
        (AUTO_DISABLED_SCHEDULE, _auto_disabled_schedules),
    ):
        found = finder(now, limit + 1)
        if len(found) > limit:
            report.truncated.add(check)
        report.extend(found[:limit])
    return report


def repair(findings: list[Finding]) -> list[str]:
    """Fix the fixable findings (rechecking each first: what changed meanwhile is left);
    returns what was done, one sentence each."""
    done: list[str] = []
    by_check: dict[str, list[Finding]] = {}
    for finding in findings:
        by_check.setdefault(finding.check, []).append(finding)
    done += _give_back_stale_leases(by_check.get(STALE_LEASE, []))
    done += _forget_silent_workers(by_check.get(SILENT_WORKER, []))
    done += _restart_compensations(by_check.get(STUCK_COMPENSATION, []))
    return done


# -- the checks --------------------------------------------------------------------------


def _stale_leases_at(now: datetime):
    """Executions whose lease lapsed more than the grace ago (durable_exec_lease)."""
    return WorkflowExecution.objects.lease_lapsed(now - health.live_window())


def _stale_leases(now: datetime, rows: int) -> list[Finding]:
    lapsed = (
        _stale_leases_at(now)
        .order_by("locked_until")
        .values_list("id", "workflow_name", "kind", "status", "locked_by", "locked_until")[:rows]
    )
    return [
        Finding(
            STALE_LEASE,
            str(execution_id),
            f"{_what(name, kind, status)} is held by {holder or '?'} under a lease that "
            f"lapsed {health._ago(until, now)} ago; no live worker reclaimed it.",
            "--fix gives it back (its step runs again), as a live worker would.",
            fixable=True,
            data={"locked_by": holder, "locked_until": until},
        )
        for execution_id, name, kind, status, holder, until in lapsed
    ]


def _silent_workers(now: datetime, rows: int) -> list[Finding]:
    silent = (
        Worker.objects.filter(last_seen_at__lt=now - health.live_window())
        .order_by("last_seen_at")
        .values_list("name", "host", "pid", "last_seen_at")[:rows]
    )
    return [
        Finding(
            SILENT_WORKER,
            name,
            f"Worker {name} (pid {pid} on {host}) last heartbeated {health._ago(seen, now)} ago.",
            "--fix gives back what it holds and removes its row.",
            fixable=True,
            data={"host": host, "pid": pid, "last_seen_at": seen},
        )
        for name, host, pid, seen in silent
    ]


def _stuck_compensations_at(now: datetime):
    """Compensating executions nobody holds, not ready, with no timer or a late one (the
    query of `health`'s `compensations` check)."""
    return WorkflowExecution.objects.filter(
        status=ExecutionStatus.COMPENSATING, locked_by__isnull=True, ready=False
    ).filter(Q(run_at__isnull=True) | Q(run_at__lt=now - health.LATE_AFTER))


def _stuck_compensations(now: datetime, rows: int) -> list[Finding]:
    stuck = (
        _stuck_compensations_at(now)
        .order_by()
        .values_list("id", "workflow_name", "kind", "run_at", "compensation_plan")[:rows]
    )
    findings = []
    for execution_id, name, kind, run_at, plan in stuck:
        timer = "no timer" if run_at is None else f"a timer {health._ago(run_at, now)} late"
        findings.append(
            Finding(
                STUCK_COMPENSATION,
                str(execution_id),
                f"{_what(name, kind, ExecutionStatus.COMPENSATING)} is neither held nor "
                f"ready and has {timer}: its {len(plan or [])} compensation(s) never run.",
                "--fix makes it runnable again; a worker then goes on compensating.",
                fixable=True,
                data={"run_at": run_at},
            )
        )
    return findings


def parked_forever():
    """Parked executions that nothing can wake: no timer, no open event wait, pending
    input, open member or awaited child of their current step visit (a sleep's open wait
    does not count: only `run_at` brings a sleep back)."""
    me, visit = OuterRef("pk"), OuterRef("step_seq")
    event_wait = Wait.objects.filter(
        execution=me, step_seq=visit, status=WaitStatus.WAITING, kind__in=EVENT_KINDS
    )
    pending_input = PendingInput.objects.filter(
        execution=me, step_seq=visit, status=InputStatus.PENDING
    )
    # Branches, items and child workflows called by this visit (durable_exec_open_members).
    open_under = WorkflowExecution.objects.filter(
        parent=me, parent_step_seq=visit, status__in=ACTIVE_STATUSES
    )
    return _parked_without_timer().filter(
        ~Exists(event_wait), ~Exists(pending_input), ~Exists(open_under)
    )


def _parked_without_timer():
    """Graph executions are left out: parked with nothing open is how they wait for
    their next value (`graphs.set_value` wakes them)."""
    return WorkflowExecution.objects.filter(
        status=ExecutionStatus.WAITING, run_at__isnull=True, ready=False, locked_by__isnull=True
    ).exclude(kind=ExecutionKind.GRAPH)


def _unwakeable_waits(now: datetime, rows: int) -> list[Finding]:
    oldest = _parked_without_timer().order_by("created_at").values("id")[:PARKED_SCAN]
    stuck = list(
        parked_forever()
        .filter(id__in=Subquery(oldest))
        .order_by("created_at")
        .values_list("id", "workflow_name", "kind", "root_id", "current_step", "step_seq")[:rows]
    )
    sleeps = _open_sleeps([row[0] for row in stuck])
    findings = []
    for execution_id, name, kind, root_id, step, visit in stuck:
        sleep_due = sleeps.get((execution_id, visit))
        why = (
            f"its sleep was due {health._ago(sleep_due, now)} ago but no timer is set"
            if sleep_due is not None
            else "no timer, no open event wait, input, branch, item or child workflow"
        )
        findings.append(
            Finding(
                UNWAKEABLE_WAIT,
                str(execution_id),
                f"{_what(name, kind, ExecutionStatus.WAITING)} is parked at step "
                f"{step or '?'} and nothing can wake it ({why}).",
                _unwakeable_hint(execution_id, kind, root_id, step),
                data={"current_step": step, "step_seq": visit, "root": root_id},
            )
        )
    return findings


def _open_sleeps(execution_ids: list[uuid.UUID]) -> dict[tuple, datetime]:
    """Open sleeps (with their due time) of the given executions, by (execution, visit)."""
    if not execution_ids:
        return {}
    rows = Wait.objects.filter(
        execution_id__in=execution_ids,
        status=WaitStatus.WAITING,
        kind=Wait.Kind.SLEEP,
        wake_at__isnull=False,
    ).values_list("execution_id", "step_seq", "wake_at")
    return {(execution_id, visit): wake_at for execution_id, visit, wake_at in rows}


def _unwakeable_hint(execution_id, kind: str, root_id, step: str | None) -> str:
    if kind != ExecutionKind.WORKFLOW:
        return (
            f"It is {_a(kind)} of workflow {root_id}: cancel that workflow "
            f"(manage.py durable_cancel {root_id}), or cancel and then resume it "
            f"(manage.py durable_resume {root_id}) to run its unfinished members again."
        )
    return (
        f"Cancel it (manage.py durable_cancel {execution_id}), or cancel and then resume it "
        f"(manage.py durable_resume {execution_id}) to run step {step or '?'} again."
    )


def _auto_disabled_schedules(now: datetime, rows: int) -> list[Finding]:
    disabled = (
        Schedule.objects.filter(auto_disabled_at__isnull=False, enabled=False)
        .order_by("auto_disabled_at")
        .values_list("name", "workflow_name", "consecutive_failures", "last_error")[:rows]
    )
    findings = []
    for name, workflow_name, failures, error in disabled:
        last = ""
        if isinstance(error, dict) and error.get("message"):
            last = f"; the last: {error.get('type', 'Error')}: {error['message']}"
        findings.append(
            Finding(
                AUTO_DISABLED_SCHEDULE,
                name,
                f"Schedule {name} (workflow {workflow_name}) was disabled after "
                f"{failures} failed runs in a row{last}.",
                f"Once the cause is fixed, re-enable it: django_durable.enable_schedule({name!r}) "
                "(or the admin's schedule page).",
            )
        )
    return findings


# -- the repairs -------------------------------------------------------------------------


def _give_back_stale_leases(findings: list[Finding]) -> list[str]:
    if not findings:
        return []
    ids = [uuid.UUID(finding.subject) for finding in findings]
    holders = {finding.subject: finding.data.get("locked_by") for finding in findings}
    released = releases.requeue(
        _stale_leases_at(clock.now()).filter(id__in=ids),
        "LeaseExpired",
        "The worker running this attempt stopped renewing its lease and no worker reclaimed "
        f"it; {DOCTOR} gave it back, and the step runs again.",
    )
    if not released:
        return []
    done = []
    after = WorkflowExecution.objects.filter(id__in=ids, locked_by__isnull=True).values_list(
        "id", "workflow_name", "status", "error"
    )
    for execution_id, name, status, error in after:
        holder = holders[str(execution_id)] or "?"
        if status in (ExecutionStatus.FAILED, ExecutionStatus.COMPENSATION_FAILED):
            reason = (error or {}).get("type", "an error")
            done.append(
                f"Took execution {execution_id} ({name}) back from {holder}: interrupted too "
                f"often, it ended {status} ({reason})."
            )
        else:
            done.append(
                f"Gave back execution {execution_id} ({name}), held by {holder} under a stale "
                f"lease: it is {status} and runnable again."
            )
    return done


def _forget_silent_workers(findings: list[Finding]) -> list[str]:
    done = []
    for finding in findings:
        cutoff = clock.now() - health.live_window()
        silent = Worker.objects.filter(name=finding.subject, last_seen_at__lt=cutoff)
        if not silent.exists():
            continue  # it heartbeated meanwhile (or is gone)
        released = 0
        while True:
            count = releases.release(
                finding.subject,
                "WorkerLost",
                f"The worker running this attempt went silent; {DOCTOR} gave it back, and the "
                "step runs again.",
            )
            released += count
            if count < releases.RELEASE_BATCH:
                break
        removed, _ = silent.delete()
        held = f"gave back {released} execution(s) it held" if released else "it held nothing"
        row = "removed its row" if removed else "its row was gone already"
        done.append(f"Worker {finding.subject} was silent: {held}, {row}.")
    return done


def _restart_compensations(findings: list[Finding]) -> list[str]:
    done = []
    for finding in findings:
        now = clock.now()
        with transaction.atomic():
            try:
                execution = executions.lock(finding.subject)
            except ExecutionNotFound:
                continue
            if not _stuck_compensations_at(now).filter(id=execution.id).exists():
                continue  # taken, made ready or finished meanwhile
            executions.transition(execution, ExecutionStatus.COMPENSATING, fenced=False, run_at=now)
            claims.notify(execution.run_queue)
        done.append(
            f"Made the compensation of execution {execution.id} ({execution.workflow_name}) "
            f"runnable again on queue {execution.run_queue}."
        )
    return done


# -- wording -----------------------------------------------------------------------------


def _what(workflow_name: str, kind: str, status: str) -> str:
    noun = "Execution" if kind == ExecutionKind.WORKFLOW else f"{_a(kind).capitalize()} of"
    return f"{noun} {workflow_name} ({status})"


def _a(kind: str) -> str:
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"
