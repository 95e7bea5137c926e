from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        from jobs import checks, scheduler_tick, task_guard  # noqa: F401 - registers the checks

        scheduler_tick.install()
        task_guard.install()
