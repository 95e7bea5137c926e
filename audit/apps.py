from django.apps import AppConfig
from django.db.models.signals import post_save


class AuditConfig(AppConfig):
    name = "audit"

    def ready(self) -> None:
        # Lazy: models can only be imported once the app registry is ready.
        from audit.receivers import audit_job_action
        from jobs.models import JobAction

        # jobs never imports a business app, so the trail subscribes to it.
        post_save.connect(
            audit_job_action, sender=JobAction, dispatch_uid="maintenance.audit_job_action"
        )
