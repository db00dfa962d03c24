"""The pending-inputs inbox in the admin: ordering, the answer forms, permissions, CSRF."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

import django_durable as durable
from django_durable import workflow
from django_durable.models import PendingInput, WorkflowExecution
from django_durable.testing import run_until_idle
from django_durable.waits import wait_for_approval, wait_for_choice, wait_for_form, wait_for_text

pytestmark = pytest.mark.django_db


def approve(ctx):
    return {**ctx, "decision": wait_for_approval("manager", prompt="Refund <b>40 EUR</b>?")}


def pick(ctx):
    return {**ctx, "size": wait_for_choice("size", [1, True, "1"])}


def pick_many(ctx):
    return {**ctx, "toppings": wait_for_choice("toppings", ["ham", "egg", "kale"], multiple=True)}


def describe(ctx):
    return {**ctx, "note": wait_for_text("note", prompt="Why?")}


def fill(ctx):
    fields = [
        {"name": "amount", "type": "number", "required": True},
        {"name": "when", "type": "date", "required": False},
        {"name": "ok", "type": "boolean"},
        {"name": "tier", "type": "select", "options": ["gold", 2], "required": True},
        {"name": "email", "type": "email", "required": False},
    ]
    return {**ctx, "form": wait_for_form("details", fields=fields, metadata={"case": 7})}


asks_approval = workflow("inbox.approval", [approve])
asks_choice = workflow("inbox.choice", [pick])
asks_many = workflow("inbox.many", [pick_many])
asks_text = workflow("inbox.text", [describe])
asks_form = workflow("inbox.form", [fill])


@pytest.fixture
def responder():
    user = get_user_model().objects.create_user("ana", password="pw", is_staff=True)
    for codename in ("view_pendinginput", "respond_pendinginput"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def asked(definition, input=None) -> PendingInput:
    eid = durable.start(definition, input or {})
    run_until_idle()
    return PendingInput.objects.get(execution_id=eid)


def answer_url(pending: PendingInput) -> str:
    return reverse("admin:django_durable_pendinginput_answer", args=[pending.pk])


def finished(pending: PendingInput) -> WorkflowExecution:
    run_until_idle()
    return WorkflowExecution.objects.get(id=pending.execution_id)


def test_the_inbox_lists_pending_first_oldest_first(responder):
    first = asked(asks_text)
    second = asked(asks_text)
    done = asked(asks_text)
    durable.provide_input(done.execution_id, "note", "done")
    page = responder.get(reverse("admin:django_durable_pendinginput_changelist"))
    assert page.status_code == 200
    rows = [row.pk for row in page.context["cl"].result_list]
    assert rows == [first.pk, second.pk, done.pk]
    assert page.content.decode().count(">Answer</a>") == 2


def test_an_approval_is_answered_with_its_buttons(responder):
    pending = asked(asks_approval)
    page = responder.get(answer_url(pending))
    body = page.content.decode()
    assert "Refund &lt;b&gt;40 EUR&lt;/b&gt;?" in body  # the prompt is shown, escaped
    assert 'value="approved"' in body and 'value="rejected"' in body
    response = responder.post(answer_url(pending), {"decision": "approved"})
    assert response.status_code == 302
    pending.refresh_from_db()
    assert (pending.status, pending.responded_by) == ("completed", "ana")
    assert finished(pending).context["decision"] == "approved"


def test_a_single_choice_gives_back_the_typed_value_offered(responder):
    pending = asked(asks_choice)
    body = responder.get(answer_url(pending)).content.decode()
    assert body.count('type="radio"') == 3
    responder.post(answer_url(pending), {"answer": "1"})  # the second choice: True
    assert finished(pending).context["size"] is True


def test_a_multi_choice_takes_several(responder):
    pending = asked(asks_many)
    responder.post(answer_url(pending), {"answer": ["0", "2"]})
    assert finished(pending).context["toppings"] == ["ham", "kale"]


def test_free_text(responder):
    pending = asked(asks_text)
    responder.post(answer_url(pending), {"answer": "because"})
    assert finished(pending).context["note"] == "because"


def test_a_form_shows_its_fields_and_its_errors_inline(responder):
    pending = asked(asks_form)
    body = responder.get(answer_url(pending)).content.decode()
    assert 'type="number"' in body and 'type="date"' in body and "&quot;case&quot;: 7" in body
    invalid = responder.post(answer_url(pending), {"amount": "lots", "tier": "0"})
    assert invalid.status_code == 200
    assert "field &#x27;amount&#x27; expects a number" in invalid.content.decode()
    assert PendingInput.objects.get(pk=pending.pk).status == "pending"
    response = responder.post(
        answer_url(pending), {"amount": "12.5", "when": "2026-12-24", "ok": "on", "tier": "1"}
    )
    assert response.status_code == 302
    form = finished(pending).context["form"]
    assert form["amount"] == Decimal("12.5")
    assert form["tier"] == 2 and form["ok"] is True and str(form["when"]) == "2026-12-24"


def test_an_input_answered_meanwhile_is_refused_on_the_form(responder):
    pending = asked(asks_text)
    durable.provide_input(pending.execution_id, "note", "first")
    response = responder.post(answer_url(pending), {"answer": "second"})
    assert response.status_code == 200
    assert "no longer pending" in response.content.decode()


def test_without_the_permission_the_answer_page_is_forbidden():
    pending = asked(asks_approval)
    user = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_pendinginput"))
    client = Client()
    client.force_login(user)
    assert client.get(answer_url(pending)).status_code == 403
    assert client.post(answer_url(pending), {"decision": "approved"}).status_code == 403
    assert PendingInput.objects.get(pk=pending.pk).status == "pending"


def test_the_answer_form_is_csrf_protected():
    pending = asked(asks_approval)
    user = get_user_model().objects.create_superuser("root", "r@x", "pw")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(answer_url(pending), {"decision": "approved"}).status_code == 403
    assert PendingInput.objects.get(pk=pending.pk).status == "pending"


def test_a_schedule_can_be_run_now_from_the_admin():
    from django_durable import schedules

    made = schedules.create_schedule("nightly", "inbox.text", "0 2 * * *")
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("boss", "b@x", "pw"))
    response = client.post(
        reverse("admin:django_durable_schedule_changelist"),
        {"action": "trigger", "_selected_action": [made.pk]},
    )
    assert response.status_code == 302
    assert WorkflowExecution.objects.filter(schedule=made).count() == 1


# -- sending events and cancelling from an execution's page -----------------------------


def waits_for_paid(ctx):
    from django_durable.waits import wait_for_event

    return {**ctx, "paid": wait_for_event("paid")}


asks_paid = workflow("inbox.paid", [waits_for_paid])


@pytest.fixture
def operator():
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("op", "o@x", "pw"))
    return client


def control_url(name, execution_id):
    return reverse(f"admin:django_durable_workflowexecution_{name}", args=[execution_id])


def test_an_event_with_a_json_payload_is_sent_from_the_execution_page(operator):
    eid = durable.start(asks_paid, {})
    run_until_idle()
    page = operator.get(reverse("admin:django_durable_workflowexecution_change", args=[eid]))
    assert control_url("send_event", eid) in page.content.decode()
    bad = operator.post(control_url("send_event", eid), {"name": "paid", "payload": "{oops"})
    assert bad.status_code == 200 and "Enter a valid JSON" in bad.content.decode()
    sent = operator.post(control_url("send_event", eid), {"name": "paid", "payload": '{"eur": 40}'})
    assert sent.status_code == 302
    run_until_idle()
    assert WorkflowExecution.objects.get(id=eid).context["paid"] == {"eur": 40}


def test_an_event_for_a_finished_execution_is_refused_on_the_form(operator):
    eid = durable.start(asks_paid, {})
    run_until_idle()
    durable.cancel(eid)
    refused = operator.post(control_url("send_event", eid), {"name": "paid", "payload": "1"})
    assert refused.status_code == 200
    assert "cannot receive events" in refused.content.decode()


def test_cancel_with_a_reason_from_the_execution_page(operator):
    eid = durable.start(asks_paid, {})
    run_until_idle()
    response = operator.post(control_url("cancel", eid), {"reason": "duplicate order"})
    assert response.status_code == 302
    execution = WorkflowExecution.objects.get(id=eid)
    assert (execution.status, execution.cancel_reason) == ("cancelled", "duplicate order")


def test_controls_need_the_change_permission():
    eid = durable.start(asks_paid, {})
    run_until_idle()
    user = get_user_model().objects.create_user("viewer2", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_workflowexecution"))
    client = Client()
    client.force_login(user)
    assert client.post(control_url("cancel", eid), {"reason": "x"}).status_code == 403
    assert client.get(control_url("send_event", eid)).status_code == 403
    assert WorkflowExecution.objects.get(id=eid).status == "waiting"


# -- the executions list -------------------------------------------------------------------


def test_the_list_finds_an_execution_by_a_prefix_of_its_id(operator):
    eid = durable.start(asks_paid, {})
    other = durable.start(asks_paid, {})
    changelist = reverse("admin:django_durable_workflowexecution_changelist")
    for term in (str(eid)[:8], str(eid)[:13].upper(), str(eid)):
        found = operator.get(changelist, {"q": term}).context["cl"].result_list
        assert [row.id for row in found] == [eid], term
    by_name = operator.get(changelist, {"q": "inbox.paid"}).context["cl"].result_list
    assert {row.id for row in by_name} == {eid, other}


def test_the_list_shows_a_status_badge_age_and_duration(operator):
    eid = durable.start(asks_text, {})
    run_until_idle()
    page = operator.get(reverse("admin:django_durable_workflowexecution_changelist"))
    body = page.content.decode()
    assert 'class="durable-status"' in body and "Waiting" in body
    assert str(eid)[:8] in body


def test_the_context_shows_as_readable_json_with_typed_values(operator):
    eid = durable.start(asks_text, {"total": Decimal("12.50"), "note": "<script>x</script>"})
    run_until_idle()
    page = operator.get(reverse("admin:django_durable_workflowexecution_change", args=[eid]))
    body = page.content.decode()
    assert "Decimal(12.50)" in body
    assert "&lt;script&gt;x&lt;/script&gt;" in body and "<script>x</script>" not in body
    assert 'class="durable-json"' in body


def asks_per_item(ctx, item, index):
    return wait_for_approval("ok", prompt=f"Ship {item}?")


per_item_questions = workflow(
    "inbox.per_item", [durable.foreach("ship", lambda ctx: ["a", "b"], asks_per_item)]
)


def test_answer_reaches_the_row_it_names_among_questions_sharing_a_name():
    from django_durable.inputs import answer

    eid = durable.start(per_item_questions, {})
    run_until_idle()
    first, second = PendingInput.objects.filter(root_id=eid).order_by("created_at", "id")
    assert answer(second.id, "approved", responded_by="ana") == "approved"
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("pending", "completed")
    answer(first.id, "rejected")
    run_until_idle()
    results = WorkflowExecution.objects.get(id=eid).context["__results__"]["ship"]
    by_prompt = {first.prompt: "rejected", second.prompt: "approved"}
    assert results == [["ok", by_prompt["Ship a?"]], ["ok", by_prompt["Ship b?"]]]
