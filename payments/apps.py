from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"

    def ready(self) -> None:
        from payments import checks, jobs, webhook_jobs  # noqa: F401 - registers checks and jobs
