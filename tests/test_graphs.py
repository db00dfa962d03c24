"""Graphs of durable values on the engine: values as rows with revisions, computes run
by the workers (in-process here, and by real worker processes at the end), recomputed
once per change, unset when their condition stops holding."""

from datetime import timedelta

import pytest

import django_durable as durable
from django_durable import Retry, graphs
from django_durable.errors import ExecutionNotActive, InvalidInput, ValueNotSet
from django_durable.models import GraphValue, StepExecution, WorkflowExecution
from django_durable.testing import advance_clock, run_until_idle
from tests.worker_support import IS_POSTGRES, wait_for
from tests.workflows_app.graph_workflows import sums

pytestmark = pytest.mark.django_db

calls: list[dict] = []


def counted_add(values):
    calls.append(dict(values))
    return values["x"] + values["y"]


def flaky_double(values):
    if values["x"] < 0:
        raise ValueError("negative")
    return values["x"] * 2


counting = graphs.graph(
    "graph_tests_counting",
    "v1",
    [graphs.input("x"), graphs.input("y"), graphs.compute("sum", ["x", "y"], counted_add)],
)
doubling = graphs.graph(
    "graph_tests_doubling",
    "v1",
    [
        graphs.input("x"),
        graphs.compute("double", ["x"], flaky_double, retry=Retry(max_attempts=2, base=1)),
    ],
)


@pytest.fixture(autouse=True)
def _no_calls():
    calls.clear()


def attempts(execution_id, node) -> int:
    return StepExecution.objects.filter(execution_id=execution_id, step_name=node).count()


def test_a_new_execution_waits_with_nothing_set():
    eid = graphs.start(sums)
    execution = WorkflowExecution.objects.get(id=eid)
    assert (execution.kind, execution.status, execution.ready) == ("graph", "waiting", False)
    assert graphs.values(eid) == {}
    loaded = graphs.load(eid)
    assert {name: value.revision for name, value in loaded.values.items()} == {
        "x": 0,
        "y": 0,
        "sum": 0,
        "large_value_alert": 0,
    }


def test_computes_run_once_their_upstream_is_set():
    eid = graphs.start("tests_sums", "v1")
    graphs.set_value(eid, "x", 12)
    run_until_idle()
    assert graphs.values(eid) == {"x": 12}  # sum needs y too
    graphs.set_value(eid, "y", 2)
    run_until_idle()
    assert graphs.values(eid) == {"x": 12, "y": 2, "sum": 14}
    assert graphs.get_value(eid, "sum") == 14
    with pytest.raises(ValueNotSet):
        graphs.get_value(eid, "large_value_alert")
    assert WorkflowExecution.objects.get(id=eid).status == "waiting"


def test_a_changed_input_recomputes_once_and_the_same_value_changes_nothing():
    eid = graphs.start(counting)
    graphs.set_value(eid, "x", 1)
    graphs.set_value(eid, "y", 2)
    run_until_idle()
    assert calls == [{"x": 1, "y": 2}]
    graphs.set_value(eid, "y", 2)  # the same value
    run_until_idle()
    assert len(calls) == 1
    graphs.set_value(eid, "y", 5)
    run_until_idle()
    assert calls[-1] == {"x": 1, "y": 5, "sum": 3} and len(calls) == 2
    loaded = graphs.load(eid)
    assert (loaded.values["sum"].value, loaded.values["sum"].revision) == (6, 2)
    assert loaded.values["y"].revision == 2


def test_a_burst_of_changes_is_computed_on_the_latest_values():
    eid = graphs.start(counting)
    for value in range(10):
        graphs.set_value(eid, "x", value)
    graphs.set_value(eid, "y", 100)
    run_until_idle()
    assert calls == [{"x": 9, "y": 100}]
    assert graphs.get_value(eid, "sum") == 109


def test_a_compute_whose_condition_stops_holding_is_unset_and_so_is_its_downstream():
    eid = graphs.start(sums)
    graphs.set_value(eid, "x", 40)
    graphs.set_value(eid, "y", 2)
    run_until_idle()
    assert graphs.values(eid) == {"x": 40, "y": 2, "sum": 42, "large_value_alert": "alert"}
    graphs.set_value(eid, "y", -10)
    run_until_idle()
    assert graphs.values(eid) == {"x": 40, "y": -10, "sum": 30}
    graphs.unset_value(eid, "x")
    run_until_idle()
    assert graphs.values(eid) == {"y": -10}
    assert graphs.load(eid).values["sum"].revision == 0


