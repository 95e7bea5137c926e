import contextlib
import io
import json
import logging
import sys
from collections.abc import Iterator

from django.core.management.base import BaseCommand, CommandError

from jobs.models import RunStatus, Trigger
from jobs.params import ParamError, to_utc_datetime
from jobs.registry import UnknownJob, get_job
from jobs.runner import SlotTaken, run_job
from jobs.tenants import UnknownTenant


def check_text(what: str, value: str) -> None:
    """Refuse argv no database stores: bytes that are not UTF-8 (Python hands
    them over as lone surrogates) and NUL characters."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CommandError(f"{what} is not valid UTF-8: {value!r}") from None
    if "\x00" in value:
        raise CommandError(f"{what} may not contain NUL characters: {value!r}")


def parse_param_pairs(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise CommandError(f"--param expects name=value, got {pair!r}")
        if name in params:
            raise CommandError(f"--param {name!r} given twice")
        params[name] = value
    return params


# Exit codes (README, Management commands): 0 the run succeeded or ended
# partial; 1 bad arguments (a CommandError, nothing recorded) or the run
# failed; 3 not run, because the slot already has a run.
EXIT_SLOT_TAKEN = 3


class Command(BaseCommand):
    help = (
        "Run a job now, in this process, and print its summary. Exit codes: 0 succeeded or "
        "partial, 1 bad arguments or the run failed, 3 not run (the slot already has a run)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="job name, e.g. subscriptions.expire (see `jobs`)")
        parser.add_argument("--tenant", default="", help="run for one tenant (its key)")
        parser.add_argument("--dry-run", action="store_true", help="compute, write nothing")
        parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="a job parameter; repeat for several",
        )
        parser.add_argument(
            "--slot",
            help="the slot (ISO 8601, UTC if no offset) the run is for; default now",
        )
        parser.add_argument("--json", action="store_true", help="print the run as JSON")

    def handle(self, *args, **options) -> None:
        check_text("the job name", options["name"])
        check_text("--tenant", options["tenant"])
        for pair in options["param"]:
            check_text("--param", pair)
        if options["slot"]:
            check_text("--slot", options["slot"])
        try:
            spec = get_job(options["name"])
        except UnknownJob as exc:
            raise CommandError(f"{exc}; `manage.py jobs` lists them") from None
        params = parse_param_pairs(options["param"])
        slot = None
        if options["slot"]:
            try:
                slot = to_utc_datetime(options["slot"])
            except (TypeError, ValueError):
                raise CommandError(
                    f"--slot must be an ISO 8601 datetime, got {options['slot']!r}"
                ) from None
        bar = self._progress_bar(options["json"])
        try:
            with logs_above_the_bar() if bar else contextlib.nullcontext():
                run = run_job(
                    spec.name,
                    tenant=options["tenant"],
                    params=params,
                    dry_run=options["dry_run"],
                    trigger=Trigger.CLI,
                    triggered_by=_whoami(),
                    slot=slot,
                    on_progress=bar.update if bar else None,
                )
        except (ParamError, UnknownTenant) as exc:
            raise CommandError(str(exc)) from None
        except SlotTaken as exc:
            self.stdout.write(str(exc))
            sys.exit(EXIT_SLOT_TAKEN)
        finally:
            if bar:
                bar.close()
        self._report(run, as_json=options["json"])
        if run.status == RunStatus.FAILED:
            reason = (run.error or "no error recorded").splitlines()[0]
            raise CommandError(f"run #{run.pk} failed: {reason}")

    def _progress_bar(self, as_json: bool):
        if as_json or not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        bar = tqdm(unit="item", file=sys.stderr, leave=False)

        class Updater:
            def update(self, done: int, total: int | None) -> None:
                if total is not None and bar.total != total:
                    bar.total = total
                bar.n = done
                bar.refresh()

            def close(self) -> None:
                bar.close()

        return Updater()

    def _report(self, run, *, as_json: bool) -> None:
        data = {
            "run_id": run.pk,
            "job": run.job,
            "tenant": run.tenant,
            "status": run.status,
            "dry_run": run.dry_run,
            "params": run.params,
            "counts": run.counts,
            "summary": run.summary,
            "error": run.error,
            "failures": [{"item": f.item_key, "error": f.error} for f in run.failures.all()[:100]],
        }
        if as_json:
            self.stdout.write(json.dumps(data, indent=2, default=str))
            return
        self.stdout.write(
            f"run #{run.pk} {run.job}{' (dry run)' if run.dry_run else ''}: {run.status}"
        )
        counts = ", ".join(f"{k} {v}" for k, v in run.counts.items())
        self.stdout.write(f"  counts: {counts}")
        for key, value in run.summary.items():
            self.stdout.write(f"  {key}: {json.dumps(value, default=str)}")
        for failure in data["failures"]:
            self.stdout.write(f"  failed item {failure['item']}: {failure['error']}")
        if run.error:
            self.stdout.write(f"  error: {run.error.splitlines()[0]}")


class _AboveTheBar(io.TextIOBase):
    """A log handler's stream that writes through tqdm: the bar is cleared,
    the line written, the bar drawn again below it."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        from tqdm import tqdm

        tqdm.write(text, file=self.stream, end="")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def logs_above_the_bar() -> Iterator[None]:
    """While a progress bar is on the terminal, log lines go above it instead
    of through it (the root logger's console handlers write via tqdm)."""
    handlers = [
        h
        for h in logging.getLogger().handlers
        if type(h) is logging.StreamHandler and h.stream in (sys.stderr, sys.stdout)
    ]
    originals = [h.stream for h in handlers]
    for handler, stream in zip(handlers, originals, strict=True):
        handler.setStream(_AboveTheBar(stream))
    try:
        yield
    finally:
        for handler, stream in zip(handlers, originals, strict=True):
            handler.setStream(stream)


def _whoami() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"
