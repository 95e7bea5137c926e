from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        # Lazy: apps.py is imported before the models; ready() runs once they are.
        # Registers this app's jobs, API scopes and paths, and Stripe webhook handlers.
        from billing import api, api_openapi, jobs, webhooks  # noqa: F401
