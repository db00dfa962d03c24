import django_durable as durable
from django_durable.management.base import DurableCommand, resolve_execution, usage_error
from django_durable.models import ACTIVE_STATUSES, ExecutionKind


class Command(DurableCommand):
    help = (
        "Start a new execution of a finished execution's workflow with the same input, "
        "queue and priority, from the first step, and print its id (durable_resume "
        "continues the old one instead). ID may be a unique prefix."
    )

    def add_arguments(self, parser):
        parser.add_argument("id", metavar="ID", help="Execution id or a unique prefix of it.")

    def handle(self, *args, **options):
        execution = resolve_execution(options["id"])
        if execution.kind != ExecutionKind.WORKFLOW:
            raise usage_error(
                f"Execution {execution.id} is a {execution.kind} of {execution.parent_id}; "
                "retry that execution instead."
            )
        if execution.status in ACTIVE_STATUSES:
            raise usage_error(
                f"Execution {execution.id} is still {execution.status}; cancel it first "
                "(or wait for it to end) to start it again."
            )
        new_id = durable.start(
            execution.workflow_name,
            execution.input,
            queue=execution.queue,
            priority=execution.priority,
        )
        self.stdout.write(str(new_id))
