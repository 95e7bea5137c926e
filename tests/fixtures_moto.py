"""A moto server (SES, S3, ...) on a free loopback port, so django-ses and boto3 talk
HTTP to it. Imported by tests/conftest.py, so every test package can use it."""

from __future__ import annotations

import os
import socket
import uuid
from collections import Counter

import boto3
import pytest

SENDER = "billing@sender.example"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server_url():
    from moto.server import ThreadedMotoServer

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        os.environ[key] = value
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client("ses", region_name=REGION, endpoint_url=url).verify_email_identity(
        EmailAddress=SENDER
    )
    yield url
    server.stop()


@pytest.fixture(scope="session")
def moto_ses_url(moto_server_url):
    return moto_server_url


class SesInbox:
    """What the moto server accepted (it runs in this process, so its backend is here)."""

    def __init__(self) -> None:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ses.models import ses_backends

        self.backend = ses_backends[DEFAULT_ACCOUNT_ID][REGION]

    def clear(self) -> None:
        self.backend.sent_messages.clear()
        self.backend.sent_message_count = 0

    @property
    def messages(self) -> list:
        return list(self.backend.sent_messages)

    def per_recipient(self) -> Counter:
        return Counter(d for m in self.messages for d in set(m.destinations))


@pytest.fixture
def ses(moto_ses_url, settings):
    """django-ses pointed at the moto server, with an empty inbox and a private rate window."""
    settings.EMAIL_BACKEND = "django_ses.SESBackend"
    settings.AWS_SES_REGION_NAME = REGION
    settings.AWS_SES_REGION_ENDPOINT_URL = moto_ses_url
    settings.DEFAULT_FROM_EMAIL = SENDER
    settings.EMAIL_RATE_LIMIT_KEY = f"test-{uuid.uuid4().hex}"
    settings.AWS_SES_RATE_LIMIT_PER_SECOND = 1000
    inbox = SesInbox()
    inbox.clear()
    return inbox
