import pytest
from django.contrib.admin.sites import site
from django.test import RequestFactory

from audit.models import AuditTrail
from audit.selectors import audit_of_object
from audit.services import job_actor, record_audit
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_record_audit_stores_who_what_and_the_changes():
    entry = record_audit(
        actor="user:alice",
        action="subscription.canceled",
        object_type="subscriptions.subscription",
        object_id=42,
        changes={"status": ["active", "canceled"]},
        tenant="org_001",
        request_id="req-1",
    )

    entry.refresh_from_db()
    assert entry.object_id == "42"
    assert entry.changes == {"status": ["active", "canceled"]}
    assert (entry.actor, entry.tenant, entry.request_id) == ("user:alice", "org_001", "req-1")


def test_job_actor_names_the_job_and_its_run():
    assert job_actor(job="subscriptions.expire", run_id=7) == "job:subscriptions.expire#7"
    assert job_actor(job="subscriptions.expire", run_id=None) == "job:subscriptions.expire"


def test_audit_trail_is_read_only_in_the_admin():
    admin = site._registry[AuditTrail]
    request = RequestFactory().get("/")
    request.user = UserFactory(is_staff=True, is_superuser=True)
    entry = record_audit(actor="user:a", action="x", object_type="t", object_id=1)

    assert not admin.has_add_permission(request)
    assert not admin.has_change_permission(request, entry)
    assert not admin.has_delete_permission(request, entry)
    assert admin.has_view_permission(request, entry)


def test_audit_trail_is_indexed_by_object_and_by_actor():
    indexed = {tuple(index.fields): index for index in AuditTrail._meta.indexes}
    assert ("object_id", "at") in indexed
    assert ("tenant", "object_type", "at") in indexed
    assert ("actor", "at") in indexed


def test_audit_of_object_finds_single_and_bulk_records():
    single = record_audit(actor="user:alice", action="edit", object_type="t", object_id=5)
    bulk = AuditTrail.objects.create(
        actor="job:x#1", action="bulk", object_type="t", object_ids=[4, 5, 6], tenant="org_a"
    )
    AuditTrail.objects.create(actor="job:x#1", action="bulk", object_type="t", object_ids=[7])
    AuditTrail.objects.create(actor="job:x#1", action="bulk", object_type="u", object_ids=[5])
    other_tenant = AuditTrail.objects.create(
        actor="job:x#1", action="bulk", object_type="t", object_ids=[5], tenant="org_b"
    )
    assert set(audit_of_object(object_type="t", object_id=5)) == {single, bulk, other_tenant}
    assert set(audit_of_object(object_type="t", object_id=5, tenant="org_a")) == {single, bulk}
    assert list(audit_of_object(object_type="t", object_id=8)) == []


@pytest.fixture
def superuser_client(client):
    client.force_login(UserFactory(username="auditor", is_staff=True, is_superuser=True))
    return client


def test_admin_search_finds_an_object_by_type_and_id_bulk_records_included(superuser_client):
    single = record_audit(
        actor="user:alice", action="edit", object_type="subscriptions.subscription", object_id=42
    )
    bulk = AuditTrail.objects.create(
        actor="job:subscriptions.expire#3",
        action="subscription.expired",
        object_type="subscriptions.subscription",
        object_ids=[41, 42],
        tenant="org_a",
    )
    other = record_audit(
        actor="user:bob", action="edit", object_type="payments.payment", object_id=42
    )

    response = superuser_client.get(
        "/admin/audit/audittrail/", {"q": "subscriptions.subscription:42"}
    )

    shown = {entry.pk for entry in response.context["cl"].result_list}
    assert shown == {single.pk, bulk.pk}
    assert other.pk not in shown


@pytest.mark.parametrize("term", ["user:alice", "req-9", "17", "not a number"])
def test_admin_search_matches_actor_request_and_run_exactly(superuser_client, term):
    record_audit(
        actor="user:alice",
        action="edit",
        object_type="t",
        object_id=1,
        request_id="req-9",
        job_run_id=17,
    )
    record_audit(actor="user:alicia", action="edit", object_type="t", object_id=2)

    response = superuser_client.get("/admin/audit/audittrail/", {"q": term})

    assert response.status_code == 200
    found = len(response.context["cl"].result_list)
    assert found == (0 if term == "not a number" else 1)


def test_audit_trail_is_indexed_by_time_for_the_purge():
    assert ("at",) in {tuple(index.fields) for index in AuditTrail._meta.indexes}


@pytest.mark.postgres
def test_the_time_index_is_brin_on_postgresql():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'audit_at_idx'")
        (definition,) = cursor.fetchone()
    assert "USING brin" in definition
