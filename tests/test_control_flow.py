"""branch, decision/goto, parallel and foreach, run in-process on both databases."""

import pytest

from django_durable import (
    ExecutionNotResumable,
    WorkflowDefinitionError,
    branch,
    decision,
    executions,
    foreach,
    goto,
    parallel,
    registry,
    starting,
    workflow,
)
from django_durable.events import send_event
from django_durable.inputs import provide_input
from django_durable.models import ExecutionKind, StepExecution, WorkflowExecution
from django_durable.testing import advance_clock, run_until_idle
from tests.calls import calls
from tests.workflows_app import control_workflows as wf

pytestmark = pytest.mark.django_db


def run(definition, input):
    eid = starting.start(definition, input)
    run_until_idle()
    return WorkflowExecution.objects.get(id=eid)


def step_names(execution):
    return list(
        StepExecution.objects.filter(execution=execution)
        .order_by("started_at", "attempt")
        .values_list("step_name", flat=True)
    )


# -- branch ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "handled_by", "case_step"),
    [
        ("a.invoice", "invoice", "route/invoice/extract_invoice"),
        ("b.receipt", "receipt", "route/receipt/extract_receipt"),
        ("c.pdf", "person", "route/default/review_by_hand"),
    ],
)
def test_branch_runs_the_matching_case_then_the_node_after_it(doc, handled_by, case_step):
    execution = run(wf.documents, {"doc": doc})
    assert execution.status == "completed"
    assert execution.context["handled_by"] == handled_by
    assert execution.context["archived"] is True
    assert step_names(execution) == ["classify", "route", case_step, "archive"]


@pytest.mark.parametrize(
    ("input", "flag"),
    [
        ({"verified": True, "tier": 1}, "premium"),
        ({"verified": True}, "missing"),
        ({"verified": False}, "handled_by"),
    ],
)
def test_branches_nest_and_match_by_type_and_value(input, flag):
    execution = run(wf.nested, input)
    assert execution.status == "completed", execution.error
    assert flag in execution.context


def test_true_does_not_match_a_case_for_1():
    execution = run(wf.nested, {"verified": True, "tier": True})
    assert execution.status == "failed"
    assert execution.error["type"] == "NoBranchMatched"


def test_no_match_and_no_default_fails_with_no_branch_matched_at_once():
    execution = run(wf.strict, {"kind": "b"})
    assert execution.status == "failed"
    assert execution.error["type"] == "NoBranchMatched"
    assert "'b'" in execution.error["message"]
    assert execution.current_step == "only_a"
    assert step_names(execution) == ["only_a"]  # not retried, nothing after it ran


def test_branch_definition_errors():
    with pytest.raises(WorkflowDefinitionError, match="cases are str, int"):
        branch(lambda ctx: 1, {1.5: wf.archive})
    with pytest.raises(WorkflowDefinitionError, match="non-empty dict"):
        branch(lambda ctx: 1, {})
    with pytest.raises(WorkflowDefinitionError, match="both called"):
        branch(lambda ctx: 1, {True: wf.archive, "True": wf.done})


# -- decision ----------------------------------------------------------------------------


def test_decision_loops_back_until_done():
    execution = run(wf.looping, {"until": 4})
    assert execution.status == "completed"
    assert execution.context["rounds"] == 4
    assert step_names(execution) == ["bump", "again"] * 4 + ["archive"]


def test_a_loop_goes_back_through_the_queue_between_rounds(monkeypatch):
    claims_seen = []
    real_claim = executions.claims.claim_and_start

    def counting(*args, **kwargs):
        claimed = real_claim(*args, **kwargs)
        if claimed is not None:
            claims_seen.append(claimed)
        return claimed

    monkeypatch.setattr(executions.claims, "claim_and_start", counting)
    execution = run(wf.looping, {"until": 3})
    assert execution.context["rounds"] == 3
    assert len(claims_seen) == 3  # the start, then one claim per jump back


@pytest.mark.parametrize(
    ("amount", "route", "steps"),
    [
        (50, "auto", ["route_amount", "auto_approve", "manager_approval"]),
        (5000, "manager", ["route_amount", "manager_approval"]),
    ],
)
def test_decision_jumps_forward(amount, route, steps):
    execution = run(wf.routing, {"amount": amount})
    assert execution.status == "completed"
    assert execution.context["route"] == route
    assert step_names(execution) == steps


def test_an_unknown_literal_goto_target_is_refused_at_definition_time():
    def jumps_nowhere(ctx):
        return goto("nowhere", ctx)

    with pytest.raises(WorkflowDefinitionError, match="nowhere"):
        workflow("tests.control.bad_goto", [wf.bump, decision(jumps_nowhere)])
    assert "tests.control.bad_goto" not in [w.name for w in registry.all_workflows()]


