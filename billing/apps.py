from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        from billing import api, jobs  # noqa: F401 - registers this app's jobs and API scopes
