from django_durable import waits
from django_durable.management.base import DurableCommand, resolve_execution


class Command(DurableCommand):
    help = (
        "Withdraw an open wait of an active execution: the event wait for event NAME, "
        "else the pending input NAME. The step runs again and its wait call raises "
        "WaitCancelled(reason), which it may catch. ID may be a unique prefix."
    )

    def add_arguments(self, parser):
        parser.add_argument("id", metavar="ID", help="Execution id or a unique prefix of it.")
        parser.add_argument("name", metavar="NAME", help="The event or input name waited on.")
        parser.add_argument(
            "--reason",
            default="cancelled",
            metavar="TEXT",
            help='Why (the step sees it as WaitCancelled.reason; default "cancelled").',
        )

    def handle(self, *args, **options):
        execution = resolve_execution(options["id"])
        waits.cancel_wait(execution.id, options["name"], reason=options["reason"])
        self.stdout.write(f"Cancelled the wait for {options['name']!r} of {execution.id}.")
