"""The bench's workflows: trivial steps, so what is measured is the engine's own cost.

`bench.one` has one step; `bench.chain` has DURABLE_BENCH_STEPS steps (set by
bench_steps.py from --steps, for itself and the workers it spawns).
"""

import os

from django_durable import step, workflow

STEPS = int(os.environ.get("DURABLE_BENCH_STEPS", "5"))


def bump(ctx):
    """Count the steps run, so the bench can check every step ran once."""
    return {**ctx, "n": ctx.get("n", 0) + 1}


one = workflow("bench.one", [step(bump, name="s1")])
chain = workflow("bench.chain", [step(bump, name=f"s{i}") for i in range(1, STEPS + 1)])
