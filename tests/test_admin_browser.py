"""The admin in a real headless Chromium: the overview, executions and their pages,
answering inputs, sending events, schedules; screenshots for docs/admin.md."""

import os
import shutil
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

import django_durable as durable
from django_durable.models import PendingInput, WorkflowExecution
from django_durable.testing import run_until_idle
from tests.worker_support import wait_for
from tests.workflows_app.admin_workflows import details, failing, payment, refund
from tests.workflows_app.workflows import hello as tests_hello

ACTIVE_NOT_WAITING = ("pending", "running", "compensating")

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason="Debian chromium is not installed (.ci/run installs it)",
)


@pytest.fixture
def page(live_server, monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the ORM calls made by
    # the test itself are still synchronous and safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.set_default_timeout(15_000)
        yield page
        browser.close()


def log_in(page, live_server) -> None:
    get_user_model().objects.create_superuser("admin", "admin@example.com", "secret")
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "secret")
    page.click("input[type=submit]")
    page.wait_for_selector("#content")


def run_action_on_first_row(page, action: str) -> str:
    """Tick the list's first row, run an admin action on it; the message it shows."""
    page.check("#result_list tbody input.action-select")
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist")
    return page.locator(".messagelist").inner_text()


@pytest.mark.django_db(transaction=True)
def test_admin_lists_an_execution_and_shows_its_steps_and_pending_input(page, live_server):
    execution_id = durable.start(refund, {"order": 7})
    run_until_idle()
    log_in(page, live_server)

    page.goto(f"{live_server.url}/admin/django_durable/workflowexecution/")
    row = page.locator("#result_list tbody tr").first
    assert "admin_browser.refund" in row.inner_text()
    assert "Waiting" in row.inner_text()

    page.goto(f"{live_server.url}/admin/django_durable/workflowexecution/{execution_id}/change/")
    body = page.locator("#content").inner_text()
    assert "ask_manager" in body
    assert "Approve the refund?" in body


@pytest.mark.django_db(transaction=True)
def test_admin_cancel_action_cancels_the_selected_execution(page, live_server):
    execution_id = durable.start(refund, {"order": 8})
    run_until_idle()
    log_in(page, live_server)

    page.goto(f"{live_server.url}/admin/django_durable/workflowexecution/")
    assert "1 execution(s) cancelled." in run_action_on_first_row(page, "cancel_executions")
    assert durable.get_execution(execution_id).status == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_execution_page_shows_branches_items_and_compensations_in_order(page, live_server):
    from tests.workflows_app.control_workflows import order_saga

    execution_id = durable.start(order_saga, {"items": ["mug", "pot"], "out_of_stock": "pot"})
    run_until_idle()
    assert durable.get_execution(execution_id).status == "compensated"
    log_in(page, live_server)

    page.goto(f"{live_server.url}/admin/django_durable/workflowexecution/")
    listed = page.locator("#result_list tbody tr")
    assert listed.count() == 1  # the workflow, not its branches and items
    assert "order_saga" in listed.first.inner_text()

    page.goto(f"{live_server.url}/admin/django_durable/workflowexecution/{execution_id}/change/")
    rows = page.locator("table.durable-timeline tbody tr")
    texts = [rows.nth(index).inner_text() for index in range(rows.count())]
    steps = [text.split("\t")[0] for text in texts]
    assert steps[0] == "book_flight"
    assert steps.index("prepare/notify_warehouse") > steps.index("prepare")
    items = [text for text in texts if "item 0" in text or "item 1" in text]
    assert [("item 0" in text) for text in items][:1] == [True]
    undoing = [step for step in steps if "(undoes" in step]
    assert undoing[-1] == "cancel_flight (undoes book_flight)"
    assert page.locator("table.durable-timeline tr.compensation").count() == len(undoing)


@pytest.mark.django_db(transaction=True)
def test_a_step_that_started_a_child_links_to_it(page, live_server):
    from tests.workflows_app.child_workflows import order

    execution_id = durable.start(order, {"order_id": 7, "email": "a@x"})
    run_until_idle()
    [payment, _] = durable.list_children(execution_id)
    log_in(page, live_server)

    page.goto(f"{live_server.url}/admin/django_durable/workflowexecution/{execution_id}/change/")
    link = page.locator("table.durable-timeline a.child").first
    assert link.inner_text() == f"child {str(payment.id)[:8]}"
    link.click()
    page.wait_for_selector("table.durable-timeline")
    assert str(payment.id) in page.url
    assert "charge" in page.locator("table.durable-timeline").inner_text()


