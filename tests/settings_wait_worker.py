"""Settings for the `durable_worker` subprocess of tests/test_wait_worker_process.py.

`tests.settings` with a 30-second poll interval, so a prompt wake-up can only come from
LISTEN/NOTIFY, plus the workflow that test runs: a worker process only knows the
workflows imported when it starts, and this one lives in no app's `workflows.py`.
Importing `django_durable` and defining a workflow needs no configured Django, so the
definition can live here; its step imports the waits only when it runs.
"""

import os

from django_durable import workflow
from tests.settings import *  # noqa: F403
from tests.settings import DURABLE

POLL_SECONDS = 30.0

DURABLE = {**DURABLE, "QUEUES": {"default": {"concurrency": 2, "poll_interval": POLL_SECONDS}}}


def await_paid(ctx):
    from django_durable.waits import wait_for_event

    paid = wait_for_event("paid")
    return {**ctx, "paid": paid, "worker_pid": os.getpid()}


event_wait = workflow("wait_worker.event_wait", [await_paid])
