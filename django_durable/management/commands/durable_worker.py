import logging
import sys

from django.core.management.base import BaseCommand, CommandError

from django_durable.errors import WorkerError
from django_durable.worker import Worker


class Command(BaseCommand):
    help = (
        "Run workflow steps: claim runnable executions from the database and run them "
        "until stopped with SIGTERM/SIGINT (a second signal exits at once)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--queue",
            action="append",
            dest="queues",
            metavar="NAME",
            help="Queue to serve (repeatable). Default: every queue in DURABLE['QUEUES'].",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            metavar="N",
            help="Threads per queue, overriding DURABLE['QUEUES'][name]['concurrency'].",
        )
        parser.add_argument(
            "--burst", action="store_true", help="Exit as soon as nothing is runnable."
        )
        parser.add_argument("--name", help="Worker name (default: host:pid:random).")
        parser.add_argument(
            "--grace",
            type=float,
            metavar="SECONDS",
            help="How long running steps may finish after SIGTERM "
            "(default: DURABLE['SHUTDOWN_GRACE_SECONDS']).",
        )

    def handle(
        self, *args, queues=None, concurrency=None, burst=False, name=None, grace=None, **options
    ):
        if concurrency is not None and concurrency < 1:
            raise CommandError("--concurrency must be at least 1.")
        self._log_to_stderr(options["verbosity"])
        worker = Worker(
            queues, concurrency=concurrency, burst=burst, name=name, grace_seconds=grace
        )
        try:
            worker.run()
        except WorkerError as exc:
            raise CommandError(str(exc)) from exc

    def _log_to_stderr(self, verbosity: int) -> None:
        logger = logging.getLogger("django_durable")
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
