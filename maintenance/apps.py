from django.apps import AppConfig


class MaintenanceConfig(AppConfig):
    name = "maintenance"

    def ready(self) -> None:
        from maintenance import jobs  # noqa: F401 - registers this app's jobs (app registry ready)
