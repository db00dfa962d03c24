from django_durable import insights
from django_durable.management.base import (
    DurableCommand,
    add_format_arguments,
    resolve_execution,
)


class Command(DurableCommand):
    help = (
        "Show one execution: why it is not finished (what it waits on, since and until "
        "when), its last error, then its timeline of attempts (its parallel branches' and "
        "foreach items' too), its waits and inputs, and the child workflows it started. "
        "ID may be a unique prefix. --json prints the same facts as one JSON object."
    )

    def add_arguments(self, parser):
        parser.add_argument("id", metavar="ID", help="Execution id or a unique prefix of it.")
        add_format_arguments(parser, default="table")

    def handle(self, *args, id, format, **options):
        execution = resolve_execution(id)
        report = insights.describe(execution)
        if format == "json":
            self.write_json(report)
            return
        write = self.stdout.write
        write(insights.introspect(execution))
        write(f"\nTimeline ({len(report['steps'])} attempts)")
        self.write_table(
            [
                (
                    step["step"] + (" (undo)" if step["is_compensation"] else ""),
                    _unit(step["unit"]),
                    step["attempt"],
                    step["status"],
                    insights.format_time(step["started_at"]),
                    _ms(step["duration_ms"]),
                    _error(step["error"]),
                )
                for step in report["steps"]
            ],
            ["step", "unit", "attempt", "status", "started", "duration", "error"],
        )
        waits = [_wait_row(wait) for wait in report["waits"]]
        waits += [_input_row(pending) for pending in report["pending_inputs"]]
        write(f"\nWaits ({len(waits)})")
        if waits:
            self.write_table(
                [row for _, row in sorted(waits, key=lambda pair: pair[0])],
                ["step", "unit", "kind", "waiting for", "status", "since", "until"],
            )
        write(f"\nChildren ({len(report['children'])})")
        if report["children"]:
            self.write_table(
                [
                    (
                        child["id"],
                        child["workflow"],
                        child["status"],
                        child["started_by_step"],
                        _unit(child["unit"]),
                        insights.format_time(child["created_at"]),
                        insights.format_time(child["completed_at"]),
                    )
                    for child in report["children"]
                ],
                ["id", "workflow", "status", "started by", "unit", "created", "finished"],
            )


def _unit(unit: dict | None) -> str | None:
    return None if unit is None else f"{unit['kind']} {unit['index']}"


def _ms(duration_ms: int | None) -> str | None:
    return None if duration_ms is None else insights.format_duration(duration_ms / 1000)


def _error(error: dict | None) -> str | None:
    return None if not error else f"{error.get('type')}: {error.get('message')}"


def _wait_row(wait: dict) -> tuple[str, tuple]:
    """(since, row): a wait's row of the waits table and the time it sorts by."""
    if wait["kind"] == "sleep":
        what = "time"
    elif wait["kind"] == "child":
        what = f"child {wait['child']}"
    else:
        what = ", ".join(wait["events"])
    row = (wait["step"], _unit(wait["unit"]), wait["kind"], what, wait["status"])
    return wait["since"], row + _times(wait)


def _input_row(pending: dict) -> tuple[str, tuple]:
    what = f"{pending['name']} ({pending['type']})"
    row = (pending["step"], _unit(pending["unit"]), "input", what, pending["status"])
    return pending["since"], row + _times(pending)


def _times(wait: dict) -> tuple[str, str]:
    until = insights.format_time(wait["until"]) if wait["until"] else "no timeout"
    return insights.format_time(wait["since"]), until
