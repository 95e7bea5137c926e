from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"

    def ready(self) -> None:
        # Lazy: apps.py is imported before the models; ready() runs once they are.
        from payments import checks, jobs  # noqa: F401 - registers checks and jobs
