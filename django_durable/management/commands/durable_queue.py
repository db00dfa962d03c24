from django_durable import queues
from django_durable.management.base import (
    DurableCommand,
    Failed,
    add_format_arguments,
    parse_duration,
    table,
)


class Command(DurableCommand):
    help = (
        "Control a queue: pause (no worker claims from it, across workers and restarts), "
        "resume, drain (wait until nothing on it is running or runnable; on a paused queue, "
        "until nothing is running) or show its status."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["pause", "resume", "drain", "status"])
        parser.add_argument("queue")
        parser.add_argument("--reason", default="", help="pause: why (shown by status)")
        parser.add_argument(
            "--timeout", default="5m", help="drain: how long to wait (e.g. 90s, 5m; default 5m)"
        )
        add_format_arguments(parser)

    def handle(self, *args, action, queue, reason, timeout, format, **options):
        if action == "pause":
            paused = queues.pause_queue(queue, reason)
            self.stdout.write(f"Queue {queue!r} paused since {paused.paused_at:%Y-%m-%d %H:%M:%S}.")
        elif action == "resume":
            was_paused = queues.resume_queue(queue)
            self.stdout.write(
                f"Queue {queue!r} resumed." if was_paused else f"Queue {queue!r} was not paused."
            )
        elif action == "drain":
            self._drain(queue, parse_duration(timeout))
        else:
            self._status(queues.queue_state(queue), format)

    def _drain(self, queue: str, timeout) -> None:
        def report(state: queues.QueueState) -> None:
            self.stderr.write(f"{queue}: {state.running} running, {state.runnable} runnable")

        if not queues.drain(queue, timeout, on_progress=report):
            raise Failed(f"Queue {queue!r} did not drain within {timeout}.")
        self.stdout.write(f"Queue {queue!r} drained.")

    def _status(self, state: queues.QueueState, format: str) -> None:
        if format == "json":
            self.write_json(state.as_dict())
            return
        paused = f"paused since {state.paused_at:%Y-%m-%d %H:%M:%S}" if state.paused else "active"
        if state.reason:
            paused += f" ({state.reason})"
        rows = [
            ("state", paused),
            ("running", state.running),
            ("runnable", state.runnable),
            ("scheduled", state.scheduled),
            ("workers", ", ".join(state.workers) or "none"),
        ]
        self.stdout.write(table(rows, ["queue " + state.name, ""]))
