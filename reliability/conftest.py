"""Reliability drills: real `manage.py qcluster` processes on PostgreSQL + Redis.

The drills use pytest-django's transactional database (data is committed, so
the clusters see it) and hand the clusters that test database's name. Every
cluster runs in its own process group; teardown ends the groups, so no
qcluster outlives its test. Run them with `make reliability`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import Schedule

from jobs.cron import next_runs, normalize_cron
from jobs.enqueue import q_options
from jobs.models import ScheduleState
from jobs.registry import get_job
from jobs.schedules import RUNNER
from reliability.faultproxy import FaultProxy
from tests.fixtures_moto import REGION, SENDER, SesInbox, moto_server_url  # noqa: F401
from tests.fixtures_stripe import localstripe  # noqa: F401

BASE_DIR = Path(__file__).resolve().parent.parent
# A killed worker's run is abandoned this soon (the clusters and this process agree).
STALE_AFTER_SECONDS = 5
LOG_DIR = Path(os.environ.get("RELIABILITY_LOG_DIR", "/tmp/reliability-logs"))


logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the moto server's request log


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """The drills need the real parts; without them they are skipped, loudly.
    The bad-input test runs on any database (it needs no other process)."""
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" in engine and settings.REDIS_URL:
        return
    skip = pytest.mark.skip(
        reason="reliability drills need PostgreSQL and Redis: run `make reliability`"
    )
    for item in items:
        if "reliability" in str(item.fspath) and item.fspath.basename != "test_bad_input.py":
            item.add_marker(skip)


RESULTS: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The drills' result lines again, together, at the end of the run."""
    if RESULTS:
        terminalreporter.section("reliability drills")
        for line in RESULTS:
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"(cluster logs: {LOG_DIR})")


def report(line: str) -> None:
    """One result line per drill, on the terminal (`pytest -s`) and in the log."""
    RESULTS.append(line)
    print(f"\n{line}", flush=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / "results.txt", "a") as fh:
        fh.write(f"{datetime.now():%H:%M:%S} {line}\n")


def wait_for(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.25, what: str = ""
) -> Any:
    """Poll until `predicate()` is truthy; its value, or AssertionError at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
        time.sleep(interval)


def cluster_database_url() -> str:
    """DATABASE_URL, pointed at the database the test run created."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    name = connection.settings_dict["NAME"]
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


