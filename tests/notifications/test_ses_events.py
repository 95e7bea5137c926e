"""The SES event webhook (/ses/events/) that feeds the suppression list.

Signature verification needs AWS's certificate host, which no test reaches;
the handlers behind it are tested in test_sending.py. Here: junk never
becomes a 500 and never suppresses anyone.
"""

import pytest

from notifications.models import SuppressedAddress

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        '{"Type": "Notification", "Message": "{}"}',
        '{"Type": "SubscriptionConfirmation", "SubscribeURL": "file:///etc/passwd"}',
    ],
)
def test_unverified_or_junk_events_are_refused_without_a_500(client, body):
    response = client.post("/ses/events/", data=body, content_type="application/json")
    assert 400 <= response.status_code < 500
    assert not SuppressedAddress.objects.exists()
