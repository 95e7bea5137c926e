import pytest
from django.urls import reverse

from notifications.models import EmailStatus
from notifications.selectors import status_counts
from tests.factories import OutboundEmailFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_status_counts_have_every_status():
    OutboundEmailFactory.create_batch(2)
    OutboundEmailFactory(status=EmailStatus.FAILED)

    assert status_counts() == {
        "queued": 2,
        "sending": 0,
        "sent": 0,
        "failed": 1,
        "suppressed": 0,
    }


def test_admin_outbox_shows_counts_and_retries_and_cancels(client):
    admin = UserFactory(username="boss", is_staff=True, is_superuser=True)
    client.force_login(admin)
    failed = OutboundEmailFactory(status=EmailStatus.FAILED, attempts=5)
    queued = OutboundEmailFactory()
    url = reverse("admin:notifications_outboundemail_changelist")

    page = client.get(url, {"status__exact": "failed"})
    assert page.status_code == 200
    assert b"outbox-status-counts" in page.content

    client.post(url, {"action": "retry_now_action", "_selected_action": [failed.pk]})
    client.post(url, {"action": "cancel_action", "_selected_action": [queued.pk]})

    failed.refresh_from_db()
    queued.refresh_from_db()
    assert failed.status == EmailStatus.QUEUED and failed.attempts == 0
    assert queued.status == EmailStatus.FAILED and "canceled by user:boss" in queued.last_error


def test_admin_actions_need_the_change_permission(client):
    from django.contrib.auth.models import Permission

    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_outboundemail"))
    client.force_login(viewer)
    failed = OutboundEmailFactory(status=EmailStatus.FAILED)
    url = reverse("admin:notifications_outboundemail_changelist")

    assert b"retry_now_action" not in client.get(url).content
    client.post(url, {"action": "retry_now_action", "_selected_action": [failed.pk]})

    failed.refresh_from_db()
    assert failed.status == EmailStatus.FAILED


def test_staff_can_add_a_suppressed_address(client):
    admin = UserFactory(username="boss2", is_staff=True, is_superuser=True)
    client.force_login(admin)

    client.post(
        reverse("admin:notifications_suppressedaddress_add"),
        {"email": "NoMore@Example.com", "reason": "manual", "note": "asked us"},
    )

    from notifications.models import SuppressedAddress

    assert SuppressedAddress.objects.get().email == "nomore@example.com"
