"""Deleting finished executions: whole trees, old ones, in batches.

`delete_finished(older_than)` deletes the workflow executions that finished (by default
in any final status) more than `older_than` ago, with everything that belongs to them:
their branches and foreach items, the child workflows they started (and theirs), and
the attempts, waits, events and inputs of all of these.

Only whole trees go. A candidate is a top-level workflow (no parent) in one of the
statuses asked for whose `completed_at` is before the cutoff; its tree is every row
with its root, plus every child workflow started from a row of the tree, recursively.
The tree is deleted only if no row of it is active and none finished after the cutoff,
so an active execution is never deleted, nor a branch or item while its workflow is
there, nor a child workflow while its parent is (it goes with its parent's tree); a
finished parent whose fire-and-forget child still runs (or finished recently) is kept.

Each batch is its own transaction: up to `batch_size` candidates of one status are
selected with LIMIT, oldest first after the last one read (a finished row was created
before it finished, so the read is a range of durable_exec_status or durable_exec_created,
walked in order: a batch reads about `batch_size` rows however many are old), and
locked, skipping rows another transaction holds; their trees are read and locked (durable_exec_root,
and the index on `parent` for child workflows), rechecked, and deleted. A later
batch starts after the last candidate read, so kept trees are not read again.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q

from . import clock
from .models import ACTIVE_STATUSES, FINAL_STATUSES, ExecutionKind, WorkflowExecution

DEFAULT_BATCH_SIZE = 1000
CHUNK = 500  # ids per IN (...) list while reading trees


@dataclass
class Swept:
    """What a sweep did (or, in a dry run, would do)."""

    executions: int = 0  # top-level executions whose trees went
    rows: int = 0  # execution rows in those trees (with branches, items, child workflows)
    kept: int = 0  # candidates kept: some row of their tree is active or finished lately
    batches: int = 0
    deleted: dict[str, int] = field(default_factory=dict)  # rows deleted, by model


def final_statuses(statuses: Iterable[str] | None) -> tuple[str, ...]:
    """The statuses to delete (all final ones by default); ValueError for one that is
    not final."""
    if statuses is None:
        return tuple(FINAL_STATUSES)
    chosen = []
    for status in statuses:
        if status not in FINAL_STATUSES:
            raise ValueError(
                f"{status!r} is not a final status; only executions that ended can be "
                f"deleted: {', '.join(FINAL_STATUSES)}."
            )
        if status not in chosen:
            chosen.append(status)
    if not chosen:
        raise ValueError("No status given.")
    return tuple(chosen)


def delete_finished(
    older_than: timedelta,
    statuses: Iterable[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    on_batch: Callable[[int], None] | None = None,
    *,
    now: datetime | None = None,
) -> int:
    """Delete the trees of workflow executions that ended (in `statuses`, by default any
    final status) more than `older_than` before `now` (the engine clock's time); returns
    how many top-level executions went (with a dry run: would go, nothing is deleted).
    `on_batch` is called after each batch with the number it deleted."""
    swept = sweep(
        older_than, statuses, batch_size=batch_size, dry_run=dry_run, on_batch=on_batch, now=now
    )
    return swept.executions


def count_candidates(
    older_than: timedelta, statuses: Iterable[str] | None = None, *, now: datetime | None = None
) -> int:
    """How many top-level executions match the status and age (an upper bound of what a
    sweep deletes: trees with an active or recently finished row are kept)."""
    cutoff = (clock.now() if now is None else now) - older_than
    return _candidates(final_statuses(statuses), cutoff).count()


def sweep(
    older_than: timedelta,
    statuses: Iterable[str] | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    on_batch: Callable[[int], None] | None = None,
    now: datetime | None = None,
) -> Swept:
    """`delete_finished`, returning the details (`Swept`)."""
    statuses = final_statuses(statuses)
    if older_than < timedelta(0):
        raise ValueError("older_than cannot be negative.")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    cutoff = (clock.now() if now is None else now) - older_than
    swept = Swept()
    for status in statuses:
        after = None
        while True:
            with transaction.atomic():
                batch = _next_batch(status, cutoff, after, batch_size, lock=not dry_run)
                if not batch:
                    break
                after = batch[-1]
                tops = [execution_id for _, execution_id in batch]
                trees = _trees(tops, cutoff, lock=not dry_run)
                doomed = [top for top in tops if trees[top].whole]
                if doomed and not dry_run:
                    roots = [root for top in doomed for root in trees[top].roots]
                    for model, count in _delete(roots).items():
                        swept.deleted[model] = swept.deleted.get(model, 0) + count
            swept.batches += 1
            swept.executions += len(doomed)
            swept.rows += sum(trees[top].rows for top in doomed)
            swept.kept += len(tops) - len(doomed)
            if on_batch is not None:
                on_batch(len(doomed))
            if len(batch) < batch_size:
                break
    return swept


# -- internals ---------------------------------------------------------------------------


def _candidates(statuses: Sequence[str], cutoff: datetime):
    """Top-level executions in `statuses` that finished before `cutoff` (and so were
    created before it: the range an index on `created_at` serves)."""
    return WorkflowExecution.objects.filter(
        status__in=statuses,
        created_at__lt=cutoff,
        completed_at__lt=cutoff,
        parent__isnull=True,
        kind=ExecutionKind.WORKFLOW,
    )


def _next_batch(status: str, cutoff: datetime, after, size: int, lock: bool) -> list[tuple]:
    """The next `size` candidates of `status`, oldest first, after `after` (created_at, id)."""
    rows = _candidates([status], cutoff)
    if after is not None:
        created_at, execution_id = after
        # The first condition is a range on the index; the second breaks ties.
        rows = rows.filter(created_at__gte=created_at).filter(
            Q(created_at__gt=created_at) | Q(id__gt=execution_id)
        )
    if lock:
        rows = rows.select_for_update(skip_locked=True)
    return list(rows.order_by("created_at", "id").values_list("created_at", "id")[:size])


@dataclass
class _Tree:
    roots: list = field(default_factory=list)  # its own root, then child workflows'
    rows: int = 0
    whole: bool = True  # every row finished, before the cutoff


def _trees(tops: list, cutoff: datetime, lock: bool) -> dict:
    """The tree of each top-level execution, read level by level: the rows with a root of
    the level (the workflow, its branches and items), then the child workflows any of them
    started (each its own root) make the next level."""
    trees = {top: _Tree() for top in tops}
    owner = {top: top for top in tops}  # root -> the top-level execution of its tree
    level = list(tops)
    while level:
        following = []
        for chunk in _chunks(level):
            rows = WorkflowExecution.objects.filter(root_id__in=chunk)
            if lock:
                rows = rows.select_for_update()
            for root_id, status, completed_at in rows.order_by("id").values_list(
                "root_id", "status", "completed_at"
            ):
                tree = trees[owner[root_id]]
                tree.rows += 1
                if status in ACTIVE_STATUSES or (
                    completed_at is not None and completed_at >= cutoff
                ):
                    tree.whole = False
            children = WorkflowExecution.objects.filter(
                kind=ExecutionKind.WORKFLOW, parent__root_id__in=chunk
            ).values_list("id", "parent__root_id")
            for child_id, parent_root in children:
                if child_id in owner:
                    continue
                owner[child_id] = owner[parent_root]
                trees[owner[child_id]].roots.append(child_id)
                following.append(child_id)
        level = following
    for top, tree in trees.items():
        tree.roots.insert(0, top)
    return trees


def _delete(roots: list) -> dict[str, int]:
    """Delete every execution row with one of `roots` as its root, and their attempts,
    waits, events and inputs (the cascades)."""
    deleted: dict[str, int] = {}
    for chunk in _chunks(roots):
        _, counts = WorkflowExecution.objects.filter(root_id__in=chunk).only("id").delete()
        for model, count in counts.items():
            deleted[model] = deleted.get(model, 0) + count
    return deleted


def _chunks(items: list, size: int = CHUNK):
    for start in range(0, len(items), size):
        yield items[start : start + size]