class Cluster:
    """One `manage.py qcluster` process group, its log file and its workers."""

    def __init__(self, name: str, process: subprocess.Popen, log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        return "running." in self.log()

    def worker_pids(self) -> list[int]:
        """Live worker processes (django-q2 logs each one's pid when it starts)."""
        pids = [int(p) for p in re.findall(r"ready for work at (\d+)", self.log())]
        return [pid for pid in pids if alive(pid)]

    def stop(self) -> None:
        """SIGKILL the whole process group: a drill's end needs no graceful stop,
        and nothing of it may outlive the test."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(self.process.pid), signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def process_tree(pid: int) -> list[int]:
    """`pid` and every live process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().split(")")[-1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        if alive(current):
            tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Clusters:
    """Starts qcluster processes that see this test's database and broker."""

    def __init__(self, test_name: str) -> None:
        self.test_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self.started: list[Cluster] = []
        self.env = self.base_env()

    @staticmethod
    def base_env() -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "ENV_FILE": "",
                "SECRET_KEY": settings.SECRET_KEY,  # tasks this process enqueues are signed
                "DEBUG": "false",
                "DATABASE_URL": cluster_database_url(),
                "REDIS_URL": settings.REDIS_URL,
                "Q_CLUSTER_PREFIX": settings.Q_CLUSTER["name"],
                "Q_WORKERS": "2",
                "JOBS_HEARTBEAT_SECONDS": "1",
                "JOBS_STALE_AFTER_SECONDS": str(STALE_AFTER_SECONDS),
                "LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": REGION,
            }
        )
        keys = getattr(settings, "FIELD_ENCRYPTION_KEY", None)
        if keys:  # the same keys as this process, so stored secrets decrypt
            env["FIELD_ENCRYPTION_KEY"] = ",".join(keys)
        return env

    def start(self, count: int = 1, **overrides: Any) -> list[Cluster]:
        """Start `count` clusters with these env overrides; wait until each runs."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        env = {**self.env, **{k: str(v) for k, v in overrides.items()}}
        new = []
        for _ in range(count):
            name = f"{self.test_name}-{len(self.started) + 1}"
            log_path = LOG_DIR / f"{name}.log"
            with open(log_path, "w") as log:
                process = subprocess.Popen(
                    [sys.executable, "manage.py", "qcluster"],
                    cwd=BASE_DIR,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, ended at teardown
                )
            cluster = Cluster(name, process, log_path)
            self.started.append(cluster)
            new.append(cluster)
        for cluster in new:
            wait_for(
                lambda c=cluster: c.running() or c.process.poll() is not None,
                timeout=60,
                what=f"{cluster.name} to start",
            )
            if cluster.process.poll() is not None:
                raise AssertionError(f"{cluster.name} exited:\n{cluster.log()[-3000:]}")
        return new

    def stop_all(self) -> None:
        for cluster in self.started:
            cluster.stop()


@pytest.fixture
def clusters(request: Any, transactional_db: Any, settings: Any) -> Iterator[Clusters]:
    """qcluster processes for one drill; stopped (process groups) before the
    test database is flushed."""
    settings.JOBS_STALE_AFTER_SECONDS = STALE_AFTER_SECONDS
    broker = get_broker()
    broker.purge_queue()
    manager = Clusters(request.node.name)
    try:
        yield manager
    finally:
        manager.stop_all()
        broker.purge_queue()


@pytest.fixture(scope="session")
def moto_url(moto_server_url: str) -> str:  # noqa: F811
    return moto_server_url


@pytest.fixture
def inbox(moto_url: str) -> SesInbox:
    """What the moto server accepted, emptied for this drill."""
    box = SesInbox()
    box.clear()
    return box


def ses_env(endpoint: str, **extra: Any) -> dict[str, Any]:
    """Cluster settings that send the outbox through SES at `endpoint`."""
    return {
        "EMAIL_BACKEND": "django_ses.SESBackend",
        "AWS_SES_REGION_NAME": REGION,
        "AWS_SES_REGION_ENDPOINT_URL": endpoint,
        "DEFAULT_FROM_EMAIL": SENDER,
        "EMAIL_RATE_LIMIT_KEY": f"drill-{uuid.uuid4().hex[:8]}",
        **extra,
    }


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """Start fault proxies in front of an upstream; all stopped at teardown."""
    proxies: list[FaultProxy] = []

    def start(upstream: str, **options: Any) -> FaultProxy:
        proxy = FaultProxy(upstream, **options).start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.stop()


def create_schedule(job: str, cron: str, *, first_slot: datetime | None = None) -> Schedule:
    """A job's schedule as `sync_schedules` makes it, with a drill's cron,
    first firing at `first_slot` (default: its next slot from now).

    django-q2's `Schedule.save()` replaces a new cron schedule's `next_run`
    with the cron's next time after now, so a `first_slot` given to create()
    would be lost whenever now is within the drill's lead time of a slot (the
    schedule would fire one slot early). The row is therefore created with
    repeats=0, which every scheduler leaves alone, and given its first slot
    and repeats=-1 in one UPDATE.
    """
    spec = get_job(job)
    normalized = normalize_cron(cron)
    schedule = Schedule.objects.create(
        name=spec.name,
        func=RUNNER,
        kwargs=repr({"job": spec.name, "q_options": q_options(spec)}),
        schedule_type=Schedule.CRON,
        cron=normalized,
        repeats=0,
        intended_date_kwarg="slot",
    )
    ScheduleState.objects.create(schedule=schedule, job=spec.name, synced_cron=normalized)
    first_slot = first_slot or next_runs(normalized, after=timezone.now(), count=1)[0]
    Schedule.objects.filter(pk=schedule.pk).update(next_run=first_slot, repeats=-1)
    schedule.refresh_from_db()
    assert schedule.next_run == first_slot, (schedule.next_run, first_slot)
    return schedule


def slots_between(stored: str, first: datetime, last: datetime) -> list[datetime]:
    """Every fire time of a stored cron from `first` to `last`, both included."""
    slots = [first]
    while True:
        nxt = next_runs(stored, after=slots[-1], count=1)[0]
        if nxt > last:
            return slots
        slots.append(nxt)


def slots_in(stored: str, after: datetime, until: datetime) -> list[datetime]:
    """The fire times of a stored cron after `after`, up to `until` included."""
    slots: list[datetime] = []
    while True:
        nxt = next_runs(stored, after=slots[-1] if slots else after, count=1)[0]
        if nxt > until:
            return slots
        slots.append(nxt)


def next_slot(cron: str, *, after_seconds: float) -> datetime:
    """The first slot of `cron` (as written) at least `after_seconds` from now."""
    return next_runs(
        normalize_cron(cron), after=timezone.now() + timedelta(seconds=after_seconds), count=1
    )[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of the drill's own on a free loopback port, without
    persistence (as .ci/run starts one), so a drill may restart it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> PrivateRedis:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(self._pong, timeout=20, what=f"redis on port {self.port}")
        return self

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=5)

    def restart(self) -> None:
        """Stop (nothing is saved) and start again on the same port: empty."""
        self.stop()
        self.start()


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl in a temp dir, a free
    loopback port), so a drill may restart it; never the shared server."""

    BIN = Path("/usr/lib/postgresql/15/bin")

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="drill-pg-"))
        self.data = self.dir / "data"
        self.name = "drill"
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/{self.name}"

    def _as_postgres(self, *argv: str) -> subprocess.CompletedProcess:
        command = [str(self.BIN / argv[0]), *argv[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)

    def start(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self._as_postgres("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust")
        self._pg_ctl("start")
        self._as_postgres(
            "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", self.name
        )
        return self

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            "pg_ctl",
            action,
            "-D",
            str(self.data),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "-l",
            str(self.dir / "server.log"),
            *extra,
        )

    def restart(self) -> None:
        """A fast restart: every connection is cut, the server is back in ~1 s."""
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            self._pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def on_database(url: str) -> Iterator[None]:
    """Point this process's default connection at another database for a while
    (a drill's private server): migrated, and switched back afterwards."""
    from django.core.management import call_command
    from django.db import connections

    conn = connections["default"]
    saved = dict(conn.settings_dict)
    parts = urlsplit(url)
    conn.close()
    conn.settings_dict.update(
        {
            "HOST": parts.hostname,
            "PORT": parts.port,
            "NAME": parts.path.lstrip("/"),
            "USER": parts.username or "postgres",
            "PASSWORD": "",
        }
    )
    try:
        call_command("migrate", verbosity=0)
        yield
    finally:
        conn.close()
        conn.settings_dict.clear()
        conn.settings_dict.update(saved)
