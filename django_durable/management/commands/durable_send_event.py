import django_durable as durable
from django_durable.management.base import (
    DurableCommand,
    answer_from,
    resolve_execution,
)


class Command(DurableCommand):
    help = (
        "Send an event to an execution: a step waiting for it (wait_for_event, "
        "wait_for_any, wait_for_all) resumes with the payload; one sent before the wait "
        "is reached is kept for it. PAYLOAD is JSON when it looks like JSON, else the "
        "text itself; none gives null. ID may be a unique prefix."
    )

    def add_arguments(self, parser):
        parser.add_argument("id", metavar="ID", help="Execution id or a unique prefix of it.")
        parser.add_argument("name", metavar="NAME", help="The event's name.")
        parser.add_argument("payload", metavar="PAYLOAD", nargs="?", help="The payload.")
        parser.add_argument(
            "--json-file", metavar="PATH", help="Read the payload (JSON) from a file instead."
        )

    def handle(self, *args, **options):
        payload = answer_from(options["payload"], options["json_file"], required=False)
        execution = resolve_execution(options["id"])
        durable.send_event(execution.id, options["name"], payload)
        self.stdout.write(f"Sent {options['name']!r} to {execution.id}.")
