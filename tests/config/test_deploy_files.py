"""The container and orchestration files name only commands the entrypoint
has (tests/config/test_production_commands.py runs those), and probe the
health endpoints; the Dockerfile builds one non-root image for all of them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from django.conf import settings

BASE = Path(settings.BASE_DIR)
ENTRYPOINT_COMMANDS = set(
    re.findall(r"^  ([a-z]+)\)$", (BASE / "bin" / "entrypoint").read_text(), re.M)
)


def containers() -> list[dict]:
    found = []
    for path in sorted((BASE / "deploy" / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            spec = doc.get("spec", {})
            template = spec.get("template", {}).get("spec", {})
            found += template.get("containers", [])
    return found


def test_the_entrypoint_has_the_commands_the_image_runs():
    assert {"web", "worker", "migrate", "collectstatic", "runjob", "manage"} <= ENTRYPOINT_COMMANDS


def test_the_dockerfile_builds_one_non_root_image_on_python_3_11_slim():
    dockerfile = (BASE / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in dockerfile
    assert re.search(r"^USER app$", dockerfile, re.M)
    assert 'ENTRYPOINT ["bin/entrypoint"]' in dockerfile
    assert 'CMD ["web"]' in dockerfile
    assert "bin/entrypoint collectstatic" in dockerfile


def test_compose_runs_web_worker_and_migrate_on_postgres_and_redis():
    compose = yaml.safe_load((BASE / "compose.yaml").read_text())
    services = compose["services"]
    assert {"web", "worker", "migrate", "postgres", "redis"} <= set(services)
    for name in ("web", "worker", "migrate"):
        assert services[name]["command"][0] in ENTRYPOINT_COMMANDS
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["REDIS_URL"] != env["CACHE_REDIS_URL"]  # broker and cache apart
    assert "/health/live" in str(services["web"]["healthcheck"]["test"])
    grace = float(services["worker"]["environment"]["Q_SHUTDOWN_GRACE_SECONDS"])
    assert float(services["worker"]["stop_grace_period"].rstrip("s")) > grace


def test_kubernetes_probes_the_health_endpoints_and_outlasts_the_shutdown_grace():
    by_name = {c["name"]: c for c in containers()}
    assert {"web", "worker", "migrate", "runjob"} <= set(by_name)
    for container in by_name.values():
        assert container["args"][0] in ENTRYPOINT_COMMANDS
    web = by_name["web"]
    assert web["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert web["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    worker_doc = next(
        d
        for d in yaml.safe_load_all((BASE / "deploy" / "kubernetes" / "worker.yaml").read_text())
        if d["kind"] == "Deployment"
    )
    pod = worker_doc["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert pod["terminationGracePeriodSeconds"] > float(env["Q_SHUTDOWN_GRACE_SECONDS"])
    assert pod["securityContext"]["runAsNonRoot"] is True