def test_a_result_computed_from_values_changed_meanwhile_is_dropped():
    def racing_add(values):
        if values["y"] == 1:  # another request sets y while this compute runs
            graphs.set_value(eid, "y", 2)
        return values["x"] + values["y"]

    racing = graphs.graph(
        "graph_tests_racing",
        "v1",
        [graphs.input("x"), graphs.input("y"), graphs.compute("sum", ["x", "y"], racing_add)],
    )
    eid = graphs.start(racing)
    graphs.set_value(eid, "x", 10)
    graphs.set_value(eid, "y", 1)
    run_until_idle()
    assert graphs.get_value(eid, "sum") == 12
    assert graphs.load(eid).values["sum"].revision == 1  # the stale 11 was never stored


def test_a_failing_compute_is_retried_then_keeps_its_value_and_its_error():
    eid = graphs.start(doubling)
    graphs.set_value(eid, "x", 4)
    run_until_idle()
    assert graphs.get_value(eid, "double") == 8
    graphs.set_value(eid, "x", -1)
    run_until_idle()
    advance_clock(timedelta(seconds=5))
    run_until_idle()
    assert attempts(eid, "double") == 3  # 1 success, then 2 failed attempts
    row = GraphValue.objects.get(execution_id=eid, node="double")
    assert (row.value, row.error["message"]) == (8, "negative")
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "waiting"  # the graph goes on: the compute failed, not it
    run_until_idle()
    assert attempts(eid, "double") == 3  # not tried again until x changes
    graphs.set_value(eid, "x", 5)
    run_until_idle()
    assert graphs.get_value(eid, "double") == 10
    assert GraphValue.objects.get(execution_id=eid, node="double").error is None


def test_bad_calls_are_refused_and_change_nothing():
    eid = graphs.start(sums)
    with pytest.raises(InvalidInput, match="only inputs are set"):
        graphs.set_value(eid, "sum", 3)
    with pytest.raises(graphs.UnknownNode):
        graphs.set_value(eid, "z", 3)
    with pytest.raises(InvalidInput):
        graphs.set_value(eid, "x", object())
    with pytest.raises(graphs.UnknownNode):
        graphs.get_value(eid, "z")
    with pytest.raises(durable.ExecutionNotFound):
        graphs.values("00000000-0000-0000-0000-000000000000")
    assert GraphValue.objects.count() == 0
    durable.cancel(eid)
    with pytest.raises(ExecutionNotActive):
        graphs.set_value(eid, "x", 1)


def test_get_value_waits_for_a_newer_revision_or_gives_up():
    eid = graphs.start(sums)
    graphs.set_value(eid, "x", 1)
    assert graphs.get_value(eid, "x", newer_than=0) == 1
    with pytest.raises(ValueNotSet, match="beyond revision 1"):
        graphs.get_value(eid, "x", newer_than=1, wait=timedelta(milliseconds=50))


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_computes_and_get_value_wait_wakes(workers):
    workers.start()
    eid = graphs.start(sums)
    graphs.set_value(eid, "x", 30)
    graphs.set_value(eid, "y", 15)
    assert graphs.get_value(eid, "large_value_alert", wait=timedelta(seconds=30)) == "alert"
    assert graphs.get_value(eid, "sum") == 45