def test_a_computed_unknown_goto_target_fails_the_decision_for_good():
    def computed(ctx):
        return goto("no" + "where", ctx)

    definition = workflow("tests.control.computed_goto", [wf.bump, decision(computed)])
    try:
        execution = run(definition, {})
    finally:
        registry.unregister(definition.name)
    assert execution.status == "failed"
    assert execution.error["type"] == "GotoUnknownNode"


# -- parallel ----------------------------------------------------------------------------


def test_parallel_results_go_to_results_under_each_name():
    execution = run(wf.dashboard, {"user_id": 7})
    assert execution.status == "completed", execution.error
    assert execution.context["__results__"] == {
        "fetch_user": ["ok", {"user": 7}],
        "orders_result": ["ok", {"orders": [1, 2]}],
    }
    assert execution.context["summary"] == ["fetch_user", "orders_result"]
    members = WorkflowExecution.objects.filter(parent=execution)
    assert sorted(m.kind for m in members) == [ExecutionKind.BRANCH] * 2
    assert {m.root_id for m in members} == {execution.id}


def test_branches_are_rows_any_worker_can_claim():
    eid = starting.start(wf.dashboard, {"user_id": 7})
    run_until_idle(max_steps=1)  # the block's node forks, nothing more
    members = WorkflowExecution.objects.filter(parent_id=eid)
    assert sorted((m.status, m.ready, m.current_step) for m in members) == [
        ("pending", True, "fetch/fetch_orders"),
        ("pending", True, "fetch/fetch_user"),
    ]
    assert WorkflowExecution.objects.get(id=eid).status == "waiting"
    run_until_idle()
    assert WorkflowExecution.objects.get(id=eid).status == "completed"


def test_fail_fast_fails_the_block_with_the_branch_error():
    execution = run(wf.dashboard, {"user_id": 7, "orders_fail": True})
    assert execution.status == "failed"
    assert execution.error["type"] == "BlockFailed"
    assert "orders service down" in execution.error["message"]


def test_fail_fast_cancels_the_other_branches_and_withdraws_their_waits():
    eid = starting.start(wf.slow_and_failing, {})
    run_until_idle()
    send_event(eid, "fail")
    run_until_idle()
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "failed"
    assert "told to fail" in execution.error["message"]
    waiting = WorkflowExecution.objects.get(parent_id=eid, current_step="race/waits_for_go")
    assert waiting.status == "cancelled"
    assert waiting.waits.get().status == "cancelled"


def test_complete_all_records_errors_as_results():
    execution = run(wf.dashboard_all, {"user_id": 7, "orders_fail": True})
    assert execution.status == "completed"
    assert execution.context["__results__"] == {
        "fetch_user": ["ok", {"user": 7}],
        "fetch_orders": ["error", {"type": "RuntimeError", "message": "orders service down"}],
    }


def test_into_gets_tuples_and_returns_the_context():
    execution = run(wf.dashboard_into, {"user_id": 3})
    assert execution.status == "completed"
    assert "__results__" not in execution.context
    assert execution.context["user"] == 3 and execution.context["orders"] == [1, 2]
    assert execution.context["done"] and execution.context["apologized"]


def test_into_may_jump():
    execution = run(wf.dashboard_into, {"user_id": 3, "orders_fail": True})
    assert execution.status == "completed"
    assert execution.context == {"user_id": 3, "orders_fail": True, "user": 3, "apologized": True}


def test_waits_inside_branches_are_answered_through_the_parent_id():
    eid = starting.start(wf.waiting_branches, {"user_id": 1})
    run_until_idle()
    assert WorkflowExecution.objects.get(id=eid).status == "waiting"
    send_event(eid, "go", {"now": True})
    provide_input(eid, "ok?", "approved")
    run_until_idle()
    assert WorkflowExecution.objects.get(id=eid).status == "waiting"  # one still naps
    advance_clock(3600)
    run_until_idle()
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "completed", execution.error
    assert execution.context["__results__"]["naps"] == ["ok", {"napped": True}]
    assert execution.context["__results__"]["waits_for_go"] == ["ok", {"go": {"now": True}}]
    assert execution.context["__results__"]["asks_person"] == ["ok", {"answer": "approved"}]


def test_parallel_inside_a_branch():
    execution = run(wf.parallel_in_branch, {"mode": "fan", "user_id": 2})
    assert execution.status == "completed"
    assert set(execution.context["__results__"]) == {"fetch_user", "fetch_orders"}


