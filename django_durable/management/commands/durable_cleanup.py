from django_durable import cleanup, clock
from django_durable.management.base import (
    DurableCommand,
    Progress,
    parse_duration,
    usage_error,
)
from django_durable.models import FINAL_STATUSES


class Command(DurableCommand):
    help = (
        "Delete finished executions older than a duration (by when they finished), whole "
        "trees at a time (branches, items, child workflows, attempts, waits, events, "
        "inputs), in batches of one transaction each. Active executions, and finished "
        "ones whose tree still has an active or recently finished row, are kept."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            required=True,
            metavar="DURATION",
            help="Delete what finished longer ago than this, e.g. 30d, 12h, 2w.",
        )
        parser.add_argument(
            "--status",
            action="extend",
            nargs="+",
            dest="statuses",
            metavar="S",
            help="Only executions that ended so (repeatable); default: "
            f"{', '.join(FINAL_STATUSES)}.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=cleanup.DEFAULT_BATCH_SIZE,
            metavar="N",
            help=f"Executions per batch (transaction); default {cleanup.DEFAULT_BATCH_SIZE}.",
        )

    def handle(self, *args, older_than, statuses=None, dry_run=False, batch_size, **options):
        age = parse_duration(older_than)
        try:
            statuses = cleanup.final_statuses(statuses)
        except ValueError as exc:
            raise usage_error(str(exc)) from None
        if batch_size < 1:
            raise usage_error("--batch-size must be at least 1.")
        now = clock.now()
        total = cleanup.count_candidates(age, statuses, now=now)
        label = "Counting (dry run)" if dry_run else "Deleting"
        progress = Progress(total, label, stream=self.stderr, every=batch_size)
        swept = cleanup.sweep(
            age,
            statuses,
            batch_size=batch_size,
            dry_run=dry_run,
            on_batch=progress.advance,
            now=now,
        )
        progress.finish()
        cutoff = (now - age).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
        which = ", ".join(statuses)
        kept = (
            f"; kept {swept.kept} whose tree has an active or recently finished execution"
            if swept.kept
            else ""
        )
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(
            f"{verb} {swept.executions} execution(s) ({swept.rows} rows with their branches, "
            f"items and child workflows) that ended ({which}) before {cutoff}, in "
            f"{swept.batches} batch(es){kept}."
            + (" Dry run: nothing was deleted." if dry_run else "")
        )
