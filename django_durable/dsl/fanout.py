"""Nodes that fan out: `parallel` runs several nodes at once on the same context,
`foreach` runs one function per item of a list, at most `concurrency` at a time.

Each branch or item is a member: an execution row of its own that any worker can claim,
so members really run at the same time on several threads or hosts, wait on their own,
and a crash re-runs only the unfinished ones. The block's node runs twice: the first
time it forks (`Fork`, which parks the execution), and once the last member finished it
runs again and joins their results into the context.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import BlockFailed, NonRetryableError, WorkflowDefinitionError
from . import names
from .graph import Graph, MemberResult, Unit
from .moves import Fork, Goto, Member, Move
from .nodes import Runnable, Step, as_node, step

PARALLEL_ERRORS = ("fail_fast", "complete_all")
FOREACH_ERRORS = ("fail_fast", "continue")
RESULTS = "__results__"


class ForeachItemsInvalid(NonRetryableError):
    """A foreach's `items(ctx)` did not give a list."""


def _with_results(ctx: dict, key: str, value: Any) -> dict:
    return {**ctx, RESULTS: {**(ctx.get(RESULTS) or {}), key: value}}


def _first_failure(results: Sequence[MemberResult]) -> MemberResult | None:
    """The member whose failure failed the block: the earliest to fail (the others that
    did not finish were cancelled because of it)."""
    failed = [result for result in results if result.status == "failed"]
    return min(failed, key=lambda r: (r.finished_at is None, r.finished_at, r.index), default=None)


class Parallel(Runnable):
    """Run `nodes` at the same time, each on the block's context, then go on."""

    def __init__(
        self,
        *nodes: Any,
        into: Callable[[dict, dict], Any] | None = None,
        on_error: str = "fail_fast",
        name: str | None = None,
    ) -> None:
        if not nodes:
            raise WorkflowDefinitionError("parallel() needs at least one node.")
        if on_error not in PARALLEL_ERRORS:
            raise WorkflowDefinitionError(
                f"parallel(): on_error must be one of {', '.join(PARALLEL_ERRORS)}, "
                f"not {on_error!r}."
            )
        if into is not None and not callable(into):
            raise WorkflowDefinitionError("parallel(): into must be a function (ctx, results).")
        self.nodes = [as_node("parallel", node) for node in nodes]
        keys = [node.result_key for node in self.nodes]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise WorkflowDefinitionError(
                f"parallel(): two branches give results under {duplicates[0]!r}; rename one "
                "with step(..., returns=...) or step(..., name=...)."
            )
        self.into = into
        self.on_error = on_error
        self.name = name or f"parallel_{self.nodes[0].name}"

    def compile(self, graph: Graph, prefix: str, follow: str | None) -> str:
        node_id = graph.add(prefix + self.name, self, follow)
        graph.parts[node_id] = {
            index: graph.compile([node], f"{node_id}/") for index, node in enumerate(self.nodes)
        }
        return node_id

    def run(self, ctx: dict, unit: Unit) -> Any:
        results = unit.members()
        if results is None:
            entries = unit.graph.parts[unit.node_id]
            members = tuple(
                Member(entry=entries[index], index=index, context=ctx)
                for index in range(len(self.nodes))
            )
            return Fork("branch", members)
        by_key = {self.nodes[result.index].result_key: result for result in results}
        failure = _first_failure(results) if self.on_error == "fail_fast" else None
        if failure is not None:
            key = self.nodes[failure.index].result_key
            raise BlockFailed(
                f"Parallel branch {key!r} failed: {failure.error.get('type')}: "
                f"{failure.error.get('message')}",
                unit=key,
                error=failure.error,
            )
        if self.into is None:
            merged = {key: result.as_result() for key, result in by_key.items()}
            return {**ctx, RESULTS: {**(ctx.get(RESULTS) or {}), **merged}}
        returned = self.into(ctx, {key: tuple(r.as_result()) for key, r in by_key.items()})
        if isinstance(returned, Goto):
            return unit.graph.jump(unit.node_id, returned.node_id, returned.context)
        return returned


