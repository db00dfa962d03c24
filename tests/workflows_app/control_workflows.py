"""Workflows with branches, decisions, parallel blocks, foreach and compensations,
importable by worker processes (they load installed apps' workflows)."""

import os
import time
from datetime import timedelta

from django_durable import (
    DEFAULT,
    Retry,
    branch,
    decision,
    foreach,
    goto,
    parallel,
    step,
    workflow,
)
from django_durable.helpers import assign
from django_durable.waits import sleep, wait_for_event, wait_for_input

from ..calls import calls, count_call


def classify(ctx):
    return assign(ctx, "kind", ctx["doc"].split(".")[-1])


def extract_invoice(ctx):
    return assign(ctx, "handled_by", "invoice")


def extract_receipt(ctx):
    return assign(ctx, "handled_by", "receipt")


def review_by_hand(ctx):
    return assign(ctx, "handled_by", "person")


def archive(ctx):
    return assign(ctx, "archived", True)


documents = workflow(
    "tests.control.documents",
    [
        classify,
        branch(
            lambda ctx: ctx["kind"],
            {"invoice": [extract_invoice], "receipt": extract_receipt, DEFAULT: review_by_hand},
            name="route",
        ),
        archive,
    ],
)


def flag_premium(ctx):
    return assign(ctx, "premium", True)


def flag_missing(ctx):
    return assign(ctx, "missing", True)


nested = workflow(
    "tests.control.nested",
    [
        branch(
            lambda ctx: ctx.get("verified"),
            {
                True: branch(
                    lambda ctx: ctx.get("tier"),
                    {1: flag_premium, None: flag_missing},
                    name="by_tier",
                ),
                False: step(review_by_hand, name="unverified"),
            },
            name="by_verified",
        ),
        archive,
    ],
)

strict = workflow(
    "tests.control.strict",
    [branch(lambda ctx: ctx.get("kind"), {"a": extract_invoice}, name="only_a"), archive],
)


def bump(ctx):
    return assign(ctx, "rounds", ctx.get("rounds", 0) + 1)


def again(ctx):
    if ctx["rounds"] < ctx.get("until", 3):
        return goto("bump", ctx)
    return ctx


def route_amount(ctx):
    if ctx["amount"] > 1000:
        return goto("manager_approval", assign(ctx, "route", "manager"))
    return assign(ctx, "route", "auto")


def auto_approve(ctx):
    return assign(ctx, "approved_by", "system")


def manager_approval(ctx):
    return assign(ctx, "approved_by", "manager")


looping = workflow("tests.control.looping", [bump, decision(again), archive])
routing = workflow(
    "tests.control.routing", [decision(route_amount), auto_approve, manager_approval]
)


def fetch_user(ctx):
    count_call("fetch_user")
    return {"user": ctx["user_id"]}


def fetch_orders(ctx):
    count_call("fetch_orders")
    if ctx.get("orders_fail"):
        raise RuntimeError("orders service down")
    return {"orders": [1, 2]}


def slow_fetch(ctx):
    count_call("slow_fetch")
    time.sleep(ctx.get("slow", 0))
    return {"slow": True}


def waits_for_go(ctx):
    payload = wait_for_event("go")
    return {"go": payload}


def fails_when_told(ctx):
    wait_for_event("fail")
    raise RuntimeError("told to fail")


def naps(ctx):
    sleep(timedelta(hours=1))
    return {"napped": True}


def asks_person(ctx):
    return {"answer": wait_for_input("ok?", type="approval")}


def summarize(ctx):
    return assign(ctx, "summary", sorted(ctx["__results__"]))


dashboard = workflow(
    "tests.control.dashboard",
    [parallel(fetch_user, step(fetch_orders, returns="orders_result"), name="fetch"), summarize],
)
dashboard_all = workflow(
    "tests.control.dashboard_all",
    [parallel(fetch_user, fetch_orders, on_error="complete_all", name="fetch"), summarize],
)


def merge(ctx, results):
    status, user = results["fetch_user"]
    if results["fetch_orders"][0] == "error":
        return goto("apologize", {**ctx, "user": user["user"]})
    return {**ctx, "user": user["user"], "orders": results["fetch_orders"][1]["orders"]}


def apologize(ctx):
    return assign(ctx, "apologized", True)


def done(ctx):
    return assign(ctx, "done", True)


dashboard_into = workflow(
    "tests.control.dashboard_into",
    [
        parallel(fetch_user, fetch_orders, into=merge, on_error="complete_all", name="fetch"),
        done,
        apologize,
    ],
)
waiting_branches = workflow(
    "tests.control.waiting_branches",
    [parallel(waits_for_go, asks_person, fetch_user, naps, name="gather"), summarize],
)
slow_and_failing = workflow(
    "tests.control.slow_and_failing",
    [parallel(slow_fetch, fails_when_told, waits_for_go, name="race")],
)


