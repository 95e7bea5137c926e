"""Shared fixtures: throwaway jobs, draining the broker in-process, DB checks."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils.module_loading import import_string
from django_q.brokers import get_broker
from django_q.signing import SignedPackage

from jobs import registry
from tests.clock import pin_from_env
from tests.fixtures_moto import moto_server_url, moto_ses_url, ses  # noqa: F401
from tests.fixtures_sns import sns, sns_cert_server  # noqa: F401
from tests.fixtures_stripe import localstripe, stripe_org, stripe_settings  # noqa: F401
from tests.fixtures_webhook import webhook_receiver  # noqa: F401

PINNED_CLOCK = pytest.StashKey()


def on_postgres() -> bool:
    return connection.vendor == "postgresql"


def pytest_configure(config):
    moment = pin_from_env()
    if moment is not None:
        config.stash[PINNED_CLOCK] = moment


def pytest_report_header(config):
    moment = config.stash.get(PINNED_CLOCK, None)
    return f"clock pinned by TEST_CLOCK to {moment.isoformat()}" if moment else None


def pytest_collection_modifyitems(config, items):
    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" in engine:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: run with DATABASE_URL (see .ci/run)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def register_job():
    """Declare jobs for one test; they are removed afterwards."""
    names = []

    def _register(name: str, **options):
        def decorator(func):
            registry.job(name, **options)(func)
            names.append(name)
            return func

        return decorator

    yield _register
    for name in names:
        registry.unregister(name)


def run_queued_tasks(max_tasks: int = 100) -> int:
    """Execute what is waiting in the broker, in this process (a worker's job)."""
    broker = get_broker()
    ran = 0
    while ran < max_tasks:
        if not broker.queue_size():  # dequeue() on an empty queue sleeps
            break
        tasks = broker.dequeue()
        if not tasks:
            break
        for ack_id, payload in tasks:
            task = SignedPackage.loads(payload)
            func = task["func"]
            if isinstance(func, str):
                func = import_string(func)
            func(*task.get("args", ()), **task.get("kwargs", {}))
            broker.acknowledge(ack_id)
            ran += 1
    return ran


@pytest.fixture
def drain_queue():
    return run_queued_tasks


@pytest.fixture
def empty_broker(db):
    """The Redis broker outlives test transactions: start and end with it empty.
    Modules that enqueue use it with `pytest.mark.usefixtures("empty_broker")`."""
    get_broker().purge_queue()
    yield
    get_broker().purge_queue()
