import json

from django.core.management.base import BaseCommand

from jobs.registry import all_jobs


class Command(BaseCommand):
    help = "List the registered jobs: name, schedule, queue, timeout and parameters."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="print the catalogue as JSON")

    def handle(self, *args, **options) -> None:
        specs = all_jobs()
        if options["json"]:
            self.stdout.write(json.dumps([s.describe() for s in specs], indent=2))
            return
        if not specs:
            self.stdout.write("no jobs registered")
            return
        width = max(len(s.name) for s in specs)
        for spec in specs:
            params = ", ".join(
                f"{p.name}: {p.type.__name__}"
                + ("" if p.required else f" = {p.describe()['default']!r}")
                for p in spec.params
            )
            self.stdout.write(
                f"{spec.name:<{width}}  {spec.schedule or 'on demand':<16}  "
                f"queue={spec.queue:<8} timeout={spec.timeout}s  ({params or 'no params'})"
            )
            if spec.description:
                self.stdout.write(f"{'':<{width}}  {spec.description}")
