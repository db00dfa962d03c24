from django_durable import doctor
from django_durable.management.base import (
    DurableCommand,
    Failed,
    add_format_arguments,
)


class Command(DurableCommand):
    help = (
        "Find what will not put itself right: stale leases, waits nothing can wake, stuck "
        "compensations, auto-disabled schedules, workers gone silent. With --fix, repair "
        "what is safe (give back leases, restart stuck compensations, forget silent "
        "workers) and say what was done. Exit 0: nothing (left) to fix; 1: problems remain."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--fix",
            action="store_true",
            help="Repair what is safe to repair; the rest is reported with a hint.",
        )
        add_format_arguments(parser, default="table")

    def handle(self, *args, fix=False, format="table", **options):
        found = doctor.diagnose()
        done: list[str] = []
        remaining = found
        if fix and any(finding.fixable for finding in found):
            done = doctor.repair(found)
            remaining = doctor.diagnose()
        if format == "json":
            self.write_json(
                {
                    "findings": [finding.as_dict() for finding in found],
                    "truncated": sorted(found.truncated),
                    "fixed": done,
                    "remaining": [finding.as_dict() for finding in remaining],
                }
            )
        else:
            self._write_text(found, done, remaining, fix)
        if remaining:
            raise Failed(_remaining(remaining))

    def _write_text(self, found, done, remaining, fix) -> None:
        if not found:
            self.stdout.write("No problems found.")
            return
        for check in doctor.CHECKS:
            findings = [finding for finding in found if finding.check == check]
            if not findings:
                continue
            count = f"the first {len(findings)}" if check in found.truncated else len(findings)
            self.stdout.write(f"{doctor.TITLES[check]} ({count}):")
            for finding in findings:
                self.stdout.write(f"  {finding.subject}: {finding.detail}")
                if finding.hint and not (fix and finding.fixable):
                    self.stdout.write(f"    -> {finding.hint}")
        if fix:
            self.stdout.write("Fixed:" if done else "Fixed: nothing.")
            for line in done:
                self.stdout.write(f"  {line}")
        elif any(finding.fixable for finding in found):
            self.stdout.write("Run again with --fix to repair what can be (see the hints).")
        if not remaining:
            self.stdout.write("Nothing left to fix.")


def _remaining(remaining) -> str:
    counts: dict[str, int] = {}
    for finding in remaining:
        counts[finding.check] = counts.get(finding.check, 0) + 1
    listed = ", ".join(f"{doctor.TITLES[check].lower()}: {n}" for check, n in counts.items())
    return f"{len(remaining)} problem(s) remain ({listed})."
