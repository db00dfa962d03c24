"""Parents and children, importable by worker processes."""

import os
import time

from django_durable import (
    ChildWorkflowFailed,
    branch,
    call_workflow,
    foreach,
    parallel,
    start_workflow,
    step,
    workflow,
)
from django_durable.helpers import assign, minutes
from django_durable.waits import wait_for_event

from ..calls import count_call


def charge(ctx):
    count_call("charge")
    if ctx.get("declined"):
        raise RuntimeError("card declined")
    return assign(ctx, "charge_id", f"ch_{ctx['order_id']}")


def notify(ctx):
    count_call("notify")
    return assign(ctx, "notified", ctx["email"])


def waits_for_go(ctx):
    return assign(ctx, "go", wait_for_event("go"))


payment = workflow("tests.child.payment", [charge])
notification = workflow("tests.child.notification", [notify])
slow_child = workflow("tests.child.slow", [waits_for_go])


def pay_and_notify(ctx):
    count_call("pay_and_notify")
    paid = call_workflow(payment, {"order_id": ctx["order_id"], "declined": ctx.get("declined")})
    note = start_workflow(notification, {"email": ctx["email"]})
    return {**ctx, "charge_id": paid["charge_id"], "notification": str(note)}


def pay_or_record_failure(ctx):
    try:
        paid = call_workflow(payment, {"order_id": ctx["order_id"], "declined": True})
    except ChildWorkflowFailed as failure:
        return {**ctx, "payment": failure.status, "child": str(failure.execution_id)}
    return {**ctx, "payment": paid["charge_id"]}


def waits_for_slow_child(ctx):
    try:
        result = call_workflow(slow_child, {}, timeout=minutes(5))
    except ChildWorkflowFailed as failure:
        return {**ctx, "outcome": failure.status}
    return {**ctx, "outcome": result["go"]}


def calls_twice(ctx):
    call_workflow(payment, {"order_id": 1})
    call_workflow(payment, {"order_id": 2})
    return ctx


def calls_twice_with_refs(ctx):
    first = call_workflow(payment, {"order_id": 1}, ref="first")
    second = call_workflow(payment, {"order_id": 2}, ref="second")
    return {**ctx, "charges": [first["charge_id"], second["charge_id"]]}


order = workflow("tests.child.order", [pay_and_notify])
handled = workflow(
    "tests.child.handled",
    [
        pay_or_record_failure,
        branch(
            lambda ctx: ctx["payment"],
            {"failed": lambda ctx: assign(ctx, "refund", False)},
            default=lambda ctx: ctx,
            name="after_payment",
        ),
    ],
)
timing_out = workflow("tests.child.timing_out", [waits_for_slow_child])
twice = workflow("tests.child.twice", [calls_twice])
twice_with_refs = workflow("tests.child.twice_with_refs", [calls_twice_with_refs])


def level_c(ctx):
    return assign(ctx, "c", wait_for_event("finish"))


def level_b(ctx):
    return assign(ctx, "b", call_workflow(c_level, {})["c"])


def level_a(ctx):
    return assign(ctx, "a", call_workflow(b_level, {})["b"])


c_level = workflow("tests.child.c", [level_c])
b_level = workflow("tests.child.b", [level_b])
a_level = workflow("tests.child.a", [level_a])


def pay_item(ctx, item, index):
    return call_workflow(payment, {"order_id": item}, ref=str(index))["charge_id"]


per_item = workflow("tests.child.per_item", [foreach("pay", lambda ctx: ctx["ids"], pay_item)])


def undo_reserve(ctx):
    count_call("undo_reserve")


def undo_book(ctx):
    count_call("undo_book")


@step(compensate=undo_reserve)
def reserve(ctx):
    return assign(ctx, "reserved", True)


@step(compensate=undo_book)
def book(ctx):
    return assign(ctx, "booked", True)


saga_child = workflow("tests.child.saga_child", [book, waits_for_go])


def reserve_then_call(ctx):
    return {**ctx, "child": call_workflow(saga_child, {})}


saga_parent = workflow("tests.child.saga_parent", [reserve, reserve_then_call])


def pay_in_branch(ctx):
    return {"paid": call_workflow(payment, {"order_id": ctx["order_id"]})["charge_id"]}


in_branch = workflow(
    "tests.child.in_branch", [parallel(pay_in_branch, notify, name="both"), notify]
)


def waits_in_branch(ctx):
    return {"go": call_workflow(slow_child, {})["go"]}


slow_in_branch = workflow(
    "tests.child.slow_in_branch", [parallel(waits_in_branch, notify, name="both")]
)


def starts_then_naps(ctx):
    """Starts a child, then (the first time only) leaves a mark and naps, so a test can
    kill the worker after the child exists and before the step ends."""
    child = start_workflow(notification, {"email": ctx["email"]})
    mark = os.path.join(ctx["marks"], "started-child")
    if not os.path.exists(mark):
        with open(mark, "w") as file:
            file.write(str(child))
        time.sleep(60)
    return {**ctx, "child": str(child)}


naps_after_starting = workflow("tests.child.naps_after_starting", [starts_then_naps])
