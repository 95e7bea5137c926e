from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        from jobs.metrics import register_metric_source
        from jobs.panels import register_panel
        from notifications import jobs  # noqa: F401 - registers this app's jobs
        from notifications.metrics import outbox_metrics
        from notifications.selectors import status_counts

        register_panel(
            "Email outbox",
            status_counts,
            url_name="admin:notifications_outboundemail_changelist",
        )

        register_metric_source(outbox_metrics)

        try:
            from django_ses.signals import bounce_received, complaint_received
        except ImportError:  # django-ses not installed: no SES feedback to listen to
            return
        from notifications.services import on_bounce, on_complaint

        bounce_received.connect(on_bounce, dispatch_uid="notifications.on_bounce")
        complaint_received.connect(on_complaint, dispatch_uid="notifications.on_complaint")
