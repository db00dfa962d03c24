"""Workflows autodiscovered from a test app, proving `workflows.py` discovery works."""

from django_durable import workflow

from . import (  # noqa: F401
    admin_workflows,
    child_workflows,
    control_workflows,
    failover_workflows,
    graph_workflows,
    log_workflows,
    scheduled_workflows,
    signal_workflows,
    worker_workflows,
)
from .crash_control_workflows import crash_parallel, crash_saga  # noqa: F401


def say_hello(ctx):
    return {**ctx, "greeting": f"hello {ctx.get('name', 'world')}"}


hello = workflow("tests.hello", [say_hello])
