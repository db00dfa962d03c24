import django_durable as durable
from django_durable.management.base import DurableCommand, resolve_execution


class Command(DurableCommand):
    help = (
        "Run a failed or cancelled execution again from the step that stopped it (its "
        "completed steps are not re-run). ID may be a unique prefix."
    )

    def add_arguments(self, parser):
        parser.add_argument("id", metavar="ID", help="Execution id or a unique prefix of it.")

    def handle(self, *args, **options):
        execution = durable.resume(resolve_execution(options["id"]).id)
        self.stdout.write(
            f"{execution.id} {execution.workflow_name}: {execution.status} "
            f"(from step {execution.current_step})"
        )
