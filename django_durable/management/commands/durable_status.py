from django_durable import insights
from django_durable.management.base import DurableCommand, Failed, add_format_arguments

ACTIVE = ("pending", "running", "waiting", "compensating")


class Command(DurableCommand):
    help = (
        "Show how django-durable is doing: the health checks, the queues (paused or not, "
        "their live workers, active executions by status), the workers, and per workflow "
        "its executions and step attempts by status with its first and last activity. "
        "Exits 1 when the system is unhealthy."
    )

    def add_arguments(self, parser):
        add_format_arguments(parser)

    def handle(self, *args, format, **options):
        report = insights.status()
        if format == "json":
            self.write_json(report)
        else:
            self._tables(report)
        if report["status"] == "unhealthy":
            failing = [c for c in report["health"]["checks"] if c["severity"] == "unhealthy"]
            raise Failed(f"The system is unhealthy: {failing[0]['detail']}")

    def _tables(self, report: dict) -> None:
        write = self.stdout.write
        database = "connected" if report["database_connected"] else "NOT CONNECTED"
        write(
            f"System status: {report['status'].upper()} (database {report['database']} "
            f"{database}, checked {insights.format_time(report['checked_at'])})"
        )
        write("\nHealth")
        self.write_table(
            [
                (c["name"], "ok" if c["ok"] else c["severity"], c["detail"])
                for c in report["health"]["checks"]
            ],
            ["check", "state", "detail"],
        )
        write("\nQueues")
        self.write_table(
            [
                (
                    q["name"],
                    {True: "yes", False: "no", None: "-"}[q["paused"]],
                    q["executions"]["ready"],
                    *(q["executions"][status] for status in ACTIVE),
                    ", ".join(q["workers"]) or "none live",
                )
                for q in report["queues"]
            ],
            ["queue", "paused", "ready", *ACTIVE, "workers"],
        )
        write("\nWorkers")
        if report["workers"]:
            self.write_table(
                [
                    (
                        w["name"],
                        w["host"],
                        w["pid"],
                        ", ".join(w["queues"]) or "all",
                        w["concurrency"],
                        insights.format_time(w["last_seen_at"]),
                        "yes" if w["live"] else "no",
                    )
                    for w in report["workers"]
                ],
                ["worker", "host", "pid", "queues", "concurrency", "last seen", "live"],
            )
        else:
            write("No worker has registered (start one: manage.py durable_worker).")
        write("\nWorkflows")
        if report["workflows"]:
            self.write_table(
                [
                    (
                        w["workflow"],
                        w["executions"]["total"],
                        _counts(w["executions"]["by_status"]),
                        w["steps"]["total"],
                        _counts(w["steps"]["by_status"]),
                        insights.format_time(w["first_activity"]),
                        insights.format_time(w["last_activity"]),
                    )
                    for w in report["workflows"]
                ],
                [
                    "workflow",
                    "executions",
                    "by status",
                    "attempts",
                    "attempts by status",
                    "first activity",
                    "last activity",
                ],
            )
        else:
            write("No execution yet.")


def _counts(by_status: dict) -> str:
    return ", ".join(f"{status} {count}" for status, count in by_status.items())
