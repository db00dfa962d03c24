import time

import django_durable as durable
from django_durable.management.base import (
    DurableCommand,
    Failed,
    parse_duration,
    parse_json,
    read_json_file,
    to_json,
    usage_error,
)
from django_durable.models import FINAL_STATUSES, ExecutionStatus, WorkflowExecution

POLL_FIRST, POLL_MAX = 0.1, 0.5  # seconds between looks at the execution's row


class Command(DurableCommand):
    help = (
        "Start a workflow and print the new execution's id. With --wait, follow it until "
        "it ends (a durable_worker runs it): print its final context as JSON and exit 0 "
        "when it completed, its error and exit 1 when it failed or was cancelled, exit 1 "
        "when --timeout passes first (it goes on running)."
    )

    def add_arguments(self, parser):
        parser.add_argument("workflow", metavar="WORKFLOW", help="The workflow's name.")
        source = parser.add_mutually_exclusive_group()
        source.add_argument(
            "--input", metavar="JSON", help="The input, a JSON object (default {})."
        )
        source.add_argument(
            "--input-file", metavar="PATH", help="Read the input (a JSON object) from a file."
        )
        parser.add_argument("--queue", metavar="NAME", help="Run on this queue.")
        parser.add_argument(
            "--priority", type=int, default=0, metavar="N", help="Higher runs first (default 0)."
        )
        parser.add_argument(
            "--idempotency-key",
            metavar="KEY",
            help="Start at most once per key: an execution this key already started is "
            "returned instead.",
        )
        parser.add_argument("--wait", action="store_true", help="Wait until the execution ends.")
        parser.add_argument(
            "--timeout",
            default="60s",
            metavar="DURATION",
            help="How long --wait waits, e.g. 90s, 10m (default 60s).",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print a JSON object (id; with --wait also status and context or error).",
        )

    def handle(self, *args, **options):
        timeout = parse_duration(options["timeout"])
        if options["input_file"]:
            data = read_json_file(options["input_file"])
        elif options["input"] is not None:
            data = parse_json(options["input"], "--input")
        else:
            data = {}
        if not isinstance(data, dict):
            raise usage_error(f"The input must be a JSON object, not {type(data).__name__}.")
        execution_id = durable.start(
            options["workflow"],
            data,
            queue=options["queue"],
            priority=options["priority"],
            idempotency_key=options["idempotency_key"],
        )
        if not options["wait"]:
            self.stdout.write(
                to_json({"id": execution_id}) if options["json"] else str(execution_id)
            )
            return
        self.stderr.write(
            f"Started {execution_id}; waiting up to {options['timeout']}…",
            style_func=lambda text: text,  # progress, not an error: not in red
        )
        try:
            execution = wait_until_finished(execution_id, timeout.total_seconds())
        except KeyboardInterrupt:
            raise Failed(f"Stopped waiting; execution {execution_id} goes on running.") from None
        self.report(execution, options["timeout"], options["json"])

    def report(self, execution: WorkflowExecution, timeout: str, as_json: bool) -> None:
        finished = execution.status in FINAL_STATUSES
        completed = execution.status == ExecutionStatus.COMPLETED
        if as_json:
            outcome = {"id": execution.id, "status": execution.status}
            if completed:
                outcome["context"] = execution.context
            elif finished:
                outcome["error"] = error_text(execution)
            self.stdout.write(to_json(outcome))
        elif completed:
            self.stdout.write(to_json(execution.context))
        if completed:
            return
        if not finished:
            hint = " Is a durable_worker running?" if execution.status == "pending" else ""
            raise Failed(
                f"Execution {execution.id} is still {execution.status} after {timeout}; "
                f"it goes on running.{hint}"
            )
        one_line = " ".join(error_text(execution).split())
        raise Failed(f"Execution {execution.id} {execution.status}: {one_line}")


def wait_until_finished(execution_id, timeout: float) -> WorkflowExecution:
    """Look at the row every 0.1 s at first, then every 0.5 s, until it has ended or
    `timeout` seconds passed; the execution as last seen."""
    give_up_at = time.monotonic() + timeout
    pause = POLL_FIRST
    while True:
        status = (
            WorkflowExecution.objects.filter(id=execution_id)
            .values_list("status", flat=True)
            .first()
        )
        left = give_up_at - time.monotonic()
        if status in FINAL_STATUSES or status is None or left <= 0:
            return durable.get_execution(execution_id)
        time.sleep(min(pause, left))
        pause = min(pause * 1.5, POLL_MAX)


def error_text(execution: WorkflowExecution) -> str:
    """`Type: message`, or the reason it was cancelled."""
    error = execution.error
    if error:
        kind, message = error.get("type"), error.get("message")
        return f"{kind}: {message}" if kind else str(message)
    return execution.cancel_reason or "no reason given"
