from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        # Imported here: django_q.cluster sets Django up on import, so it can
        # only be loaded once the app registry is ready.
        # checks registers the checks; alerts the platform's jobs.evaluate_alerts.
        from jobs import alerts, checks, cluster, task_guard  # noqa: F401

        cluster.install()
        task_guard.install()