@pytest.mark.django_db(transaction=True)
def test_schedules_are_listed_and_can_be_disabled(page, live_server):
    from django_durable import schedules

    schedules.create_schedule("nightly-report", "tests.sched.plain_report", "0 2 * * *")
    log_in(page, live_server)

    page.goto(f"{live_server.url}/admin/django_durable/schedule/")
    row = page.locator("#result_list tbody tr").first
    assert "nightly-report" in row.inner_text()
    assert "1 schedule(s) disabled." in run_action_on_first_row(page, "disable")
    schedule = schedules.get_schedule("nightly-report")
    assert (schedule.enabled, schedule.next_run_at) == (False, None)


@pytest.mark.django_db(transaction=True)
def test_a_person_approves_from_the_inbox_and_the_workflow_completes(page, live_server):
    execution_id = durable.start(refund, {"order": 9})
    run_until_idle()
    log_in(page, live_server)

    page.goto(f"{live_server.url}/admin/django_durable/pendinginput/")
    row = page.locator("#result_list tbody tr").first
    assert "Approve the refund?" in row.inner_text()
    row.locator("a", has_text="Answer").click()
    page.wait_for_selector("button[value=approved]")
    page.click("button[value=approved]")
    page.wait_for_selector(".messagelist")
    assert "Answered 'manager'." in page.locator(".messagelist").inner_text()
    run_until_idle()
    execution = durable.get_execution(execution_id)
    assert (execution.status, execution.context["paid"]) == ("completed", True)


# -- a person's round: overview, approval, a form, an event, a schedule --------------------
#
# With DURABLE_SCREENSHOTS=<directory> set, these tests also save the screenshots shown
# in docs/admin.md (`DURABLE_SCREENSHOTS=docs/images python3 dev.py test -k browser`).


