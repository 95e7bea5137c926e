"""/metrics is not for the public: a bearer token, a port of its own, or off."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def test_without_a_token_or_port_metrics_are_off_in_production(client, settings):
    settings.METRICS_PUBLIC = False
    settings.METRICS_TOKEN = ""

    response = client.get("/metrics")

    assert response.status_code == 404
    assert "METRICS_TOKEN" in response.json()["error"]


def test_with_a_token_the_scraper_must_send_it(client, settings):
    settings.METRICS_PUBLIC = True  # a token wins over public
    settings.METRICS_TOKEN = "scrape-secret"

    missing = client.get("/metrics")
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secreT")
    right = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret")

    assert missing.status_code == 401 and wrong.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert right.status_code == 200
    assert b"jobs_metrics_scrape_error" in right.content


def test_with_an_exporter_port_metrics_are_served_there_and_not_on_the_site(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import django, urllib.request; django.setup(); "
        "from django.test import Client; "
        "print(Client().get('/metrics').status_code); "
        f"body = urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=10).read(); "
        "print(b'jobs_metrics_scrape_error' in body)"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "ENV_FILE": "",
        "SECRET_KEY": "x",
        "DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path}/m.db",
        "METRICS_EXPORT_PORT": str(port),
        "ALLOWED_HOSTS": "testserver",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["404", "True"]
