from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class DurableConfig(AppConfig):
    name = "django_durable"
    verbose_name = "Durable workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks as django_checks

        from . import checks
        from .graphs import runtime  # noqa: F401 (graph executions: their kind and move)

        django_checks.register(checks.check_durable_settings)
        django_checks.register(checks.check_sqlite_transaction_mode)
        autodiscover_modules("workflows")
