"""The production path, as an operator starts it: `bin/entrypoint migrate`,
`collectstatic`, then `bin/web` (gunicorn, DEBUG=false, whitenoise), and the
admin in a real Chromium with its stylesheet applied.

Everything runs in subprocesses through the same scripts the container image
runs, on a throwaway SQLite file (the ORM broker), so the server sees the
data the commands wrote. The security settings for DEBUG=false are told this
is plain HTTP on loopback (no TLS redirect, no secure-only cookies).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.conf import settings

from tests.browser.conftest import needs_chromium
from tests.fixtures_moto import free_port

pytestmark = [pytest.mark.browser, needs_chromium]

BASE_DIR = Path(settings.BASE_DIR)
ADMIN_PASSWORD = "prod-admin-pass-1"
# The admin's header colour (--header-bg: var(--secondary), #417690), light scheme.
ADMIN_HEADER_BG = "rgb(65, 118, 144)"
HASHED_CSS = re.compile(r"/static/admin/css/base\.[0-9a-f]{12}\.css$")


def production_env(tmp: Path, port: int) -> dict[str, str]:
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
            "SECRET_KEY": "production-test-secret-key-" + "x" * 30,
            "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "DATABASE_URL": f"sqlite:///{tmp / 'prod.sqlite3'}",
            "STATIC_ROOT": str(tmp / "static"),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PORT": str(port),
            "WEB_CONCURRENCY": "2",
            "ADMIN_USERNAME": "admin",
            "ADMIN_PASSWORD": ADMIN_PASSWORD,
            # Plain HTTP on loopback: the security settings' TLS parts off.
            "SECURE_SSL_REDIRECT": "false",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            "SECURE_HSTS_SECONDS": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(BASE_DIR / "bin" / "entrypoint"), *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"entrypoint {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def wait_for_port(port: int, process: subprocess.Popen, *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"bin/web exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"bin/web did not listen on {port} within {timeout} s")


@pytest.fixture(scope="module")
def production_server(tmp_path_factory) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """A deployment from nothing: migrate (+ schedules, admin user),
    collectstatic, then bin/web in its own process group."""
    tmp = tmp_path_factory.mktemp("production")
    port = free_port()
    env = production_env(tmp, port)
    entrypoint(env, "migrate")
    entrypoint(env, "collectstatic")
    log_path = tmp / "web.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(BASE_DIR / "bin" / "web")],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}", process, log_path
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_admin_through_gunicorn_has_its_stylesheet_applied(browser, production_server):
    url, _, log_path = production_server
    context = browser.new_context(base_url=url, color_scheme="light")
    try:
        page = context.new_page()
        stylesheets = []
        page.on(
            "response",
            lambda r: stylesheets.append(r) if r.url.endswith(".css") else None,
        )
        response = page.goto("/admin/login/")
        assert response.status == 200
        assert "gunicorn" in (response.headers.get("server") or "").lower()

        header_bg = page.eval_on_selector("#header", "el => getComputedStyle(el).backgroundColor")
        assert header_bg == ADMIN_HEADER_BG, log_path.read_text()[-2000:]
        base_css = [r for r in stylesheets if HASHED_CSS.search(r.url)]
        assert base_css, [r.url for r in stylesheets]
        assert base_css[0].status == 200
        cache_control = base_css[0].headers["cache-control"]
        assert "max-age=315360000" in cache_control and "immutable" in cache_control

        page.fill("#id_username", "admin")
        page.fill("#id_password", ADMIN_PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(re.compile(r"/admin/$"))
        page.goto("/admin/jobs/overview/")
        assert page.locator("#header").count() == 1
        assert "notifications.send_pending" in page.content()  # schedules from migrate
    finally:
        context.close()


def test_gunicorn_stops_cleanly_on_sigterm(production_server):
    _, process, log_path = production_server
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=30)
    assert code == 0, log_path.read_text()[-2000:]
    assert time.monotonic() - started < 25
    assert "Shutting down: Master" in log_path.read_text()
