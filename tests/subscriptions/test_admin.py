from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.services import record_audit
from tests.factories import OutboundEmailFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "model",
    [
        "subscriptions_organization",
        "subscriptions_plan",
        "subscriptions_subscription",
        "audit_audittrail",
        "notifications_outboundemail",
    ],
)
def test_admin_lists_and_searches_the_models(admin_client, model):
    sub = SubscriptionFactory(current_period_end=timezone.now() + timedelta(days=3))
    record_audit(actor="user:a", action="x", object_type="t", object_id=sub.pk)
    OutboundEmailFactory(organization=sub.organization)
    url = reverse(f"admin:{model}_changelist")

    assert admin_client.get(url).status_code == 200
    assert admin_client.get(url, {"q": str(sub.pk)}).status_code == 200


def test_subscription_admin_filters_by_status_and_organization(admin_client):
    sub = SubscriptionFactory()
    url = reverse("admin:subscriptions_subscription_changelist")

    response = admin_client.get(
        url, {"status__exact": "active", "organization__id__exact": sub.organization_id}
    )

    assert response.status_code == 200
    assert response.context["cl"].result_count == 1


def test_audit_and_outbox_detail_pages_are_view_only(admin_client):
    entry = record_audit(actor="user:a", action="x", object_type="t", object_id=1)
    email = OutboundEmailFactory()

    for name, obj in [("audit_audittrail", entry), ("notifications_outboundemail", email)]:
        response = admin_client.get(reverse(f"admin:{name}_change", args=[obj.pk]))
        assert response.status_code == 200
        assert b'name="_save"' not in response.content