def parallel(
    *nodes: Any,
    into: Callable[[dict, dict], Any] | None = None,
    on_error: str = "fail_fast",
    name: str | None = None,
) -> Parallel:
    """Run `nodes` concurrently, each as its own durable unit on the same context.

    Results go to `ctx["__results__"][name] = ["ok", data]` or `["error", {"type",
    "message"}]`, or to `into(ctx, results)`, which returns the next context or a
    `goto(...)`. `fail_fast` fails the block at the first error; `complete_all` waits
    for every branch."""
    return Parallel(*nodes, into=into, on_error=on_error, name=name)


@dataclass
class ForeachItem(Step):
    """What runs for one item: the foreach's function with the block's context, the
    item and its index. Its result is kept as the member's context `{"result": ...}`."""

    def run(self, ctx: dict, unit: Unit) -> dict:
        return {"result": self.fn(unit.parent_context(), unit.item, unit.index)}


class Foreach(Runnable):
    """Run `fn(ctx, item, index)` for each item of `items(ctx)`, at most `concurrency`
    at once, and keep the results in item order."""

    def __init__(
        self,
        name: str,
        items: Callable[[dict], Sequence],
        fn: Callable | Step,
        *,
        concurrency: int = 10,
        on_error: str = "fail_fast",
    ) -> None:
        names.checked_name(name, "A foreach name", names.NODE_ID)
        if not callable(items):
            raise WorkflowDefinitionError(f"foreach {name!r}: items must be a function of ctx.")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise WorkflowDefinitionError(
                f"foreach {name!r}: concurrency must be a positive int, not {concurrency!r}."
            )
        if on_error not in FOREACH_ERRORS:
            raise WorkflowDefinitionError(
                f"foreach {name!r}: on_error must be one of {', '.join(FOREACH_ERRORS)}, "
                f"not {on_error!r}."
            )
        inner = fn if isinstance(fn, Step) else step(fn)
        self.item = ForeachItem(
            fn=inner.fn,
            name=inner.name,
            retry=inner.retry,
            timeout=inner.timeout,
            compensate=inner.compensate,
            queue=inner.queue,
        )
        self.name = name
        self.items = items
        self.concurrency = concurrency
        self.on_error = on_error

    def compile(self, graph: Graph, prefix: str, follow: str | None) -> str:
        node_id = graph.add(prefix + self.name, self, follow)
        graph.parts[node_id] = {"item": self.item.compile(graph, f"{node_id}/", None)}
        return node_id

    def run(self, ctx: dict, unit: Unit) -> Move | dict:
        results = unit.members()
        if results is None:
            items = self.items(ctx)
            if not isinstance(items, list | tuple):
                raise ForeachItemsInvalid(
                    f"Foreach {self.name!r}: items(ctx) gave a {type(items).__name__}; it "
                    "must give a list."
                )
            if items:
                entry = unit.graph.parts[unit.node_id]["item"]
                members = tuple(
                    Member(entry=entry, index=index, item=item) for index, item in enumerate(items)
                )
                return Fork("item", members, self.concurrency)
            results = []
        failure = _first_failure(results) if self.on_error == "fail_fast" else None
        if failure is not None:
            raise BlockFailed(
                f"Foreach {self.name!r}: item {failure.index} failed: "
                f"{failure.error.get('type')}: {failure.error.get('message')}",
                unit=f"{self.name}[{failure.index}]",
                error=failure.error,
            )
        ordered = sorted(results, key=lambda result: result.index)
        return _with_results(ctx, self.name, [result.as_result() for result in ordered])


def foreach(
    name: str,
    items: Callable[[dict], Sequence],
    fn: Callable | Step,
    *,
    concurrency: int = 10,
    on_error: str = "fail_fast",
) -> Foreach:
    """Run `fn(ctx, item, index)` once per item of `items(ctx)`, each a durable unit, at
    most `concurrency` at once across all workers; results in item order in
    `ctx["__results__"][name]`. `fn` may be a `step(...)` for its retry, timeout,
    queue and compensation."""
    return Foreach(name, items, fn, concurrency=concurrency, on_error=on_error)