def test_foreach_inside_a_parallel():
    execution = run(wf.foreach_in_parallel, {"regions": ["eu", "us"], "user_id": 1})
    assert execution.status == "completed", execution.error
    assert execution.context["__results__"]["regions"] == [
        "ok",
        {
            "user_id": 1,
            "regions": ["eu", "us"],
            "__results__": {"regions": [["ok", "eu:0"], ["ok", "us:1"]]},
        },
    ]


def test_cancelling_the_parent_cancels_its_members():
    eid = starting.start(wf.waiting_branches, {"user_id": 1})
    run_until_idle()
    executions.cancel(eid, "changed my mind")
    members = WorkflowExecution.objects.filter(parent_id=eid)
    assert {m.status for m in members} <= {"cancelled", "completed"}
    assert not members.filter(status="waiting").exists()


def test_parallel_definition_errors():
    with pytest.raises(WorkflowDefinitionError, match="at least one"):
        parallel()
    with pytest.raises(WorkflowDefinitionError, match="on_error"):
        parallel(wf.done, on_error="ignore")
    with pytest.raises(WorkflowDefinitionError, match="returns="):
        parallel(wf.done, wf.done)


# -- foreach -----------------------------------------------------------------------------


def test_foreach_results_in_item_order_with_the_block_context():
    execution = run(wf.bulk_email, {"to": ["a@x", "b@x", "c@x"], "subject": "Hi"})
    assert execution.status == "completed", execution.error
    assert execution.context["__results__"]["send"] == [
        ["ok", {"sent": "a@x", "index": 0, "subject": "Hi"}],
        ["ok", {"sent": "b@x", "index": 1, "subject": "Hi"}],
        ["ok", {"sent": "c@x", "index": 2, "subject": "Hi"}],
    ]
    items = WorkflowExecution.objects.filter(parent=execution).order_by("item_index")
    assert [item.input for item in items] == ["a@x", "b@x", "c@x"]
    assert all(item.context == {"result": item.context["result"]} for item in items)


def test_foreach_holds_items_beyond_its_concurrency():
    eid = starting.start(wf.bulk_email, {"to": ["a", "b", "c", "d", "e"], "subject": "s"})
    run_until_idle(max_steps=1)
    items = WorkflowExecution.objects.filter(parent_id=eid).order_by("item_index")
    assert [item.ready for item in items] == [True, True, False, False, False]
    run_until_idle()
    assert WorkflowExecution.objects.get(id=eid).status == "completed"


def test_foreach_fail_fast_cancels_held_items():
    execution = run(wf.bulk_email, {"to": ["a", "b", "c", "d"], "bounce": ["a"], "subject": "s"})
    assert execution.status == "failed"
    assert execution.error["type"] == "BlockFailed"
    assert "item 0" in execution.error["message"]
    statuses = list(
        WorkflowExecution.objects.filter(parent=execution)
        .order_by("item_index")
        .values_list("status", flat=True)
    )
    assert statuses[0] == "failed"
    assert statuses[2:] == ["cancelled", "cancelled"]
    assert calls["send:c"] == calls["send:d"] == 0


def test_foreach_continue_records_errors_in_place():
    execution = run(
        wf.bulk_email_continue, {"to": ["a", "b", "c"], "bounce": ["b"], "subject": "s"}
    )
    assert execution.status == "completed"
    results = execution.context["__results__"]["send"]
    assert [r[0] for r in results] == ["ok", "error", "ok"]
    assert results[1][1] == {"type": "ValueError", "message": "b bounced"}


def test_an_empty_foreach_gives_an_empty_result_list():
    execution = run(wf.bulk_email, {"to": [], "subject": "s"})
    assert execution.status == "completed"
    assert execution.context["__results__"]["send"] == []


def test_foreach_items_that_are_not_a_list_fail_the_block():
    execution = run(wf.bulk_email, {"to": "a@x", "subject": "s"})
    assert execution.status == "failed"
    assert execution.error["type"] == "ForeachItemsInvalid"


def test_foreach_items_keep_their_own_retry_policy():
    eid = starting.start(wf.retrying_items, {"to": ["a"], "bounce": ["a"], "subject": "s"})
    run_until_idle()
    advance_clock(1)
    run_until_idle()
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "failed"
    assert calls["send:a"] == 2


def test_foreach_definition_errors():
    with pytest.raises(WorkflowDefinitionError, match="concurrency"):
        foreach("x", wf.emails, wf.send_email, concurrency=0)
    with pytest.raises(WorkflowDefinitionError, match="on_error"):
        foreach("x", wf.emails, wf.send_email, on_error="complete_all")


