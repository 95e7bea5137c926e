"""Run the benchmarks: `python -m bench [workload ...]` (see bench/__init__.py)."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import time

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/backoffice_bench"


def setup_django() -> None:
    """Point Django at the bench database, creating and migrating it if needed."""
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
    # DEBUG is off: settings refuse to start without a field-encryption key.
    os.environ.setdefault("FIELD_ENCRYPTION_KEY", "YmVuY2gtb25seS1maWVsZC1lbmNyeXB0aW9uLWtleSE=")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # /metrics is off unless a token guards it (jobs.metrics_access); the
    # metrics_scrape workload scrapes as Prometheus would, with the token.
    os.environ.setdefault("METRICS_TOKEN", "bench-only-metrics-token")
    _create_database(os.environ["DATABASE_URL"])

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def _create_database(url: str) -> None:
    import environ
    import psycopg
    from psycopg import sql

    config = environ.Env.db_url_config(url)
    if "postgresql" not in config["ENGINE"]:
        sys.exit(f"bench needs PostgreSQL; DATABASE_URL is {url!r}")
    params = {
        "host": config.get("HOST") or None,
        "port": config.get("PORT") or None,
        "user": config.get("USER") or None,
        "password": config.get("PASSWORD") or None,
    }
    params = {k: v for k, v in params.items() if v}
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config["NAME"])))
            print(f"bench: created database {config['NAME']}", file=sys.stderr)


def workload_names() -> list[str]:
    from bench import workloads

    return sorted(
        m.name for m in pkgutil.iter_modules(workloads.__path__) if not m.name.startswith("_")
    )


def main(argv: list[str]) -> int:
    names = argv or workload_names()
    unknown = sorted(set(names) - set(workload_names()))
    if unknown:
        print(f"unknown workload(s): {', '.join(unknown)}; have: {', '.join(workload_names())}")
        return 2
    setup_django()
    from bench.common import format_line

    started = time.perf_counter()
    for name in names:
        module = importlib.import_module(f"bench.workloads.{name}")
        result = module.run()
        print(format_line(name, result), flush=True)
    print(f"bench: done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
