"""The metrics and alerting rules, checked by Prometheus' own tool (promtool,
Debian's `prometheus` package; .ci/run installs it, and these tests skip
with the reason where it is missing)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from jobs.models import ClusterHeartbeat, RunStatus
from jobs.schedules import sync_schedules
from tests.factories import JobRunFactory, OutboundEmailFactory

PROMTOOL = shutil.which("promtool")
DEPLOY = Path(settings.BASE_DIR) / "deploy"
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool: install Debian's `prometheus` package (.ci/run does)"
)
pytestmark = needs_promtool


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60
    )


@pytest.mark.django_db
def test_a_real_scrape_passes_promtool_check_metrics(client):
    sync_schedules()
    JobRunFactory(status=RunStatus.SUCCEEDED, processed=3, succeeded=3)
    JobRunFactory(status=RunStatus.FAILED, started_at=timezone.now())
    JobRunFactory(status=RunStatus.RUNNING, finished_at=None)
    ClusterHeartbeat.objects.create(cluster="backoffice")
    OutboundEmailFactory()
    text = client.get("/metrics").content.decode()
    assert 'jobs_runs_total{job_name="tests.sample",status="failed"} 1.0' in text

    checked = promtool("check", "metrics", stdin=text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "", checked.stdout  # no lint findings either


def test_the_alerting_rules_are_valid():
    checked = promtool("check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout


def test_each_alert_fires_on_its_synthetic_series_and_only_then():
    tested = promtool("test", "rules", str(DEPLOY / "prometheus" / "alerts.test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    tests = (DEPLOY / "prometheus" / "alerts.test.yml").read_text()
    alerts = [line.split(":", 1)[1].strip() for line in rules.splitlines() if "- alert:" in line]
    assert len(alerts) == 7
    for alert in alerts:
        assert f"alertname: {alert}" in tests, f"no unit test for {alert}"


def test_the_example_scrape_config_is_valid():
    checked = promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_grafana_dashboard_queries_use_the_job_name_label():
    dashboard = json.loads((DEPLOY / "grafana" / "backoffice-jobs.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs and all("{job=" not in e and 'job="' not in e for e in exprs)
    assert any("job_name" in e for e in exprs)
