"""A worker killed after a step started a child: the step runs again elsewhere and
finds that child, never starting a second one."""

from pathlib import Path

import pytest

import django_durable as durable
from django_durable.models import WorkflowExecution
from django_durable.orchestration import list_children
from tests.worker_support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SHORT_LEASE = {"lease_seconds": 3, "heartbeat_seconds": 1}


def test_a_step_killed_after_starting_a_child_starts_no_second_one(workers, tmp_path):
    eid = durable.start("tests.child.naps_after_starting", {"email": "a@x", "marks": str(tmp_path)})
    first = workers.start(concurrency=1, **SHORT_LEASE)
    mark = Path(tmp_path) / "started-child"
    wait_for(mark.exists, "the step to start its child", report=workers.report)
    first.kill()
    first.wait()
    workers.start(concurrency=1, **SHORT_LEASE)
    parent = WorkflowExecution.objects.filter(id=eid)
    wait_for(
        lambda: parent.get().status == "completed", "the parent to complete", report=workers.report
    )
    [child] = list_children(eid)
    assert str(child.id) == mark.read_text() == parent.get().context["child"]
    child_row = WorkflowExecution.objects.filter(id=child.id)
    wait_for(lambda: child_row.get().status == "completed", "the child to complete")
