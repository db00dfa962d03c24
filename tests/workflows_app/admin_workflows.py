"""Workflows the admin's browser tests drive (tests/test_admin_browser.py); here, in an
installed app, so the real worker processes those tests start know them too."""

from django_durable import workflow
from django_durable.waits import wait_for_approval, wait_for_event, wait_for_form


def ask_manager(ctx):
    return {**ctx, "decision": wait_for_approval("manager", prompt="Approve the refund?")}


def pay_refund(ctx):
    return {**ctx, "paid": ctx["decision"] == "approved"}


def ask_details(ctx):
    fields = [
        {"name": "amount", "type": "number", "required": True},
        {"name": "reason", "type": "text", "required": True},
    ]
    return {**ctx, "details": wait_for_form("details", fields=fields, prompt="Refund details")}


def wait_paid(ctx):
    return {**ctx, "paid": wait_for_event("paid")}


def fail_payment(ctx):
    raise RuntimeError("card <b>declined</b> by the bank")


refund = workflow("admin_browser.refund", [ask_manager, pay_refund])
details = workflow("admin_browser.details", [ask_details])
payment = workflow("admin_browser.payment", [wait_paid])
failing = workflow("admin_browser.failing", [fail_payment])
