"""Settings as a process sees them at start-up (each case in a fresh interpreter)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    clean.update(env, DJANGO_SETTINGS_MODULE="config.settings", ENV_FILE="")
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


SETUP = "import django; django.setup(); "


def test_refuses_to_start_with_debug_off_and_no_secret(tmp_path):
    result = run_python(SETUP, DEBUG="false", DATABASE_URL=f"sqlite:///{tmp_path}/x.db")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_starts_with_debug_on_and_no_secret(tmp_path):
    result = run_python(
        SETUP + "print('ok')", DEBUG="true", DATABASE_URL=f"sqlite:///{tmp_path}/x.db"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_sqlite_default_uses_wal_and_a_busy_timeout(tmp_path):
    code = SETUP + (
        "from django.db import connection; c = connection.cursor(); "
        "print(c.execute('PRAGMA journal_mode').fetchone()[0], "
        "c.execute('PRAGMA busy_timeout').fetchone()[0])"
    )
    result = run_python(code, SECRET_KEY="x", DATABASE_URL=f"sqlite:///{tmp_path}/x.db")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wal", "30000"]


def test_redis_url_switches_broker_and_cache(tmp_path):
    code = SETUP + (
        "from django.conf import settings; "
        "print(settings.Q_CLUSTER.get('redis'), settings.Q_CLUSTER.get('orm'), "
        "settings.CACHES['default']['BACKEND'].rsplit('.', 1)[-1])"
    )
    result = run_python(
        code,
        SECRET_KEY="x",
        REDIS_URL="redis://127.0.0.1:6379/9",
        DATABASE_URL=f"sqlite:///{tmp_path}/x.db",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["redis://127.0.0.1:6379/9", "None", "RedisCache"]


def cache_location(tmp_path, **env: str) -> str:
    code = SETUP + "from django.conf import settings; print(settings.CACHES['default']['LOCATION'])"
    result = run_python(code, SECRET_KEY="x", DATABASE_URL=f"sqlite:///{tmp_path}/x.db", **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_cache_and_the_broker_use_different_redis_databases(tmp_path):
    derived = cache_location(tmp_path, REDIS_URL="redis://127.0.0.1:6379/9", CACHE_REDIS_URL="")
    assert derived == "redis://127.0.0.1:6379/10"
    assert cache_location(tmp_path, REDIS_URL="redis://h:6379", CACHE_REDIS_URL="") == (
        "redis://h:6379/1"
    )
    assert cache_location(tmp_path, REDIS_URL="redis://h:6379/15", CACHE_REDIS_URL="") == (
        "redis://h:6379/0"
    )
    given = cache_location(
        tmp_path, REDIS_URL="redis://127.0.0.1:6379/9", CACHE_REDIS_URL="redis://cache:6379/2"
    )
    assert given == "redis://cache:6379/2"


def invoices_storage(tmp_path, **env: str) -> subprocess.CompletedProcess:
    code = SETUP + (
        "from django.conf import settings; "
        "print(settings.STORAGES['invoices']['BACKEND'].rsplit('.', 1)[-1])"
    )
    clean = {"INVOICE_S3_BUCKET": "", "INVOICE_ENABLE_S3": ""}
    clean = {k: v for k, v in {**clean, **env}.items() if v}
    return run_python(code, SECRET_KEY="x", DATABASE_URL=f"sqlite:///{tmp_path}/x.db", **clean)


def test_invoice_pdfs_go_to_s3_when_a_bucket_is_set_unless_the_flag_says_no(tmp_path):
    assert invoices_storage(tmp_path).stdout.strip() == "FileSystemStorage"
    assert invoices_storage(tmp_path, INVOICE_S3_BUCKET="pdfs").stdout.strip() == "S3Storage"
    local = invoices_storage(tmp_path, INVOICE_S3_BUCKET="pdfs", INVOICE_ENABLE_S3="false")
    assert local.stdout.strip() == "FileSystemStorage"
    refused = invoices_storage(tmp_path, INVOICE_ENABLE_S3="true")
    assert refused.returncode != 0
    assert "INVOICE_S3_BUCKET is not set" in refused.stderr
