import pytest

from audit.services import record_audit

pytestmark = pytest.mark.django_db


def test_the_audit_list_old_admin_url_redirects_with_its_query(admin_client):
    record_audit(actor="user:alice", action="edit", object_type="t", object_id=1)

    response = admin_client.get("/admin/maintenance/audittrail/", {"q": "user:alice"})

    assert response.status_code == 301
    assert response["Location"] == "/admin/audit/audittrail/?q=user%3Aalice"
    followed = admin_client.get(response["Location"])
    assert len(followed.context["cl"].result_list) == 1


def test_an_audit_record_old_admin_url_redirects_to_its_new_page(admin_client):
    entry = record_audit(actor="user:alice", action="edit", object_type="t", object_id=1)

    response = admin_client.get(f"/admin/maintenance/audittrail/{entry.pk}/change/")

    assert response.status_code == 301
    assert response["Location"] == f"/admin/audit/audittrail/{entry.pk}/change/"
    assert admin_client.get(response["Location"]).status_code == 200
