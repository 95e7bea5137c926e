"""The commands the README's Deploying section and the container image run,
run here as an operator runs them (subprocesses, no container): the
entrypoint's one-off `runjob` and its refusals, and `bin/serve` (development)
stopping cleanly on SIGTERM. `bin/web` is driven in tests/browser, `bin/worker`
(qcluster) in reliability/ (graceful_shutdown)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.conf import settings

from tests.fixtures_moto import free_port

BASE_DIR = Path(settings.BASE_DIR)
ENTRYPOINT = BASE_DIR / "bin" / "entrypoint"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> dict[str, str]:
    """A fresh SQLite deployment migrated by `entrypoint migrate`."""
    tmp = tmp_path_factory.mktemp("deploy")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST", "DJANGO_"))
        and k not in {"REDIS_URL", "DATABASE_URL", "STATICFILES_BACKEND"}
    }
    env.update(
        {
            "ENV_FILE": "",
            "DEBUG": "false",
            "SECRET_KEY": "deploy-test-secret-key-" + "y" * 30,
            "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "DATABASE_URL": f"sqlite:///{tmp / 'deploy.sqlite3'}",
            "LOG_LEVEL": "WARNING",
        }
    )
    run(env, "migrate")
    return env


def run(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(ENTRYPOINT), *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def test_migrate_creates_the_schedules(deployment):
    listed = run(deployment, "manage", "jobs")
    assert "notifications.send_pending" in listed.stdout


def test_a_one_off_runjob_runs_and_prints_its_summary(deployment):
    done = run(deployment, "runjob", "maintenance.cleanup", "--dry-run")
    assert "maintenance.cleanup (dry run): succeeded" in done.stdout


def test_runjob_on_a_slot_that_already_ran_says_so_and_exits_3(deployment):
    slot = "2026-01-05T10:00:00Z"
    run(deployment, "runjob", "maintenance.cleanup", "--slot", slot)
    again = run(deployment, "runjob", "maintenance.cleanup", "--slot", slot, check=False)
    assert again.returncode == 3
    assert "not run: slot already has run #" in again.stdout
    assert "(succeeded)" in again.stdout


def test_runjob_refuses_an_unknown_job_with_exit_1(deployment):
    done = run(deployment, "runjob", "no.such_job", check=False)
    assert done.returncode == 1 and "no.such_job" in done.stderr


def test_an_unknown_entrypoint_command_is_refused(deployment):
    done = run(deployment, "serve-everything", check=False)
    assert done.returncode == 64 and "unknown command" in done.stderr


def test_bin_serve_stops_web_and_cluster_on_sigterm(deployment):
    port = free_port()
    env = {**deployment, "DEBUG": "true", "PORT": str(port), "Q_SHUTDOWN_GRACE_SECONDS": "5"}
    process = subprocess.Popen(
        [str(BASE_DIR / "bin" / "serve")],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("bin/serve did not listen")
        time.sleep(2)  # the cluster is up too
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert time.monotonic() - began < 10
        leftovers = subprocess.run(
            ["pgrep", "-s", str(process.pid)], capture_output=True, text=True
        ).stdout.split()
        assert leftovers == []  # runserver, qcluster and its workers all gone
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.parametrize(
    "how",
    ["SIGTERM to the main process", "SIGTERM to the process group", "SIGINT (Ctrl-C)"],
)
def test_bin_worker_stops_within_the_grace(deployment, how):
    env = {**deployment, "Q_WORKERS": "2", "Q_SHUTDOWN_GRACE_SECONDS": "6", "LOG_LEVEL": "INFO"}
    process = subprocess.Popen(
        [str(BASE_DIR / "bin" / "worker")],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        seen = ""
        while "running." not in seen and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            seen += line
        assert "running." in seen, seen[-2000:]
        began = time.monotonic()
        if how.startswith("SIGINT"):
            process.send_signal(signal.SIGINT)
        elif "group" in how:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        took = time.monotonic() - began
        leftovers = subprocess.run(
            ["pgrep", "-s", str(process.pid)], capture_output=True, text=True
        ).stdout.split()
        assert leftovers == [], output[-2000:]
        assert took < 6 + 1, output[-2000:]
        assert "has stopped" in output, output[-2000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_bin_web_with_json_logs_writes_only_json_lines(deployment, tmp_path):
    port = free_port()
    env = {
        **deployment,
        "PORT": str(port),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "GUNICORN_ACCESS_LOG": "true",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "STATIC_ROOT": str(tmp_path / "static"),
    }
    run(env, "collectstatic")
    process = subprocess.Popen(
        [str(BASE_DIR / "bin" / "web")],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    status = None
    try:
        deadline = time.monotonic() + 60
        while status is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/admin/login/", timeout=2
                ) as r:
                    status = r.status
            except OSError:
                time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert status == 200, output[-2000:]
    records = [json.loads(line) for line in output.splitlines() if line.strip()]
    messages = " | ".join(r["message"] for r in records)
    assert "Listening at" in messages and "Shutting down: Master" in messages
    assert any(r["logger"] == "gunicorn.access" for r in records)  # the request, as JSON
    assert all({"timestamp", "level", "logger", "message"} <= set(r) for r in records)
