from django.apps import AppConfig


class MaintenanceConfig(AppConfig):
    name = "maintenance"

    def ready(self) -> None:
        # Lazy: apps.py is imported before the models; ready() runs once they are.
        from maintenance import jobs  # noqa: F401 - registers this app's jobs