def emails(ctx):
    return ctx["to"]


def send_email(ctx, address, index):
    count_call(f"send:{address}")
    if address in ctx.get("bounce", ()):
        raise ValueError(f"{address} bounced")
    return {"sent": address, "index": index, "subject": ctx["subject"]}


bulk_email = workflow(
    "tests.control.bulk_email",
    [foreach("send", emails, send_email, concurrency=2), done],
)
bulk_email_continue = workflow(
    "tests.control.bulk_email_continue",
    [foreach("send", emails, send_email, concurrency=3, on_error="continue"), done],
)


def noop_item(ctx, item, index):
    return None


def many(ctx):
    return list(range(ctx["n"]))


many_items = workflow(
    "tests.control.many_items", [foreach("noop", many, noop_item, concurrency=50)]
)


def sleepy_item(ctx, item, index):
    count_call(f"item:{item}")
    with open(os.path.join(ctx["marks"], f"item-{item}-{os.getpid()}"), "a") as mark:
        mark.write("ran\n")
    time.sleep(ctx.get("pause", 0))
    return item * 10


crashy_foreach = workflow(
    "tests.control.crashy_foreach",
    [foreach("slow_items", many, sleepy_item, concurrency=4), done],
)


def per_region(ctx):
    return ctx["regions"]


def count_region(ctx, region, index):
    return f"{region}:{index}"


foreach_in_parallel = workflow(
    "tests.control.foreach_in_parallel",
    [parallel(foreach("regions", per_region, count_region), fetch_user, name="both"), summarize],
)
parallel_in_branch = workflow(
    "tests.control.parallel_in_branch",
    [
        branch(
            lambda ctx: ctx["mode"],
            {"fan": parallel(fetch_user, fetch_orders, name="fan_out"), "single": fetch_user},
            name="mode",
        ),
        done,
    ],
)
retrying_items = workflow(
    "tests.control.retrying_items",
    [foreach("send", emails, step(send_email, retry=Retry(max_attempts=2, base=0.001)))],
)


# -- sagas -------------------------------------------------------------------------------


def undo_log(ctx, what):
    count_call(f"undo:{what}")


def cancel_flight(ctx):
    undo_log(ctx, "flight")


def cancel_hotel(ctx):
    undo_log(ctx, "hotel")
    if ctx.get("hotel_undo_fails"):
        raise RuntimeError("hotel API down")


def refund_card(ctx):
    undo_log(ctx, "card")
    if ctx.get("refund_flaky") and calls["undo:card"] == 1:
        raise RuntimeError("refund timed out")


@step(compensate="cancel_flight")
def book_flight(ctx):
    count_call("book_flight")
    return assign(ctx, "flight", "LH123")


@step(compensate=cancel_hotel)
def book_hotel(ctx):
    count_call("book_hotel")
    return assign(ctx, "hotel", "Ritz")


@step(compensate="refund_card", retry=Retry(max_attempts=2, base=0.001))
def charge_card(ctx):
    count_call("charge_card")
    if ctx.get("card_declined"):
        raise RuntimeError("card declined")
    return assign(ctx, "charged", True)


def confirm(ctx):
    if ctx.get("confirm_fails"):
        raise RuntimeError("confirmation failed")
    if ctx.get("wait_before_confirm"):
        wait_for_event("confirm")
    return assign(ctx, "confirmed", True)


trip = workflow(
    "tests.control.trip",
    [book_flight, book_hotel, charge_card, confirm],
    compensations=[cancel_flight, step(refund_card, retry=Retry(max_attempts=3, base=0.001))],
)


def reserve_stock(ctx, item, index):
    count_call(f"reserve:{item}")
    if item == ctx.get("out_of_stock"):
        raise RuntimeError(f"{item} is out of stock")
    return {"reserved": item}


def release_stock(ctx, item, index):
    count_call(f"release:{item}")


def notify_warehouse(ctx):
    count_call("notify_warehouse")
    if ctx.get("warehouse_down"):
        raise RuntimeError("warehouse down")
    return {"notified": True}


def recall_notice(ctx):
    count_call("recall_notice")


order_saga = workflow(
    "tests.control.order_saga",
    [
        book_flight,
        parallel(
            step(notify_warehouse, compensate=recall_notice),
            foreach(
                "reserve",
                lambda ctx: ctx["items"],
                step(reserve_stock, compensate=release_stock),
                concurrency=1,
            ),
            name="prepare",
        ),
        confirm,
    ],
    compensations=[cancel_flight],
)
