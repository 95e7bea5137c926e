from django.apps import AppConfig
from django.db.models.signals import post_save


class MaintenanceConfig(AppConfig):
    name = "maintenance"

    def ready(self) -> None:
        from jobs.models import JobAction
        from maintenance import jobs  # noqa: F401 - registers this app's jobs
        from maintenance.receivers import audit_job_action

        # jobs never imports a business app, so the trail subscribes to it.
        post_save.connect(
            audit_job_action, sender=JobAction, dispatch_uid="maintenance.audit_job_action"
        )
