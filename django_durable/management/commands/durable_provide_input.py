import django_durable as durable
from django_durable.management.base import (
    DurableCommand,
    answer_from,
    resolve_execution,
    to_json,
)


class Command(DurableCommand):
    help = (
        "Answer a pending input (wait_for_input and its wrappers) of an execution; the "
        "waiting step resumes with the answer. DATA is JSON when it looks like JSON "
        '(true, 3, ["a"], {"k": 1}, "quoted"), else the text itself: approved, rejected, '
        "some words. ID may be a unique prefix."
    )

    def add_arguments(self, parser):
        parser.add_argument("id", metavar="ID", help="Execution id or a unique prefix of it.")
        parser.add_argument("name", metavar="NAME", help="The input's name.")
        parser.add_argument("data", metavar="DATA", nargs="?", help="The answer.")
        parser.add_argument(
            "--json-file", metavar="PATH", help="Read the answer (JSON) from a file instead."
        )
        parser.add_argument(
            "--responded-by", metavar="WHO", help="Who answered (kept with the answer)."
        )

    def handle(self, *args, **options):
        value = answer_from(options["data"], options["json_file"], required=True)
        execution = resolve_execution(options["id"])
        cleaned = durable.provide_input(
            execution.id, options["name"], value, responded_by=options["responded_by"]
        )
        self.stdout.write(f"Answered {options['name']!r} of {execution.id}: {to_json(cleaned)}")
