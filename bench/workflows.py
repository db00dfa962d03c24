"""The bench's workflows: trivial steps, so what is measured is the engine's own cost.

`bench.one` has one step; `bench.chain` has DURABLE_BENCH_STEPS steps (set by
bench_steps.py from --steps, for itself and the workers it spawns). bench/suite.py uses
`bench.one`, `bench.chain10`, `bench.chain100` and `bench.wait` (one step parked on the
event `go`).
"""

import os

from django_durable import step, workflow

STEPS = int(os.environ.get("DURABLE_BENCH_STEPS", "5"))


def bump(ctx):
    """Count the steps run, so the bench can check every step ran once."""
    return {**ctx, "n": ctx.get("n", 0) + 1}


one = workflow("bench.one", [step(bump, name="s1")])
chain = workflow("bench.chain", [step(bump, name=f"s{i}") for i in range(1, STEPS + 1)])

# bench/suite.py: chains of fixed lengths (whatever DURABLE_BENCH_STEPS says), and a step
# that waits for an event, for the send_event -> resume latency.
chain10 = workflow("bench.chain10", [step(bump, name=f"s{i}") for i in range(1, 11)])
chain100 = workflow("bench.chain100", [step(bump, name=f"s{i}") for i in range(1, 101)])


def await_go(ctx):
    """Park until the event `go` arrives; the step then runs again from its top."""
    from django_durable.waits import wait_for_event

    return {**ctx, "go": wait_for_event("go")}


waiter = workflow("bench.wait", [step(await_go, name="wait")])


# bench/bench_control.py: a parallel block of 10 no-op branches, and foreach blocks of
# no-op items, one workflow `bench.foreach<C>` per foreach concurrency C listed in
# DURABLE_BENCH_FOREACH_CONCURRENCY (set by bench_control.py for itself and its workers).
from django_durable import foreach, parallel  # noqa: E402

BRANCHES = 10


def noop(ctx):
    """Change nothing: the context stays as stored."""
    return None


parallel10 = workflow(
    "bench.parallel10",
    [parallel(*[step(noop, name=f"b{i}") for i in range(BRANCHES)], name="fan")],
)


def item_numbers(ctx):
    """The foreach's items: 0 .. ctx["items"] - 1."""
    return list(range(ctx["items"]))


def echo_item(ctx, item, index):
    """A no-op item: its result is the item itself, so the bench can check the order."""
    return item


FOREACH_CONCURRENCIES = sorted(
    {int(c) for c in os.environ.get("DURABLE_BENCH_FOREACH_CONCURRENCY", "10,50").split(",") if c}
)
foreach_workflows = {
    c: workflow(f"bench.foreach{c}", [foreach("items", item_numbers, echo_item, concurrency=c)])
    for c in FOREACH_CONCURRENCIES
}
