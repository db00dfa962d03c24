"""The admin in a real headless Chromium: log in, find an execution, cancel it."""

import shutil

import pytest
from django.contrib.auth import get_user_model

import django_durable as durable
from django_durable import workflow
from django_durable.testing import run_until_idle
from django_durable.waits import wait_for_approval

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason="Debian chromium is not installed (.ci/run installs it)",
)


def ask_manager(ctx):
    return {**ctx, "decision": wait_for_approval("manager", prompt="Approve the refund?")}


def pay_refund(ctx):
    return {**ctx, "paid": ctx["decision"] == "approved"}


refund = workflow("admin_browser.refund", [ask_manager, pay_refund])


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
        page = browser.new_page()
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
