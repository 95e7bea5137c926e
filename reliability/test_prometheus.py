"""A real Prometheus (Debian's /usr/bin/prometheus, on a free loopback port,
with its own storage in a temp dir) scrapes a running service: gunicorn
(bin/web) in front of the drill's database, with a cluster running a job
every 2 s. The README's example queries must return series labelled
`job_name` (none `exported_job`), the alerting rules must load, and every
query of the Grafana dashboard must evaluate."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from jobs.models import JobRun, RunStatus
from jobs.schedules import _sync_heartbeat, pause
from reliability.conftest import (
    BASE_DIR,
    LOG_DIR,
    create_schedule,
    next_slot,
    report,
    wait_for,
)
from tests.fixtures_moto import free_port

PROMETHEUS = Path("/usr/bin/prometheus")
JOB = "notifications.send_pending"
SCRAPE_JOB = "backoffice-drill"


def readme_queries() -> list[str]:
    text = (BASE_DIR / "README.md").read_text()
    block = re.search(r"<!-- example-queries -->\s*```promql\n(.*?)```", text, re.S)
    assert block, "README has no example-queries block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def dashboard_queries() -> list[str]:
    dashboard = json.loads((BASE_DIR / "deploy" / "grafana" / "backoffice-jobs.json").read_text())
    return [
        t["expr"].replace("$job_name", ".*")
        for panel in dashboard["panels"]
        for t in panel["targets"]
    ]


def api(base: str, path: str, **params: str) -> dict[str, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen(
            argv,
            cwd=BASE_DIR,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@pytest.mark.skipif(not PROMETHEUS.exists(), reason="no /usr/bin/prometheus (.ci/run installs it)")
def test_a_real_prometheus_scrapes_the_service_and_the_readme_queries_return_series(
    clusters, tmp_path
):
    token = secrets.token_urlsafe(24)
    web_port, prom_port = free_port(), free_port()
    env = {
        **clusters.env,
        "METRICS_TOKEN": token,
        "PORT": str(web_port),
        "WEB_CONCURRENCY": "2",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "STATIC_ROOT": str(tmp_path / "static"),
        # plain HTTP on loopback: the DEBUG=false security settings' TLS parts off
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
    }
    clusters.start(1, METRICS_TOKEN=token)
    _sync_heartbeat()
    create_schedule(JOB, "*/2 * * * * *", first_slot=next_slot("*/2 * * * * *", after_seconds=1))
    web = start([str(BASE_DIR / "bin" / "web")], env, LOG_DIR / "prometheus-drill-web.log")
    (tmp_path / "token").write_text(token)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {BASE_DIR / "deploy" / "prometheus" / "alerts.yml"}
scrape_configs:
  - job_name: {SCRAPE_JOB}
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials_file: {tmp_path / "token"}
    static_configs:
      - targets: ["127.0.0.1:{web_port}"]
"""
    )
    prometheus = start(
        [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--web.enable-lifecycle",
        ],
        dict(os.environ),
        LOG_DIR / "prometheus-drill-prometheus.log",
    )
    base = f"http://127.0.0.1:{prom_port}"
    try:
        wait_for(
            lambda: JobRun.objects.filter(job=JOB, status=RunStatus.SUCCEEDED).count() >= 3,
            timeout=60,
            what="three runs of the job",
        )

        def target_up() -> bool:
            try:
                targets = api(base, "/api/v1/targets")["activeTargets"]
            except OSError:
                return False
            return bool(targets) and targets[0]["health"] == "up"

        wait_for(target_up, timeout=60, interval=0.5, what="Prometheus to scrape the service")

        def has_heartbeat() -> bool:
            return bool(
                api(base, "/api/v1/query", query="jobs_cluster_heartbeat_timestamp_seconds")[
                    "result"
                ]
            )

        wait_for(has_heartbeat, timeout=90, interval=1, what="a cluster heartbeat in Prometheus")
        time.sleep(3)  # a few scrapes, so rate() and increase() have two samples

        answers = {}
        for query in readme_queries():
            answers[query] = api(base, "/api/v1/query", query=query)["result"]
        exported = api(base, "/api/v1/query", query='{exported_job!=""}')["result"]
        runs = answers['jobs_runs_total{job_name="notifications.send_pending", status="succeeded"}']
        rules = [r for g in api(base, "/api/v1/rules")["groups"] for r in g["rules"]]
        dashboard_errors = []
        for query in dashboard_queries():
            try:
                api(base, "/api/v1/query", query=query)
            except Exception as exc:  # a query Prometheus refuses
                dashboard_errors.append(f"{query}: {exc}")
        pause(JOB, actor="reliability", reason="drill over")

        report(
            "drill prometheus_queries: Prometheus scraped gunicorn (bearer token) every 1 s; "
            f"README queries {len(answers)}, with series "
            f"{sum(1 for r in answers.values() if r)}; jobs_runs_total for {JOB} succeeded = "
            f"{runs[0]['value'][1] if runs else 'none'} (labels "
            f"{sorted(runs[0]['metric']) if runs else []}); exported_job series {len(exported)}; "
            f"alert rules loaded {len(rules)} (health "
            f"{','.join(sorted({r['health'] for r in rules}))}); dashboard queries "
            f"{len(dashboard_queries())}, refused {len(dashboard_errors)}"
        )
        empty = [q for q, result in answers.items() if not result]
        assert not empty, f"README queries with no series: {empty}"
        assert runs and float(runs[0]["value"][1]) >= 3
        assert runs[0]["metric"]["job"] == SCRAPE_JOB  # Prometheus' own label, untouched
        assert runs[0]["metric"]["job_name"] == JOB
        assert exported == []
        failed = answers['sum by (job_name) (increase(jobs_runs_total{status="failed"}[1h]))']
        assert all("job_name" in r["metric"] for r in failed)
        assert len(rules) == 7 and {r["health"] for r in rules} == {"ok"}
        assert not dashboard_errors, dashboard_errors
    finally:
        stop(prometheus)
        stop(web)
