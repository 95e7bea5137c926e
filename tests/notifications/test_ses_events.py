"""/ses/events/: SES feedback through SNS, verified before anything changes.

The SNS messages are built and signed as AWS sends them, with a test
certificate that django-ses downloads from an HTTPS server on loopback and
verifies for real (tests/fixtures_sns.py). The only replacement: confirming a
subscription fetches AWS's SubscribeURL, which no test reaches, so
`django_ses.utils.urlopen` records the call instead.
"""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from notifications.models import EmailStatus, SuppressedAddress
from tests.factories import OutboundEmailFactory
from tests.fixtures_sns import TOPIC, bounce_event, complaint_event

pytestmark = pytest.mark.django_db

URL = "/ses/events/"


def post(client, message):
    body = message if isinstance(message, str) else json.dumps(message)
    return client.post(URL, data=body, content_type="text/plain")


@pytest.fixture
def sent():
    """A message the outbox sent through SES, with SES's message id."""
    return OutboundEmailFactory(
        to="customer@acme.example",
        status=EmailStatus.SENT,
        sent_at=timezone.now(),
        provider_message_id="0100018f-ses-message-1",
    )


def test_the_endpoint_is_off_until_trusted_topics_are_set(client, settings, sent):
    settings.AWS_SNS_EVENT_TRUSTED_TOPIC_ARNS = []

    response = post(client, {"Type": "Notification", "TopicArn": TOPIC})

    assert response.status_code == 404
    assert "AWS_SNS_EVENT_TRUSTED_TOPIC_ARNS" in response.json()["error"]


def test_a_signed_bounce_of_our_message_suppresses_its_recipient(client, sns, sent):
    response = post(client, sns.notification(bounce_event(sent.provider_message_id, sent.to)))

    assert response.status_code == 200, response.content
    assert response.json()["suppressed"] == ["customer@acme.example"]
    assert SuppressedAddress.objects.get().reason == "bounce"


def test_a_signed_complaint_of_our_message_suppresses_its_recipient(client, sns, sent):
    response = post(client, sns.notification(complaint_event(sent.provider_message_id, sent.to)))

    assert response.status_code == 200
    assert SuppressedAddress.objects.get().reason == "complaint"


def test_a_bounce_naming_a_message_we_never_sent_is_refused(client, sns, sent, caplog):
    response = post(client, sns.notification(bounce_event("someone-elses-message", sent.to)))

    assert response.status_code == 400
    assert "not a message we sent" in response.json()["error"]
    assert not SuppressedAddress.objects.exists()
    assert "SES event refused" in caplog.text


def test_a_bounce_naming_an_address_our_message_did_not_go_to_is_refused(client, sns, sent):
    event = bounce_event(sent.provider_message_id, sent.to, "ceo@bigcustomer.example")

    response = post(client, sns.notification(event))

    assert response.status_code == 400
    assert "ceo@bigcustomer.example" in response.json()["error"]
    assert not SuppressedAddress.objects.exists()  # not even the genuine recipient


def test_a_validly_signed_event_from_another_topic_is_refused(client, sns, sent):
    other = "arn:aws:sns:us-east-1:999999999999:attacker-topic"

    response = post(
        client, sns.notification(bounce_event(sent.provider_message_id, sent.to), topic=other)
    )

    assert response.status_code == 403
    assert not SuppressedAddress.objects.exists()


def test_a_tampered_message_fails_signature_verification(client, sns, sent):
    message = sns.notification(bounce_event(sent.provider_message_id, sent.to))
    message["Message"] = json.dumps(bounce_event(sent.provider_message_id, "victim@acme.example"))

    response = post(client, message)

    assert response.status_code == 400
    assert "signature" in response.json()["error"]
    assert not SuppressedAddress.objects.exists()


def test_an_unsigned_message_is_refused(client, sns, sent):
    message = sns.notification(bounce_event(sent.provider_message_id, sent.to))
    del message["Signature"]

    assert post(client, message).status_code == 400
    assert not SuppressedAddress.objects.exists()


def test_a_transient_bounce_suppresses_nobody(client, sns, sent):
    event = bounce_event(sent.provider_message_id, sent.to, permanent=False)

    response = post(client, sns.notification(event))

    assert response.status_code == 200
    assert not SuppressedAddress.objects.exists()


def test_subscription_confirmation_only_for_a_trusted_topic(client, sns, monkeypatch):
    from django_ses import utils

    fetched = []

    class Answer:
        def read(self):
            return b"<ConfirmSubscriptionResponse/>"

    monkeypatch.setattr(utils, "urlopen", lambda url: fetched.append(url) or Answer())

    refused = post(client, sns.subscription(topic="arn:aws:sns:us-east-1:999999999999:other"))
    assert refused.status_code == 403
    assert fetched == []

    bad_url = post(client, sns.subscription(url="file:///etc/passwd"))
    assert bad_url.status_code == 400
    assert fetched == []

    accepted = post(client, sns.subscription())
    assert accepted.status_code == 200
    assert fetched == ["https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=t"]


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        "[]",
        '{"Type": ["Notification"]}',
        '{"Type": "Notification", "Message": "{}"}',
        '{"Type": "SubscriptionConfirmation", "SubscribeURL": "file:///etc/passwd"}',
        "\udcff",
    ],
)
def test_junk_is_refused_without_a_500(client, sns, body):
    response = client.post(
        URL, data=body.encode("utf-8", "surrogatepass"), content_type="text/plain"
    )

    assert 400 <= response.status_code < 500
    assert "error" in response.json()
    assert not SuppressedAddress.objects.exists()


def test_get_is_405(client, sns):
    response = client.get(URL)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
