"""A database migrated before the ladder (AuditTrail in `maintenance`) migrates forward.

tests/fixtures/schema_before_ladder.sql is `pg_dump --inserts` of main at
04e4a7b, migrated, with three audit records (a single change, a bulk change,
an old one), a group and a user holding audit permissions, and an admin log
entry about an audit record. It is loaded into a database of its own
(`<the DATABASE_URL's name>_old`, dropped and made afresh), `manage.py
migrate` runs there in a child process, and the rows are read back through
the new model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from psycopg import sql

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
DUMP = ROOT / "tests" / "fixtures" / "schema_before_ladder.sql"

READ_BACK = """
import json
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from audit.models import AuditTrail
from audit.selectors import audit_of_object
print(json.dumps({
    "rows": list(AuditTrail.objects.order_by("pk").values(
        "actor", "tenant", "action", "object_id", "object_ids", "changes", "job_run_id",
        "request_id")),
    "bulk_found": list(audit_of_object(
        object_type="subscriptions.subscription", object_id=2, tenant="acme"
    ).values_list("action", flat=True)),
    "types": sorted(
        f"{t.app_label}.{t.model}" for t in ContentType.objects.filter(model="audittrail")
    ),
    "group_perms": sorted(Group.objects.get(name="auditors").permissions.values_list(
        "content_type__app_label", "codename")),
    "user_can": [User.objects.get(username="auditor").has_perm(p) for p in
                 ("audit.view_audittrail", "audit.delete_audittrail")],
    "log_model": LogEntry.objects.get().content_type.model_class().__module__,
}))
"""


def _server_and_name() -> tuple[dict, str]:
    db = settings.DATABASES["default"]
    conninfo = {
        "host": db["HOST"] or "127.0.0.1",
        "port": db["PORT"] or 5432,
        "user": db["USER"],
        "password": db["PASSWORD"] or None,
    }
    return {k: v for k, v in conninfo.items() if v is not None}, f"{db['NAME']}_old"


def _manage(args: list[str], database_url: str) -> str:
    env = {**os.environ, "DATABASE_URL": database_url, "ENV_FILE": "", "DEBUG": "true"}
    env.pop("TEST_DATABASE_NAME", None)
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture
def old_database():
    server, name = _server_and_name()
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(dbname=name, autocommit=True, **server) as conn:
        conn.execute(DUMP.read_text())
    auth = server["user"] + (f":{server['password']}" if server.get("password") else "")
    yield f"postgres://{auth}@{server['host']}:{server['port']}/{name}"
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        admin.execute(drop.format(sql.Identifier(name)))


def test_a_database_from_before_the_ladder_migrates_forward_keeping_its_audit_trail(
    old_database,
):
    _manage(["migrate", "--no-input", "-v", "0"], old_database)
    found = json.loads(_manage(["shell", "-c", READ_BACK], old_database).splitlines()[-1])

    assert [row["action"] for row in found["rows"]] == [
        "subscription.cancelled",
        "subscription.expired",
        "job.run",
    ]
    assert found["rows"][0]["changes"] == {"status": ["active", "canceled"]}
    assert found["rows"][0]["request_id"] == "req-1"
    assert found["rows"][1]["object_ids"] == [1, 2, 3]
    assert found["rows"][1]["job_run_id"] == 42
    assert found["bulk_found"] == ["subscription.expired"]
    # The content type moved with the model: one, in audit; permissions follow.
    assert found["types"] == ["audit.audittrail"]
    assert found["group_perms"] == [["audit", "view_audittrail"]]
    assert found["user_can"] == [True, True]
    assert found["log_model"] == "audit.models"
    # Nothing left for makemigrations: the moved state matches the models.
    _manage(["makemigrations", "--check", "--dry-run"], old_database)
