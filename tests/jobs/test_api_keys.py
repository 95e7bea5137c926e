"""Per-client API keys: stored as hashes, scoped, revocable, expiring, rate-limited."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_q.brokers import get_broker

from audit.models import AuditTrail
from jobs import api_keys
from jobs.api_keys import grants, hash_key, parse_scope, register_scope_resource
from jobs.models import ApiKey, JobAction, JobRun
from tests.factories import ApiKeyFactory, JobRunFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

RUNS_URL = "/api/jobs/tests.echo/runs"


@pytest.fixture
def echo(register_job):
    @register_job("tests.echo")
    def echo(ctx, *, n: int = 1):
        ctx.count(processed=n)

    @register_job("other.secret_job")
    def secret(ctx):
        pass

    return echo


@pytest.fixture
def call(client, django_capture_on_commit_callbacks):
    def _call(key: str | None, url: str = RUNS_URL, method: str = "post", body=None):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key is not None else {}
        with django_capture_on_commit_callbacks(execute=True):
            if method == "get":
                return client.get(url, **headers)
            return client.post(
                url, data=json.dumps(body or {}), content_type="application/json", **headers
            )

    return _call


def nothing_enqueued() -> bool:
    return not JobRun.objects.exists() and not get_broker().queue_size()


# --- the key itself ------------------------------------------------------------


def test_a_key_is_stored_only_as_a_hash_with_a_searchable_prefix():
    key = ApiKeyFactory()

    assert re.fullmatch(r"bo_live_[A-Za-z0-9]{12}_[A-Za-z0-9]{40}", key.secret)
    stored = ApiKey.objects.get(pk=key.pk)
    assert stored.secret_hash == hash_key(key.secret)
    row = ApiKey.objects.filter(pk=key.pk).values().get()
    assert key.secret not in json.dumps(row, default=str)  # no column holds it
    assert key.secret.startswith(stored.prefix)
    assert stored._meta.get_field("lookup").unique  # one indexed query finds it


def test_a_run_started_with_a_key_names_the_key_in_the_run_and_the_audit_trail(echo, call):
    key = ApiKeyFactory(name="ci-deploy", scopes=["jobs:run:tests.*"])

    response = call(key.secret, body={"params": {"n": 2}})

    assert response.status_code == 202
    run = JobRun.objects.get()
    assert (run.trigger, run.triggered_by) == ("api", "ci-deploy")
    record = AuditTrail.objects.get(job_run_id=run.pk)
    assert record.actor == "api:ci-deploy"


def test_authenticating_is_one_query_on_the_key_table(echo, call):
    key = ApiKeyFactory(scopes=["jobs:read"])
    call(key.secret, url="/api/jobs", method="get")  # sets last_used_at

    with CaptureQueriesContext(connection) as queries:
        assert call(key.secret, url="/api/jobs", method="get").status_code == 200

    on_keys = [q["sql"] for q in queries.captured_queries if "jobs_apikey" in q["sql"]]
    assert len(on_keys) == 1
    assert "lookup" in on_keys[0]


def test_last_used_at_is_recorded(echo, call):
    key = ApiKeyFactory(scopes=["jobs:read"])
    assert key.last_used_at is None

    call(key.secret, url="/api/jobs", method="get")

    key.refresh_from_db()
    assert key.last_used_at is not None


# --- refusals ----------------------------------------------------------------------


def test_a_key_without_the_run_scope_gets_403_naming_it(echo, call):
    key = ApiKeyFactory(scopes=["jobs:read"])

    response = call(key.secret)

    assert response.status_code == 403
    assert response.json()["missing_scope"] == "jobs:run:tests.echo"
    assert "jobs:run:tests.echo" in response.json()["error"]
    assert nothing_enqueued()


def test_a_glob_scope_covers_only_matching_jobs(echo, call):
    key = ApiKeyFactory(scopes=["jobs:run:tests.*"])

    refused = call(key.secret, url="/api/jobs/other.secret_job/runs")

    assert refused.status_code == 403
    assert refused.json()["missing_scope"] == "jobs:run:other.secret_job"
    assert nothing_enqueued()
    assert call(key.secret).status_code == 202


def test_the_catalogue_lists_only_jobs_the_key_may_read(echo, call):
    key = ApiKeyFactory(scopes=["jobs:read:tests.*"])

    names = [job["name"] for job in call(key.secret, "/api/jobs", "get").json()["jobs"]]

    assert names == ["tests.echo"]


def test_run_status_of_a_job_outside_the_scope_is_403(echo, call):
    run = JobRunFactory(job="other.secret_job")
    key = ApiKeyFactory(scopes=["jobs:read:tests.*"])

    response = call(key.secret, f"/api/jobs/runs/{run.pk}", "get")

    assert response.status_code == 403
    assert response.json()["missing_scope"] == "jobs:read:other.secret_job"


def test_a_revoked_key_is_401(echo, call):
    key = ApiKeyFactory()
    api_keys.revoke_api_key(api_key=key, actor="alice")

    response = call(key.secret)

    assert response.status_code == 401
    assert "revoked" in response.json()["error"]
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert nothing_enqueued()


def test_an_expired_key_is_401(echo, call):
    key = ApiKeyFactory(expires_at=timezone.now() - timedelta(minutes=1))

    response = call(key.secret)

    assert response.status_code == 401
    assert "expired" in response.json()["error"]
    assert nothing_enqueued()


def test_a_key_before_its_expiry_works(echo, call):
    key = ApiKeyFactory(expires_at=timezone.now() + timedelta(days=1))

    assert call(key.secret).status_code == 202


@pytest.mark.parametrize(
    "token, fragment",
    [
        ("bo_live_short", "malformed API key"),
        ("bo_live_" + "a" * 12 + "-" + "b" * 40, "malformed API key"),
        ("bo_test_" + "a" * 12 + "_" + "b" * 40, "wrong key prefix"),
        ("bo_live_" + "a" * 12 + "_" + "b" * 40, "invalid API key"),
        ("sk_live_123", "invalid bearer token"),
    ],
)
def test_malformed_wrong_prefix_and_unknown_keys_are_401_naming_the_problem(
    echo, call, token, fragment
):
    response = call(token)

    assert response.status_code == 401
    assert fragment in response.json()["error"]
    assert nothing_enqueued()


def test_a_key_with_the_right_id_and_a_wrong_secret_is_401(echo, call):
    key = ApiKeyFactory()
    forged = key.secret[:-1] + ("a" if key.secret[-1] != "a" else "b")

    response = call(forged)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid API key"
    assert nothing_enqueued()


def test_a_missing_key_is_401(echo, call):
    response = call(None)

    assert response.status_code == 401
    assert "missing bearer token" in response.json()["error"]


# --- rate limit -----------------------------------------------------------------------


def test_a_key_past_its_requests_per_minute_gets_429_with_retry_after(echo, call, time_machine):
    time_machine.move_to(datetime(2031, 5, 6, 10, 0, 5, tzinfo=UTC), tick=False)
    key = ApiKeyFactory(scopes=["jobs:read"], rate_limit_per_minute=2)
    other = ApiKeyFactory(scopes=["jobs:read"], rate_limit_per_minute=2)

    answers = [call(key.secret, "/api/jobs", "get").status_code for _ in range(3)]

    assert answers == [200, 200, 429]
    refused = call(key.secret, "/api/jobs", "get")
    assert refused["Retry-After"] == "55"
    assert "rate limit of 2 requests per minute" in refused.json()["error"]
    assert call(other.secret, "/api/jobs", "get").status_code == 200  # per key
    time_machine.move_to(datetime(2031, 5, 6, 10, 1, 0, tzinfo=UTC), tick=False)
    assert call(key.secret, "/api/jobs", "get").status_code == 200  # the next minute


@override_settings(JOBS_API_RATE_LIMIT_PER_MINUTE=1)
def test_the_default_limit_applies_to_keys_without_their_own(echo, call, time_machine):
    time_machine.move_to(datetime(2031, 5, 6, 10, 0, 5, tzinfo=UTC), tick=False)
    key = ApiKeyFactory(scopes=["jobs:read"])

    assert call(key.secret, "/api/jobs", "get").status_code == 200
    assert call(key.secret, "/api/jobs", "get").status_code == 429


# --- scopes --------------------------------------------------------------------------


def test_run_implies_read_and_star_is_everything():
    assert grants(["jobs:run:billing.*"], "jobs:read:billing.aggregate_usage")
    assert not grants(["jobs:read:billing.*"], "jobs:run:billing.aggregate_usage")
    assert grants(["jobs:*"], "jobs:run:anything")
    assert grants(["*"], "jobs:run:anything")
    assert not grants(["jobs:run:billing.*"], "jobs:run:payments.reconcile")


def test_a_new_resource_adds_scopes_without_a_schema_change():
    # ("usage" is taken: billing registers it for the usage API.)
    with pytest.raises(ValueError, match="unknown resource 'reports'"):
        parse_scope("reports:write")
    register_scope_resource("reports", actions={"write": (), "read": ()})
    try:
        key = ApiKeyFactory(scopes=["reports:write"])
        assert grants(key.scopes, "reports:write")
        assert not grants(key.scopes, "reports:read")
    finally:
        api_keys._RESOURCES.pop("reports")


@pytest.mark.parametrize(
    "scope, fragment",
    [
        ("billing:run", "unknown resource"),
        ("jobs:delete", "has no action"),
        ("jobs:run:a b", "printable word"),
        ("", "non-empty"),
    ],
)
def test_unknown_scopes_are_refused(scope, fragment):
    with pytest.raises(ValueError, match=fragment):
        api_keys.clean_scopes([scope])


# --- admin ---------------------------------------------------------------------------


@pytest.fixture
def key_admin():
    from django.contrib.auth.models import Permission

    user = UserFactory(username="keymaster", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="jobs", codename__endswith="apikey")
    )
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf_token(client: Client, url: str) -> str:
    html = client.get(url).content.decode()
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


def test_the_admin_shows_a_new_key_once_and_stores_its_hash(key_admin):
    url = reverse("admin:jobs_apikey_add")
    response = key_admin.post(
        url,
        {
            "csrfmiddlewaretoken": csrf_token(key_admin, url),
            "name": "billing-backend",
            "owner": "billing team",
            "scopes_text": "jobs:run:billing.*\njobs:read",
        },
    )

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = re.search(r"bo_live_[A-Za-z0-9]{12}_[A-Za-z0-9]{40}", response.content.decode())[0]
    key = ApiKey.objects.get(name="billing-backend")
    assert key.secret_hash == hash_key(secret)
    assert key.scopes == ["jobs:run:billing.*", "jobs:read"]
    again = key_admin.get(reverse("admin:jobs_apikey_change", args=[key.pk])).content.decode()
    assert secret not in again and key.prefix in again
    assert AuditTrail.objects.filter(action="job.api_key_create", object_id=key.prefix).exists()


def test_a_bad_scope_is_a_form_error_in_the_admin(key_admin):
    url = reverse("admin:jobs_apikey_add")
    response = key_admin.post(
        url,
        {
            "csrfmiddlewaretoken": csrf_token(key_admin, url),
            "name": "x",
            "owner": "y",
            "scopes_text": "jobs:destroy",
        },
    )

    assert response.status_code == 200
    assert "has no action" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_revoking_and_editing_scopes_in_the_admin_are_audited(key_admin):
    key = ApiKeyFactory(name="old-client", scopes=["jobs:read"])
    change = reverse("admin:jobs_apikey_change", args=[key.pk])
    key_admin.post(
        change,
        {
            "csrfmiddlewaretoken": csrf_token(key_admin, change),
            "name": "old-client",
            "owner": "platform team",
            "scopes_text": "jobs:run:tests.*",
        },
    )
    changelist = reverse("admin:jobs_apikey_changelist")
    key_admin.post(
        changelist,
        {
            "csrfmiddlewaretoken": csrf_token(key_admin, changelist),
            "action": "revoke",
            "_selected_action": [key.pk],
        },
    )

    key.refresh_from_db()
    assert key.scopes == ["jobs:run:tests.*"] and key.revoked_at is not None
    assert key.revoked_by == "keymaster"
    changed = AuditTrail.objects.get(action="job.api_key_change")
    assert changed.changes["scopes"] == [["jobs:read"], ["jobs:run:tests.*"]]
    assert changed.actor == "user:keymaster"
    assert AuditTrail.objects.filter(action="job.api_key_revoke", object_id=key.prefix).exists()
    assert JobAction.objects.filter(action="api_key_revoke", actor="keymaster").exists()


def test_keys_cannot_be_deleted_in_the_admin(key_admin):
    key = ApiKeyFactory()
    delete = reverse("admin:jobs_apikey_delete", args=[key.pk])
    assert key_admin.get(delete).status_code == 403
