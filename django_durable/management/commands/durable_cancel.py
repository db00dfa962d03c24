import django_durable as durable
from django_durable.management.base import DurableCommand, resolve_execution


class Command(DurableCommand):
    help = (
        "Cancel an active (pending, running, waiting or compensating) execution and its "
        "active child workflows; a running step's result is discarded. With --compensate "
        "the compensations of its completed steps run first. ID may be a unique prefix."
    )

    def add_arguments(self, parser):
        parser.add_argument("id", metavar="ID", help="Execution id or a unique prefix of it.")
        parser.add_argument("--reason", metavar="TEXT", help="Why (kept as its cancel_reason).")
        parser.add_argument(
            "--compensate",
            action="store_true",
            help="Undo its completed steps (run their compensations) before it ends.",
        )

    def handle(self, *args, **options):
        execution = resolve_execution(options["id"])
        execution = durable.cancel(
            execution.id, options["reason"], compensate=options["compensate"]
        )
        self.stdout.write(f"{execution.id} {execution.workflow_name}: {execution.status}")
