"""Workflows for tests/test_signals.py."""

import os

from django_durable import Retry, signals, step, workflow
from django_durable.helpers import assign
from django_durable.inputs import wait_for_approval
from django_durable.waits import wait_for_event


def first(ctx):
    return assign(ctx, "first", True)


def approve(ctx):
    return assign(ctx, "approved", wait_for_approval("ok", prompt="Ship it?"))


def hear(ctx):
    return assign(ctx, "heard", wait_for_event("go"))


def boom(ctx):
    raise RuntimeError("always")


def reserve(ctx):
    return assign(ctx, "reserved", True)


def release(ctx):
    return assign(ctx, "released", True)


plain = workflow("signals.plain", [first])
approval = workflow("signals.approval", [first, approve])
listening = workflow("signals.listening", [hear])
retried = workflow("signals.retried", [step(boom, retry=Retry(max_attempts=2, backoff="constant"))])
doomed = workflow("signals.doomed", [step(reserve, compensate=release), boom])


def _broken_receiver(sender, **payload):
    raise ValueError("receiver bug in the worker")


# A worker process started by test_signals with this variable set has receivers that
# raise on every signal a run sends.
if os.environ.get("DURABLE_TEST_BROKEN_RECEIVERS"):
    for _signal in (
        signals.workflow_started,
        signals.step_started,
        signals.step_completed,
        signals.workflow_completed,
    ):
        _signal.connect(_broken_receiver, weak=False)
