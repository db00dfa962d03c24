import os

from django.apps import AppConfig


class BenchConfig(AppConfig):
    name = "bench"
    label = "durable_bench"
    verbose_name = "django-durable benchmark"

    def ready(self) -> None:
        # Set by bench_steps.py for the worker processes whose SQL it counts.
        path = os.environ.get("DURABLE_BENCH_COUNT_FILE")
        if path:
            from .sqlcount import count_process

            count_process(path)
