"""The admin's overview page and `health.check`: what they show, who may see them, and
that a page load runs the same queries however many executions there are."""

import json
import uuid
from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.db import OperationalError, connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

import django_durable as durable
from django_durable import clock, health, schedules, workflow
from django_durable.models import (
    ExecutionStatus,
    PendingInput,
    Schedule,
    Worker,
    WorkflowExecution,
)
from django_durable.testing import run_until_idle
from django_durable.waits import wait_for_approval

pytestmark = pytest.mark.django_db

OVERVIEW = "admin:django_durable_overview_changelist"
XSS = "card <script>alert('x')</script> declined"


def charge(ctx):
    raise ValueError(XSS)


def ask(ctx):
    return {**ctx, "ok": wait_for_approval("manager", prompt="Ship <b>order 7</b>?")}


def noop(ctx):
    return ctx


fails = workflow("overview.charge", [charge])
asks = workflow("overview.ship", [ask])
quick = workflow("overview.quick", [noop])


@pytest.fixture(autouse=True)
def _cold_cache():
    """The page's counts are cached: every test starts and ends without them."""
    cache.clear()
    yield
    cache.clear()


def client_with(*codenames: str, username: str = "viewer") -> Client:
    user = get_user_model().objects.create_user(username, password="pw", is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer() -> Client:
    """May view executions and answer inputs."""
    return client_with(
        "view_workflowexecution", "view_pendinginput", "respond_pendinginput", "view_schedule"
    )


def live_worker(name: str = "host-1:42:abc", queues=("default",), concurrency: int = 4) -> Worker:
    now = clock.now()
    return Worker.objects.create(
        name=name,
        host="host-1",
        pid=42,
        queues=list(queues),
        concurrency=concurrency,
        started_at=now - timedelta(hours=1),
        last_seen_at=now,
    )


def execution(**fields) -> WorkflowExecution:
    """A row written directly (no workflow runs it): a finished one unless told."""
    fields.setdefault("workflow_name", "overview.history")
    fields.setdefault("status", ExecutionStatus.COMPLETED)
    fields.setdefault("created_at", clock.now())
    return WorkflowExecution.objects.create(**fields)


def history(count: int, offset: int = 0) -> None:
    """`count` rows of every kind the page reads: finished, waiting, failed (with an
    error), running and held, pending inputs, schedules."""
    now = clock.now()
    statuses = ["completed", "completed", "waiting", "failed", "running", "pending", "cancelled"]
    rows = []
    for index in range(count):
        status = statuses[index % len(statuses)]
        row_id = uuid.uuid4()
        rows.append(
            WorkflowExecution(
                id=row_id,
                root_id=row_id,
                workflow_name=f"overview.bulk{(index + offset) % 30}",
                status=status,
                created_at=now - timedelta(minutes=index * 7),
                error={"type": "KeyError", "message": f"missing {index}"}
                if status == "failed"
                else None,
                locked_by="host-1:42:abc" if status == "running" else None,
                locked_until=now + timedelta(minutes=5) if status == "running" else None,
            )
        )
    WorkflowExecution.objects.bulk_create(rows, batch_size=500)
    waiting = [row for row in rows if row.status == "waiting"]
    PendingInput.objects.bulk_create(
        PendingInput(
            execution=row,
            root=row,
            step_seq=1,
            step_name="ask",
            input_name="approve",
            input_type="approval",
            prompt=f"question {index}",
            created_at=row.created_at,
        )
        for index, row in enumerate(waiting)
    )
    Schedule.objects.bulk_create(
        Schedule(
            name=f"bulk-{offset}-{index}",
            workflow_name="overview.quick",
            cron="0 * * * *",
            next_run_at=now + timedelta(minutes=index + 1),
            created_at=now,
            updated_at=now,
        )
        for index in range(max(1, count // 20))
    )


def get_overview(client: Client):
    response = client.get(reverse(OVERVIEW))
    assert response.status_code == 200
    return response


# -- what the page shows ---------------------------------------------------------------------


def test_the_page_shows_counts_failures_inputs_workers_schedules_and_health(viewer):
    for _ in range(3):
        durable.start(quick, {})
    failed_id = durable.start(fails, {})
    durable.start(asks, {})
    run_until_idle()
    worker = live_worker()
    execution(status=ExecutionStatus.RUNNING, locked_by=worker.name,
              locked_until=clock.now() + timedelta(minutes=5))  # fmt: skip
    schedules.create_schedule("nightly-report", quick, "0 2 * * *")
    Schedule.objects.create(
        name="broken-feed",
        workflow_name="overview.quick",
        cron="* * * * *",
        enabled=False,
        consecutive_failures=10,
        auto_disabled_at=clock.now(),
        created_at=clock.now(),
        updated_at=clock.now(),
    )

    response = get_overview(viewer)
    body = response.content.decode()
    context = response.context

    # Counts by status (workflows: 3 + 1 + 1 + the one written directly).
    by_status = {row["status"]: (row["recent"], row["total"]) for row in context["by_status"]}
    assert by_status["completed"] == ("3", "3")
    assert by_status["failed"] == ("1", "1")
    assert by_status["waiting"] == ("1", "1")
    assert by_status["running"] == ("1", "1")
    assert "?status__exact=failed" in body
    by_workflow = {row["name"]: row for row in context["by_workflow"]["rows"]}
    assert by_workflow["overview.quick"]["total"] == "3"
    assert by_workflow["overview.charge"]["failed"] == "1"
    assert "?workflow_name__exact=overview.charge" in body
    assert "as of" in body and "cached for 60 s" in body

    # Active counts, live.
    active = {cell["status"]: cell["count"] for cell in context["active"]}
    assert active == {"running": "1", "waiting": "1", "pending": "0", "compensating": "0"}
    assert context["inputs_waiting"] == "1"

    # The failure: its workflow, its error, a link to its page.
    (failure,) = context["failures"]
    assert failure["workflow_name"] == "overview.charge"
    assert failure["error_type"] == "ValueError"
    assert failure["error_message"] == XSS
    assert reverse("admin:django_durable_workflowexecution_change", args=[failed_id]) in body

    # The pending input: its workflow, its prompt (escaped), a link to answer it.
    pending = PendingInput.objects.get()
    assert "overview.ship" in body
    assert "Ship &lt;b&gt;order 7&lt;/b&gt;?" in body
    assert reverse("admin:django_durable_pendinginput_answer", args=[pending.pk]) in body

    # The worker, its queues and its load; the schedules.
    assert worker.name in body
    (shown,) = context["workers"]
    assert (shown["live"], shown["load"], shown["queues"]) == (True, "1 / 4", "default")
    assert "nightly-report" in body and "0 2 * * *" in body
    assert "broken-feed" not in body  # disabled: not among the next runs...
    assert "1 disabled after failing too often" in body  # ...but counted

    # The health line.
    assert 'id="durable-health"' in body
    assert context["health"]["status"] == "healthy"
    assert "all 7 checks passed" in body


def test_an_error_message_with_markup_is_escaped(viewer):
    durable.start(fails, {})
    run_until_idle()
    body = get_overview(viewer).content.decode()
    assert "<script>alert" not in body
    assert "card &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; declined" in body


def test_a_degraded_health_is_spelled_out(viewer):
    # Work is ready and no worker is live.
    execution(status=ExecutionStatus.PENDING, ready=True, run_at=clock.now() - timedelta(hours=1))
    response = get_overview(viewer)
    assert response.context["health"]["status"] == "unhealthy"
    body = response.content.decode()
    assert "checks failed" in body and "No live worker" in body


def test_the_count_links_filter_the_executions_list(viewer):
    execution(status=ExecutionStatus.FAILED)
    execution(status=ExecutionStatus.FAILED, created_at=clock.now() - timedelta(days=3))
    execution(status=ExecutionStatus.COMPLETED)
    context = get_overview(viewer).context
    failed = next(row for row in context["by_status"] if row["status"] == "failed")
    assert (failed["recent"], failed["total"]) == ("1", "2")
    listed = viewer.get(failed["url"])
    assert listed.status_code == 200 and listed.context["cl"].result_count == 2
    listed = viewer.get(failed["recent_url"])
    assert listed.status_code == 200 and listed.context["cl"].result_count == 1


def test_counts_are_cached_and_say_so(viewer):
    execution()
    first = get_overview(viewer).context
    execution()  # not counted until the cache expires...
    second = get_overview(viewer).context
    total = {row["status"]: row["total"] for row in second["by_status"]}
    assert total["completed"] == "1"
    assert second["counts"]["as_of"] == first["counts"]["as_of"]
    cache.clear()  # ...or is cleared
    third = get_overview(viewer).context
    assert {row["status"]: row["total"] for row in third["by_status"]}["completed"] == "2"


def test_live_counts_stop_at_the_cap_and_show_the_cached_count_beyond(viewer, monkeypatch):
    from django_durable import admin_overview

    monkeypatch.setattr(admin_overview, "LIVE_CAP", 3)
    for _ in range(5):
        execution(status=ExecutionStatus.WAITING)
    execution(status=ExecutionStatus.RUNNING)
    response = get_overview(viewer)
    active = {cell["status"]: cell for cell in response.context["active"]}
    assert (active["waiting"]["count"], active["waiting"]["cached"]) == ("≈5", True)
    assert (active["running"]["count"], active["running"]["cached"]) == ("1", False)
    assert "More than 3 now" in response.content.decode()


def test_an_empty_installation_reads_well(viewer):
    body = get_overview(viewer).content.decode()
    assert "No failed workflow." in body
    assert "Nothing waits for an answer." in body
    assert "No worker is running." in body
    assert "No enabled schedule." in body


# -- who sees it ------------------------------------------------------------------------------


def test_a_user_without_view_permission_gets_403():
    client = client_with("view_pendinginput", username="nobody")
    assert client.get(reverse(OVERVIEW)).status_code == 403


def test_an_anonymous_visitor_is_sent_to_the_login():
    response = Client().get(reverse(OVERVIEW))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_viewing_needs_no_answer_permission():
    client = client_with("view_workflowexecution", username="reader")
    durable.start(asks, {})
    run_until_idle()
    body = get_overview(client).content.decode()
    assert "Ship &lt;b&gt;order 7&lt;/b&gt;?" in body
    assert ">Answer</a>" not in body


def test_the_page_is_linked_from_the_admin_index_and_the_app_index(viewer):
    url = reverse(OVERVIEW)
    index = viewer.get(reverse("admin:index")).content.decode()
    assert f'href="{url}"' in index and ">Overview</a>" in index
    app = viewer.get(reverse("admin:app_list", args=["django_durable"])).content.decode()
    assert f'href="{url}"' in app


def test_the_index_does_not_link_it_for_users_who_may_not_view_it():
    client = client_with("view_schedule", username="scheduler")
    index = client.get(reverse("admin:index")).content.decode()
    assert reverse(OVERVIEW) not in index


def test_the_page_has_no_add_change_or_delete():
    from django.contrib import admin

    from django_durable.models import Overview

    model_admin = admin.site._registry[Overview]
    request = mock.Mock()
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    assert [pattern.name for pattern in model_admin.get_urls()] == [
        "django_durable_overview_changelist"
    ]


# -- queries -----------------------------------------------------------------------------------


def page_queries(client: Client) -> tuple[int, int]:
    """Statements of a page load with a cold cache, then with a warm one."""
    cache.clear()
    with CaptureQueriesContext(connection) as cold:
        get_overview(client)
    with CaptureQueriesContext(connection) as warm:
        get_overview(client)
    return len(cold), len(warm)


def test_a_page_load_runs_the_same_queries_for_10_executions_as_for_many(viewer):
    live_worker()
    history(10)
    few = page_queries(viewer)
    history(600, offset=10)  # more of everything than the page lists
    live_worker("host-2:7:def")
    many = page_queries(viewer)
    assert few == many
    cold, warm = many
    assert warm == cold - 1  # the cached aggregate


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL")
def test_a_million_executions_need_no_more_queries(viewer):
    live_worker()
    history(10)
    few = page_queries(viewer)
    with connection.cursor() as cursor:
        cursor.execute(MILLION_SQL)
        cursor.execute("ANALYZE durable_execution")
    assert WorkflowExecution.objects.filter(workflow_name__startswith="million.").count() == (
        1_000_000
    )
    assert page_queries(viewer) == few


# One statement: mostly completed, a fifth waiting, some failed, created over 90 days.
MILLION_SQL = """
INSERT INTO durable_execution (
    id, workflow_name, workflow_version, status, queue, run_queue, priority, input, context,
    error, current_step, attempt, step_seq, recoveries, created_at, completed_at,
    compensation_results, compensation_plan, kind, root_id, ready
)
SELECT
    id, 'million.w' || (g % 7), '1',
    CASE WHEN g % 5 = 0 THEN 'waiting' WHEN g % 97 = 0 THEN 'failed' ELSE 'completed' END,
    'default', 'default', 0, '{}'::jsonb, '{}'::jsonb,
    CASE WHEN g % 97 = 0 AND g % 5 <> 0
        THEN '{"type": "KeyError", "message": "lost"}'::jsonb END,
    's1', 1, 1, 0, now() - interval '90 days' * (g / 1000000.0),
    CASE WHEN g % 5 <> 0 THEN now() - interval '90 days' * (g / 1000000.0) END,
    '[]'::jsonb, '[]'::jsonb, 'workflow', id, false
FROM (SELECT g, gen_random_uuid() AS id FROM generate_series(1, 1000000) AS g) AS rows
"""


# -- health.check -----------------------------------------------------------------------------


def checks(report: dict) -> dict[str, dict]:
    return {item["name"]: item for item in report["checks"]}


def test_healthy_with_a_live_worker_and_nothing_late():
    live_worker()
    execution()  # history is fine
    execution(status=ExecutionStatus.PENDING, ready=True, run_at=clock.now())  # just ready
    report = health.check()
    assert report["status"] == "healthy", report
    assert [item["name"] for item in report["checks"]] == list(health.CHECK_NAMES)
    assert all(item["ok"] and item["severity"] is None for item in report["checks"])
    assert report["live_workers"] == 1
    json.dumps(report)  # JSON-able as it is


def test_no_worker_and_nothing_to_do_is_degraded():
    report = health.check()
    assert report["status"] == "degraded"
    assert not checks(report)["workers"]["ok"]
    assert "No live worker" in checks(report)["workers"]["detail"]


def test_no_worker_while_work_is_ready_is_unhealthy():
    execution(status=ExecutionStatus.PENDING, ready=True, run_at=clock.now())
    report = health.check()
    assert report["status"] == "unhealthy"
    assert checks(report)["workers"]["severity"] == "unhealthy"
    assert "1 ready" in checks(report)["workers"]["detail"]


def test_a_worker_that_stopped_heartbeating_is_not_live():
    worker = live_worker()
    Worker.objects.filter(pk=worker.pk).update(last_seen_at=clock.now() - timedelta(minutes=10))
    report = health.check()
    assert report["live_workers"] == 0
    assert not checks(report)["workers"]["ok"]


def test_a_lease_lapsed_long_ago_is_degraded_a_fresh_one_is_not():
    live_worker()
    now = clock.now()
    execution(status="running", locked_by="gone:1", locked_until=now - timedelta(seconds=1))
    assert health.check(now)["status"] == "healthy"
    execution(status="running", locked_by="gone:1", locked_until=now - timedelta(minutes=10))
    report = health.check(now)
    assert report["status"] == "degraded"
    lease = checks(report)["leases"]
    assert not lease["ok"] and "gone:1" in lease["detail"]


def test_a_stale_lease_with_no_worker_is_unhealthy():
    execution(status="running", locked_by="gone:1", locked_until=clock.now() - timedelta(hours=1))
    report = health.check()
    assert report["status"] == "unhealthy"
    assert not checks(report)["leases"]["ok"]


def test_ready_work_waiting_too_long_names_the_queue_no_worker_serves():
    live_worker(queues=["default"])
    late = clock.now() - health.LATE_AFTER - timedelta(minutes=1)
    execution(status="pending", ready=True, run_at=late, run_queue="emails")
    report = health.check()
    assert report["status"] == "degraded"
    ready = checks(report)["ready_work"]
    assert not ready["ok"] and "no live worker serves emails" in ready["detail"]


def test_a_timer_not_woken_is_degraded():
    live_worker()
    execution(status="waiting", ready=False, run_at=clock.now() - timedelta(hours=1))
    report = health.check()
    assert report["status"] == "degraded"
    assert not checks(report)["timers"]["ok"]


def test_a_stuck_compensation_is_degraded():
    live_worker()
    stuck = execution(status="compensating", ready=False, run_at=None)
    report = health.check()
    assert report["status"] == "degraded"
    compensation = checks(report)["compensations"]
    assert not compensation["ok"] and str(stuck.id)[:8] in compensation["detail"]


def test_an_overdue_schedule_is_degraded():
    live_worker()
    Schedule.objects.create(
        name="late",
        workflow_name="overview.quick",
        cron="0 * * * *",
        next_run_at=clock.now() - timedelta(hours=2),
        created_at=clock.now(),
        updated_at=clock.now(),
    )
    report = health.check()
    assert report["status"] == "degraded"
    assert "late" in checks(report)["schedules"]["detail"]


def test_check_reads_the_time_it_is_given():
    live_worker()
    later = clock.now() + timedelta(hours=1)  # the worker's heartbeat is an hour old then
    report = health.check(later)
    assert report["checked_at"] == later.isoformat()
    assert report["live_workers"] == 0


def test_a_database_that_does_not_answer_is_unhealthy():
    with mock.patch.object(health._Probe, "database", side_effect=OperationalError("gone")):
        report = health.check()
    assert report["status"] == "unhealthy"
    assert checks(report)["database"]["detail"] == "Could not check: OperationalError: gone"
    assert all(not item["ok"] for item in report["checks"])
    json.dumps(report)


def test_health_runs_the_same_queries_however_many_rows():
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            health.check()
        return len(captured)

    empty = queries()
    assert empty == 8  # as health's docstring says
    live_worker()
    history(300)
    assert queries() == empty


def test_a_failing_check_is_reported_not_raised():
    live_worker()
    with mock.patch.object(
        health._Probe, "timers", side_effect=OperationalError("timeout"), autospec=True
    ):
        with transaction.atomic():
            report = health.check()
    assert checks(report)["timers"]["severity"] == "unhealthy"
    assert report["status"] == "unhealthy"
