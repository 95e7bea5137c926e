from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        # Lazy: apps.py is imported before the models; ready() runs once they are.
        from jobs.alert_channels import register_channel
        from jobs.metrics import register_metric_source
        from jobs.panels import register_panel
        from notifications import jobs  # noqa: F401 - registers this app's jobs
        from notifications.alert_channel import EmailChannel
        from notifications.metrics import outbox_metrics
        from notifications.selectors import status_counts

        register_panel(
            "Email outbox",
            status_counts,
            url_name="admin:notifications_outboundemail_changelist",
        )
        register_metric_source(outbox_metrics)
        register_channel(EmailChannel())
