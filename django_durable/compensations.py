"""Sagas: undoing the completed steps of an execution that failed.

When an execution fails (a step out of retries, its workflow timeout, too many
interruptions) or is cancelled with `compensate=True`, the door (`executions.finish`)
asks `plan` what its completed steps left to undo: every completed attempt of a step
that has a compensation, in its own rows and in its parallel branches and foreach
items, newest first. With anything to undo the execution becomes `compensating`
instead, and workers claim it like any work: each compensation runs as an attempt
(`is_compensation`, `compensation_for`) with its own retry policy, and its result is
appended to `compensation_results` in the transaction that closes that attempt, so a
compensation interrupted by a crash runs again and one that completed never does.
"""

from typing import Any

from . import registry
from .dsl import Step, Workflow
from .dsl.graph import Graph
from .errors import UnknownWorkflow
from .forks import Unit, parent_context
from .models import ExecutionKind, ExecutionStatus, StepExecution, StepStatus, WorkflowExecution


def plan(execution: WorkflowExecution) -> list[dict]:
    """What compensating `execution` means, newest completed step first. Each entry
    names the step, its compensation, and the row whose context the compensation gets.
    Rows of the same root are the execution's own and its members' (a child workflow
    is its own root)."""
    try:
        definition = registry.get(execution.workflow_name)
    except UnknownWorkflow:  # nothing here knows its compensations
        return []
    if not _compensates_anything(definition):
        return []
    completed = (
        StepExecution.objects.filter(
            execution__root_id=execution.root_id,
            status=StepStatus.COMPLETED,
            is_compensation=False,
        )
        .order_by("-completed_at", "-started_at")
        .values_list("step_name", "execution_id")
    )
    entries = []
    for step_name, row_id in completed:
        if step_name not in definition.graph.nodes:
            continue  # a step that was renamed since: nothing to run for it
        compensation = definition.compensation_for(step_name)
        if compensation is not None:
            entries.append(
                {"step": step_name, "compensation": compensation.name, "row": str(row_id)}
            )
    return entries


def _compensates_anything(definition: Workflow) -> bool:
    return any(getattr(node, "compensate", None) for node in definition.graph.nodes.values())


class Compensation(Step):
    """A plan entry's compensation, run as an attempt: it gets the context of the row
    that ran the step (the execution's, a branch's), or for a foreach item the item's
    arguments, `(ctx, item, index)`. What it returns is not kept."""

    def run(self, ctx: dict, unit: Unit) -> None:
        row = _row(unit.execution, unit.entry["row"])
        if row.kind == ExecutionKind.ITEM:
            self.fn(parent_context(row), row.input, row.item_index)
        else:
            self.fn(row.context)


class CompensationUnit(Unit):
    """Where a compensation runs: its execution, and the plan entry it undoes."""

    def __init__(self, execution: WorkflowExecution, graph: Graph, entry: dict) -> None:
        super().__init__(execution, graph, entry["step"])
        self.entry = entry


def _row(execution: WorkflowExecution, row_id: str) -> WorkflowExecution:
    if row_id == str(execution.id):
        return execution
    return WorkflowExecution.objects.get(id=row_id)


def next_entry(execution: WorkflowExecution) -> dict | None:
    """The plan entry to undo next, or None when every one has a result."""
    done = len(execution.compensation_results)
    return execution.compensation_plan[done] if done < len(execution.compensation_plan) else None


def entry_after(execution: WorkflowExecution) -> dict | None:
    """The plan entry after the one running now, or None if it is the last."""
    following = len(execution.compensation_results) + 1
    plan = execution.compensation_plan
    return plan[following] if following < len(plan) else None


def compensation(definition: Workflow, entry: dict) -> Compensation:
    """The compensation to run for a plan entry, with its own policies."""
    own = definition.compensation_for(entry["step"])
    return Compensation(
        fn=own.fn, name=own.name, retry=own.retry, timeout=own.timeout, queue=own.queue
    )


def result(entry: dict, error: dict | None) -> dict:
    """A compensation's entry in `compensation_results` (SPEC's shape)."""
    outcome: dict[str, Any] = {"status": "completed" if error is None else "failed"}
    if error is not None:
        outcome["error"] = {"type": error.get("type", ""), "message": error.get("message", "")}
    return {"step": entry["step"], "compensation": entry["compensation"], "result": outcome}


def final_status(results: list[dict]) -> str:
    """Compensated if every compensation completed, else compensation_failed."""
    failed = any(entry["result"]["status"] != "completed" for entry in results)
    return ExecutionStatus.COMPENSATION_FAILED if failed else ExecutionStatus.COMPENSATED
