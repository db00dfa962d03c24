"""How a worker reads its queues: DURABLE["QUEUES"], --queue, --concurrency, --name."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

import django_durable as durable
from django_durable.models import Worker as WorkerRow
from django_durable.worker import Worker
from tests.worker_support import WorkerPool
from tests.workflows_app.worker_workflows import gpu_step, reports


def test_each_queue_takes_its_concurrency_and_poll_interval_from_settings(settings):
    settings.DURABLE = {
        "QUEUES": {
            "default": {"concurrency": 3, "poll_interval": 2.0},
            "reports": {"concurrency": 1, "poll_interval": 0.5},
        }
    }
    worker = Worker()
    assert {name: slot.concurrency for name, slot in worker.slots.items()} == {
        "default": 3,
        "reports": 1,
    }
    assert worker.slots["reports"].poll_interval == 0.5
    assert worker.poll_interval == 0.5  # the shortest one decides how often it looks


def test_queues_and_concurrency_given_to_the_worker_override_settings(settings):
    settings.DURABLE = {"QUEUES": {"default": {"concurrency": 3}}}
    worker = Worker(["reports"], concurrency=7, name="named")
    assert list(worker.slots) == ["reports"]
    assert worker.slots["reports"].concurrency == 7
    assert worker.slots["reports"].poll_interval == 1.0  # the queue defaults apply
    assert worker.name == "named"


def test_concurrency_below_one_is_refused():
    with pytest.raises(CommandError, match="at least 1"):
        call_command("durable_worker", "--concurrency", "0")


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_only_its_queues_and_registers_under_its_name(tmp_path):
    on_default = durable.start("tests.hello")
    on_reports = durable.start(reports)
    moves_to_gpu = durable.start(gpu_step)
    pool = WorkerPool(tmp_path)
    try:
        worker = pool.start(name="reports-only", queues=["reports"], burst=True)
        assert worker.wait() == 0, pool.report()
    finally:
        pool.close()
    assert durable.get_execution(on_reports).status == "completed"
    assert durable.get_execution(on_default).status == "pending"
    gpu = durable.get_execution(moves_to_gpu)
    assert (gpu.status, gpu.run_queue) == ("pending", "gpu")
    assert "Worker reports-only started: queues reports(" in worker.log()
    assert not WorkerRow.objects.filter(name="reports-only").exists()  # removed on exit
