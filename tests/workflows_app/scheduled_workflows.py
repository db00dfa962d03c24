"""Workflows with declared schedules, and the steps scheduled runs use."""

from django_durable import cron, workflow
from django_durable.helpers import assign


def report(ctx):
    return assign(ctx, "reported", True)


def flaky_report(ctx):
    if ctx.get("fail"):
        raise RuntimeError("report source down")
    return assign(ctx, "reported", True)


daily_report = workflow(
    "tests.sched.daily_report",
    [report],
    schedule=cron("0 9 * * *", timezone="America/New_York", input={"kind": "sales"}),
)
plain_report = workflow("tests.sched.plain_report", [flaky_report])