def screenshot(page, name: str) -> None:
    directory = os.environ.get("DURABLE_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=True)


@pytest.mark.django_db(transaction=True)
def test_overview_then_approve_and_a_real_worker_completes_it(page, live_server, workers):
    from tests.workflows_app.control_workflows import order_saga

    execution_id = durable.start(refund, {"order": 10})
    durable.start(order_saga, {"items": ["mug", "pot"], "out_of_stock": "pot"})
    durable.start(failing, {})
    durable.start(tests_hello, {"name": "ada"})
    worker = workers.start(concurrency=2)
    wait_for(
        lambda: durable.get_execution(execution_id).status == "waiting",
        "the refund to wait for its approval",
        report=workers.report,
    )
    wait_for(
        lambda: WorkflowExecution.objects.filter(status__in=ACTIVE_NOT_WAITING).count() == 0,
        "everything else to finish",
        report=workers.report,
    )
    log_in(page, live_server)

    page.click("text=Overview")
    page.wait_for_selector("text=Pending inputs", timeout=15_000)
    overview = page.locator("#content").inner_text()
    assert "admin_browser.failing" in overview
    assert "card <b>declined</b> by the bank" in overview  # escaped, shown as text
    assert "Approve the refund?" in overview
    assert worker.name in overview
    screenshot(page, "overview")

    page.goto(f"{live_server.url}/admin/django_durable/workflowexecution/{execution_id}/change/")
    assert (
        page.locator("svg.durable-diagram [data-node=ask_manager]").get_attribute("data-status")
        == "waiting"
    )
    page.goto(f"{live_server.url}/admin/django_durable/pendinginput/")
    page.locator("#result_list a", has_text="Answer").first.click()
    page.wait_for_selector("button[value=approved]")
    screenshot(page, "approval")
    page.click("button[value=approved]")
    page.wait_for_selector(".messagelist")
    wait_for(
        lambda: durable.get_execution(execution_id).status == "completed",
        "the worker to complete the approved refund",
        report=workers.report,
    )
    page.goto(f"{live_server.url}/admin/django_durable/workflowexecution/{execution_id}/change/")
    assert "Completed" in page.locator(".fieldBox.field-status_badge").inner_text()
    diagram = page.locator("svg.durable-diagram")
    for node in ("ask_manager", "pay_refund"):
        assert diagram.locator(f"[data-node={node}]").get_attribute("data-status") == "completed"


@pytest.mark.django_db(transaction=True)
def test_the_saga_page_shows_its_timeline_and_diagram(page, live_server):
    from tests.workflows_app.control_workflows import order_saga

    execution_id = durable.start(order_saga, {"items": ["mug", "pot"], "out_of_stock": "pot"})
    run_until_idle()
    log_in(page, live_server)
    page.goto(f"{live_server.url}/admin/django_durable/workflowexecution/{execution_id}/change/")
    diagram = page.locator("svg.durable-diagram")
    assert diagram.locator("[data-node=book_flight]").get_attribute("data-status") == "completed"
    assert (
        diagram.locator("[data-node='undo:book_flight']").get_attribute("data-status")
        == "completed"
    )
    assert "Compensated" in page.locator(".fieldBox.field-status_badge").inner_text()
    page.locator("table.durable-compensations").wait_for()
    screenshot(page, "execution")


@pytest.mark.django_db(transaction=True)
def test_a_form_input_shows_its_validation_error_then_is_answered(page, live_server):
    execution_id = durable.start(details, {})
    run_until_idle()
    log_in(page, live_server)
    page.goto(f"{live_server.url}/admin/django_durable/pendinginput/")
    page.locator("#result_list a", has_text="Answer").first.click()
    page.fill("input[name=amount]", "12.50")
    page.click("input[value=Answer]")
    page.wait_for_selector(".errorlist")
    assert "This field is required" in page.locator(".errorlist").first.inner_text()
    page.fill("input[name=reason]", "damaged <mug>")
    page.click("input[value=Answer]")
    page.wait_for_selector(".messagelist")
    run_until_idle()
    execution = durable.get_execution(execution_id)
    assert execution.status == "completed"
    assert execution.context["details"]["reason"] == "damaged <mug>"


@pytest.mark.django_db(transaction=True)
def test_an_event_is_sent_from_the_execution_page(page, live_server):
    execution_id = durable.start(payment, {})
    run_until_idle()
    log_in(page, live_server)
    page.goto(f"{live_server.url}/admin/django_durable/workflowexecution/{execution_id}/change/")
    page.click("a.button:has-text('Send event')")
    page.fill("input[name=name]", "paid")
    page.fill("textarea[name=payload]", "{not json")
    page.click("input[type=submit]")
    page.wait_for_selector(".errorlist")
    page.fill("textarea[name=payload]", '{"amount": "12.50"}')
    page.click("input[type=submit]")
    page.wait_for_selector(".messagelist")
    assert "Sent 'paid'." in page.locator(".messagelist").inner_text()
    run_until_idle()
    assert durable.get_execution(execution_id).context["paid"] == {"amount": "12.50"}


@pytest.mark.django_db(transaction=True)
def test_a_schedule_is_triggered_from_the_admin(page, live_server):
    from django_durable import schedules

    made = schedules.create_schedule("hourly-report", "tests.sched.plain_report", "0 * * * *")
    log_in(page, live_server)
    page.goto(f"{live_server.url}/admin/django_durable/schedule/")
    assert "1 run(s) started." in run_action_on_first_row(page, "trigger")
    assert WorkflowExecution.objects.filter(schedule=made).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_user_without_the_permission_cannot_answer(page, live_server):
    durable.start(refund, {"order": 11})
    run_until_idle()
    viewer = get_user_model().objects.create_user("viewer", password="secret", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_pendinginput"))
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "viewer")
    page.fill("#id_password", "secret")
    page.click("input[type=submit]")
    page.wait_for_selector("#content")
    page.goto(f"{live_server.url}/admin/django_durable/pendinginput/")
    assert "Approve the refund?" in page.locator("#result_list").inner_text()
    pending = PendingInput.objects.get()
    response = page.goto(
        f"{live_server.url}/admin/django_durable/pendinginput/{pending.pk}/answer/"
    )
    assert response.status == 403
    assert PendingInput.objects.get().status == "pending"
