"""Registers the drill-only jobs in a drill's clusters (reliability.drill_settings)."""

from django.apps import AppConfig


class DrillJobsConfig(AppConfig):
    name = "reliability"
    label = "reliability_drill"

    def ready(self) -> None:
        from reliability import drill_jobs  # noqa: F401 - registers the drill jobs