@pytest.mark.skipif(not IS_POSTGRES, reason="two workers need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_two_workers_and_a_burst_of_changes_end_on_the_final_inputs(workers):
    workers.start(concurrency=2)
    workers.start(concurrency=2)
    eid = graphs.start(sums)
    graphs.set_value(eid, "y", 1)
    for value in range(100):
        graphs.set_value(eid, "x", value)
    wait_for(
        lambda: graphs.values(eid).get("sum") == 100,
        "the sum of the final inputs",
        report=workers.report,
    )
    runs = list(
        StepExecution.objects.filter(execution_id=eid, step_name="sum").order_by("started_at")
    )
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert earlier.completed_at <= later.started_at  # one run of a node at a time


def test_typed_values_keep_their_type_and_the_same_value_is_not_a_change():
    from decimal import Decimal

    eid = graphs.start(counting)
    graphs.set_value(eid, "x", Decimal("1.50"))
    graphs.set_value(eid, "y", Decimal("2.25"))
    run_until_idle()
    assert graphs.get_value(eid, "sum") == Decimal("3.75")
    graphs.set_value(eid, "x", Decimal("1.50"))
    assert graphs.load(eid).values["x"].revision == 1
    graphs.set_value(eid, "y", True)
    graphs.set_value(eid, "y", 1)  # 1 == True in Python, but not the same value
    assert graphs.load(eid).values["y"].revision == 3


def test_the_admin_page_of_a_graph_execution_shows_its_values(admin_client):
    eid = graphs.start(sums)
    graphs.set_value(eid, "x", "<b>12</b>")
    response = admin_client.get(f"/admin/django_durable/workflowexecution/{eid}/change/")
    html = response.content.decode()
    assert response.status_code == 200 and 'class="durable-values"' in html
    assert "&lt;b&gt;12&lt;/b&gt;" in html and "<b>12</b>" not in html
    assert "not set" in html  # y, sum and the alert
    listed = admin_client.get("/admin/django_durable/workflowexecution/").content.decode()
    assert "tests_sums" in listed


@pytest.mark.django_db(transaction=True)
def test_a_compute_interrupted_by_a_crash_runs_again_on_another_worker(workers, tmp_path):
    from tests.workflows_app.graph_workflows import slow

    first = workers.start(lease_seconds=3, heartbeat_seconds=1)
    eid = graphs.start(slow)
    graphs.set_value(eid, "dir", str(tmp_path))
    graphs.set_value(eid, "x", 4)
    wait_for(
        lambda: list(tmp_path.glob("started-*")), "the compute to start", report=workers.report
    )
    first.kill()
    (tmp_path / "go").touch()
    workers.start(lease_seconds=3, heartbeat_seconds=1)
    assert graphs.get_value(eid, "times_ten", wait=timedelta(seconds=60)) == 40
    runs = {path.name: path.read_text().count("ran") for path in tmp_path.glob("started-*")}
    assert runs == {
        f"started-{first.pid}": 1,
        **{name: 1 for name in runs if str(first.pid) not in name},
    }
    assert len(runs) == 2  # the killed worker's run, and the one that finished it
    assert graphs.load(eid).values["times_ten"].revision == 1


def test_a_cancelled_graph_execution_is_resumed_and_computes_again():
    eid = graphs.start(sums)
    graphs.set_value(eid, "x", 30)
    graphs.set_value(eid, "y", 15)
    durable.cancel(eid, "paused by support")
    durable.resume(eid)
    run_until_idle()
    assert graphs.values(eid)["large_value_alert"] == "alert"
    graphs.set_value(eid, "y", 1)
    run_until_idle()
    assert graphs.values(eid) == {"x": 30, "y": 1, "sum": 31}


def test_a_graph_cancelled_before_it_computed_anything_is_not_resumed():
    eid = graphs.start(sums)
    durable.cancel(eid)
    with pytest.raises(durable.ExecutionNotResumable, match="start a new one"):
        durable.resume(eid)


def test_the_doctor_does_not_report_a_graph_waiting_for_its_next_value():
    from django_durable import doctor

    eid = graphs.start(sums)
    graphs.set_value(eid, "x", 1)
    run_until_idle()
    assert WorkflowExecution.objects.get(id=eid).status == "waiting"
    assert [finding for finding in doctor.diagnose() if finding.subject == str(eid)] == []


def test_the_admin_offers_resume_for_a_cancelled_graph(admin_client):
    eid = graphs.start(sums)
    graphs.set_value(eid, "x", 1)
    durable.cancel(eid)
    html = admin_client.get(f"/admin/django_durable/workflowexecution/{eid}/change/").content
    assert f"/admin/django_durable/workflowexecution/{eid}/resume/".encode() in html
