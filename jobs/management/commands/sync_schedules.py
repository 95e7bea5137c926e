from django.core.management.base import BaseCommand

from jobs.schedules import sync_schedules


class Command(BaseCommand):
    help = (
        "Create a django-q2 schedule for every registered job that has a default "
        "schedule. Idempotent; never overwrites a schedule staff edited."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--prune",
            action="store_true",
            help="delete schedules of jobs that no longer exist",
        )

    def handle(self, *args, **options) -> None:
        for result in sync_schedules(prune=options["prune"]):
            detail = f" ({result.detail})" if result.detail else ""
            self.stdout.write(f"{result.action:<9} {result.job}{detail}")
