"""The email outbox's counts per status on the jobs overview page."""

import pytest
from django.urls import reverse

from jobs.panels import _PANELS, register_panel
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def queue(status: str, n: int) -> None:
    from notifications.models import OutboundEmail

    for i in range(n):
        OutboundEmail.objects.create(
            to=f"a{i}@example.com",
            subject="s",
            body_text="b",
            kind="test",
            dedupe_key=f"{status}-{i}",
            status=status,
        )


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_the_overview_shows_outbox_counts_per_status(staff_client):
    queue("queued", 3)
    queue("failed", 1)
    html = staff_client.get(reverse("jobs_overview")).content.decode()
    assert "Email outbox" in html
    assert reverse("admin:notifications_outboundemail_changelist") in html
    assert "<strong>3</strong>queued" in html
    assert "<strong>1</strong>failed" in html
    assert "<strong>0</strong>sent" in html


def test_a_failing_panel_shows_its_error_not_a_500(staff_client):
    def broken() -> dict[str, int]:
        raise RuntimeError("database on fire")

    register_panel("Broken panel", broken)
    try:
        response = staff_client.get(reverse("jobs_overview"))
    finally:
        _PANELS.pop("Broken panel")
    assert response.status_code == 200
    assert "RuntimeError: could not be read" in response.content.decode()
