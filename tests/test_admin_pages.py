"""The execution page (timeline with logs and tracebacks, compensations, resume) and the
schedule form (cron and zone checked, next runs previewed), through the test client."""

import logging

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

import django_durable as durable
from django_durable import schedules, step, workflow
from django_durable.models import Schedule, WorkflowExecution
from django_durable.testing import run_until_idle

pytestmark = pytest.mark.django_db

log = logging.getLogger("tests.admin_pages")


def shouts_html(ctx):
    log.warning("<script>alert('log')</script> charged")
    print("<b>printed</b>")
    raise ValueError("<img src=x onerror=alert(1)> declined")


def reserve(ctx):
    return {**ctx, "reserved": True}


def unreserve(ctx):
    return {**ctx, "unreserved": True}


def explode(ctx):
    raise RuntimeError("out of stock")


html_errors = workflow("pages.html_errors", [shouts_html])
saga = workflow("pages.saga", [step(reserve, compensate=unreserve), explode])


@pytest.fixture
def operator():
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("op", "o@x", "pw"))
    return client


def page(client, eid) -> str:
    response = client.get(reverse("admin:django_durable_workflowexecution_change", args=[eid]))
    assert response.status_code == 200
    return response.content.decode()


def test_the_timeline_shows_logs_and_the_traceback_escaped(operator):
    eid = durable.start(html_errors, {})
    run_until_idle()
    html = page(operator, eid)
    assert "&lt;script&gt;alert(&#x27;log&#x27;)&lt;/script&gt; charged" in html
    assert "&lt;b&gt;printed&lt;/b&gt;" in html
    assert "ValueError: &lt;img src=x onerror=alert(1)&gt; declined" in html
    assert "<script>alert" not in html and "<img src=x" not in html
    assert 'class="durable-logs"' in html and "2 line(s)" in html
    assert "Traceback (most recent call last)" in html  # folded under the error


def test_compensation_results_are_a_table(operator):
    eid = durable.start(saga, {})
    run_until_idle()
    assert WorkflowExecution.objects.get(id=eid).status == "compensated"
    html = page(operator, eid)
    table = html[html.index('class="durable-compensations"') :]
    assert "<td>reserve</td><td>unreserve</td><td>completed</td>" in table


def test_a_failed_workflow_is_resumed_from_its_page(operator):
    eid = durable.start(html_errors, {})
    run_until_idle()
    url = reverse("admin:django_durable_workflowexecution_resume", args=[eid])
    assert url in page(operator, eid)
    assert operator.get(url).status_code == 200  # the confirmation
    assert operator.post(url).status_code == 302
    assert WorkflowExecution.objects.get(id=eid).status == "pending"
    again = operator.post(url)  # no longer failed: refused on the page, not a crash
    assert again.status_code == 200 and "only failed or cancelled" in again.content.decode()


def test_the_execution_page_shows_its_diagram(operator):
    eid = durable.start(saga, {})
    run_until_idle()
    html = page(operator, eid)
    assert 'class="durable-diagram"' in html
    assert 'data-node="reserve"' in html and 'data-node="explode"' in html


# -- schedules ---------------------------------------------------------------------------


def add_schedule(client, **overrides):
    data = {
        "name": "nightly-report",
        "workflow_name": "pages.saga",
        "cron": "0 3 * * *",
        "timezone": "Europe/Paris",
        "input": "{}",
        "queue": "",
        "enabled": "on",
        **overrides,
    }
    return client.post(reverse("admin:django_durable_schedule_add"), data)


def test_a_bad_cron_or_zone_is_shown_on_its_field(operator):
    bad_cron = add_schedule(operator, cron="61 * * * *")
    assert bad_cron.status_code == 200
    assert "is not a valid cron expression" in bad_cron.content.decode()
    bad_zone = add_schedule(operator, timezone="Mars/Olympus")
    assert "is not a known time zone" in bad_zone.content.decode()
    assert not Schedule.objects.exists()


def test_a_schedule_added_in_the_admin_is_due_and_previews_its_next_runs(operator):
    assert add_schedule(operator).status_code == 302
    made = schedules.get_schedule("nightly-report")
    assert made.next_run_at is not None and made.timezone == "Europe/Paris"
    html = operator.get(reverse("admin:django_durable_schedule_change", args=[made.pk]))
    text = html.content.decode()
    assert text.count("03:00 CET") + text.count("03:00 CEST") == 5


def test_editing_the_cron_moves_the_next_run(operator):
    made = schedules.create_schedule("hourly", "pages.saga", "0 * * * *")
    url = reverse("admin:django_durable_schedule_change", args=[made.pk])
    data = {
        "workflow_name": "pages.saga",
        "cron": "30 6 * * 1",
        "timezone": "UTC",
        "input": "{}",
        "queue": "",
        "enabled": "on",
    }
    assert operator.post(url, data).status_code == 302
    moved = schedules.get_schedule("hourly")
    assert (moved.cron, moved.next_run_at.weekday(), moved.next_run_at.hour) == ("30 6 * * 1", 0, 6)


def test_a_declared_schedule_keeps_its_cron_from_the_code(operator):
    made = schedules.create_schedule("declared-one", "pages.saga", "0 1 * * *")
    Schedule.objects.filter(pk=made.pk).update(declared=True)
    response = operator.get(reverse("admin:django_durable_schedule_change", args=[made.pk]))
    form = response.context["adminform"].form
    assert "cron" not in form.fields and "enabled" in form.fields