def test_list_executions_shows_workflows_not_their_members():
    execution = run(wf.dashboard, {"user_id": 7})
    listed = list(executions.list_executions())
    assert [e.id for e in listed] == [execution.id]


# -- reading it back ---------------------------------------------------------------------


def test_include_steps_groups_each_blocks_members_after_it():
    eid = starting.start(wf.bulk_email, {"to": ["a", "b", "c"], "subject": "s"})
    run_until_idle()
    steps = executions.get_execution(eid, include_steps=True).steps
    assert [(s.step_name, s.status, s.unit) for s in steps] == [
        ("send", "resumed", None),
        ("send/send_email", "completed", ("item", 0)),
        ("send/send_email", "completed", ("item", 1)),
        ("send/send_email", "completed", ("item", 2)),
        ("send", "completed", None),
        ("done", "completed", None),
    ]


def test_include_steps_shows_nested_members_and_compensations():
    eid = starting.start(wf.foreach_in_parallel, {"regions": ["eu", "us"], "user_id": 1})
    run_until_idle()
    steps = executions.get_execution(eid, include_steps=True).steps
    names = [s.step_name for s in steps]
    assert names[0] == "both" and names[-2:] == ["both", "summarize"]
    regions = names.index("both/regions")
    assert names[regions + 1 : regions + 3] == ["both/regions/count_region"] * 2
    assert len(steps) == 8


def test_the_last_member_to_finish_makes_the_parent_runnable_as_it_is_recorded():
    eid = starting.start(wf.dashboard, {"user_id": 7})
    assert run_until_idle(max_steps=2) == 2  # the fork, then one branch
    parent = WorkflowExecution.objects.get(id=eid)
    assert (parent.status, parent.ready) == ("waiting", False)
    assert run_until_idle(max_steps=1) == 1  # the other branch: the last one
    parent = WorkflowExecution.objects.get(id=eid)
    assert (parent.status, parent.ready) == ("waiting", True)


def test_a_block_reached_again_joins_only_its_own_members():
    definition = workflow(
        "tests.control.loop_over_block",
        [wf.bump, parallel(wf.fetch_user, name="fan"), decision(wf.again)],
    )
    try:
        execution = run(definition, {"user_id": 1, "until": 3})
    finally:
        registry.unregister(definition.name)
    assert execution.status == "completed", execution.error
    assert execution.context["rounds"] == 3
    assert WorkflowExecution.objects.filter(parent=execution).count() == 3
    assert calls["fetch_user"] == 3


# -- resuming a block ---------------------------------------------------------------------


def test_resuming_a_failed_parallel_reruns_only_the_branches_that_did_not_complete():
    eid = starting.start(wf.dashboard, {"user_id": 7, "orders_fail": True})
    run_until_idle()
    assert WorkflowExecution.objects.get(id=eid).status == "failed"
    WorkflowExecution.objects.filter(id=eid).update(context={"user_id": 7})  # fixed
    WorkflowExecution.objects.filter(parent_id=eid).update(context={"user_id": 7})
    executions.resume(eid)
    run_until_idle()
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "completed", execution.error
    assert calls["fetch_user"] == 1 and calls["fetch_orders"] == 2
    assert execution.context["__results__"]["orders_result"] == ["ok", {"orders": [1, 2]}]
    assert WorkflowExecution.objects.filter(parent_id=eid).count() == 2


def test_resuming_a_failed_foreach_keeps_completed_items_and_its_concurrency():
    eid = starting.start(
        wf.bulk_email, {"to": ["a", "b", "c", "d", "e"], "bounce": ["b"], "subject": "s"}
    )
    run_until_idle()
    assert WorkflowExecution.objects.get(id=eid).status == "failed"
    WorkflowExecution.objects.filter(id=eid).update(
        context={"to": ["a", "b", "c", "d", "e"], "subject": "s"}
    )
    executions.resume(eid)
    items = WorkflowExecution.objects.filter(parent_id=eid).order_by("item_index")
    assert [(i.status, i.ready) for i in items] == [
        ("completed", False),
        ("pending", True),
        ("pending", True),
        ("pending", False),
        ("pending", False),
    ]
    run_until_idle()
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "completed", execution.error
    assert [r[1]["sent"] for r in execution.context["__results__"]["send"]] == list("abcde")
    assert calls["send:a"] == 1 and calls["send:b"] == 2


def test_a_branch_or_item_cannot_be_resumed_on_its_own():
    eid = starting.start(wf.dashboard, {"user_id": 7, "orders_fail": True})
    run_until_idle()
    member = WorkflowExecution.objects.get(parent_id=eid, status="failed")
    with pytest.raises(ExecutionNotResumable, match="resume that execution"):
        executions.resume(member.id)
