from datetime import datetime

import django_durable as durable
from django_durable import clock, waits
from django_durable.management.base import (
    DurableCommand,
    add_format_arguments,
    short_span,
)

INPUT_HEADERS = ["id", "workflow", "name", "type", "prompt", "age", "timeout"]
EVENT_HEADERS = ["id", "workflow", "step", "kind", "events", "age", "timeout"]


class Command(DurableCommand):
    help = (
        "What executions wait on from outside, oldest first: pending inputs for people "
        "(the default; answer with durable_provide_input) or, with --events, open event "
        "waits (send with durable_send_event). The id is the workflow execution's, to "
        "pass to those commands; timeout says when the wait gives up."
    )

    def add_arguments(self, parser):
        what = parser.add_mutually_exclusive_group()
        what.add_argument(
            "--inputs",
            action="store_const",
            const="inputs",
            dest="what",
            help="Pending inputs (the default).",
        )
        what.add_argument(
            "--events",
            action="store_const",
            const="events",
            dest="what",
            help="Open event waits.",
        )
        parser.add_argument("--workflow", metavar="NAME", help="Only this workflow's.")
        add_format_arguments(parser)

    def handle(self, *args, what=None, workflow=None, **options):
        now = clock.now()
        as_json = options["format"] == "json"
        if what == "events":
            found = waits.list_pending_events(workflow=workflow)
            if as_json:
                self.write_json([event_wait_json(wait) for wait in found])
            else:
                self.write_table([event_wait_row(wait, now) for wait in found], EVENT_HEADERS)
            return
        found = list(durable.list_pending_inputs(workflow=workflow))
        if as_json:
            self.write_json([input_json(pending) for pending in found])
        else:
            self.write_table([input_row(pending, now) for pending in found], INPUT_HEADERS)


def until(moment: datetime | None, now: datetime) -> str | None:
    """`in 2h 05m`, `overdue 3.0s`, or None (no timeout)."""
    if moment is None:
        return None
    if moment >= now:
        return f"in {short_span(moment - now)}"
    return f"overdue {short_span(now - moment)}"


def input_row(pending, now: datetime) -> list:
    return [
        str(pending.root_id)[:8],
        pending.execution.workflow_name,
        pending.input_name,
        pending.input_type,
        pending.prompt,
        short_span(now - pending.created_at),
        until(pending.timeout_at, now),
    ]


def input_json(pending) -> dict:
    return {
        "execution_id": pending.root_id,
        "asked_by": pending.execution_id,
        "workflow": pending.execution.workflow_name,
        "step": pending.step_name,
        "name": pending.input_name,
        "type": pending.input_type,
        "prompt": pending.prompt,
        "choices": pending.choices,
        "fields": pending.fields,
        "metadata": pending.metadata,
        "created_at": pending.created_at,
        "timeout_at": pending.timeout_at,
    }


def event_wait_row(wait, now: datetime) -> list:
    return [
        str(wait.root_id)[:8],
        wait.execution.workflow_name,
        wait.step_name,
        wait.kind,
        ", ".join(wait.event_names),
        short_span(now - wait.created_at),
        until(wait.wake_at, now),
    ]


def event_wait_json(wait) -> dict:
    return {
        "execution_id": wait.root_id,
        "waiting_in": wait.execution_id,
        "workflow": wait.execution.workflow_name,
        "step": wait.step_name,
        "kind": wait.kind,
        "events": wait.event_names,
        "created_at": wait.created_at,
        "timeout_at": wait.wake_at,
    }
