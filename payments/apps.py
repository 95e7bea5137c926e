from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"

    def ready(self) -> None:
        # Lazy: apps.py is imported before the models; ready() runs once they are.
        # Registers checks, jobs and the webhook's OpenAPI path.
        from payments import checks, jobs  # noqa: F401
        from payments.webhooks import jobs as webhook_jobs  # noqa: F401
        from payments.webhooks import openapi as webhook_openapi  # noqa: F401
