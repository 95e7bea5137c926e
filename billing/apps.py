from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        # Lazy: apps.py is imported before the models; ready() runs once they are.
        from billing import jobs  # noqa: F401 - registers this app's jobs
