"""The project's settings plus the drill-only jobs: what a drill's clusters run
with when the drill needs a job no production app declares."""

from config.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "reliability.drill_apps.DrillJobsConfig"]  # noqa: F405
