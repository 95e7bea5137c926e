from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"

    def ready(self) -> None:
        # Lazy: apps.py is imported before the models; ready() runs once they are.
        # Registers checks, jobs and the webhook's OpenAPI path.
        from payments import checks, jobs, webhook_jobs, webhook_openapi  # noqa: F401
