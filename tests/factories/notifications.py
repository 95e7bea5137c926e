"""The outbox and the suppression list."""

from __future__ import annotations

import factory

from notifications.models import OutboundEmail, SuppressedAddress


class OutboundEmailFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OutboundEmail

    to = factory.Sequence(lambda n: f"person{n}@example.com")
    subject = "Hello"
    body_text = "Hello."
    kind = "tests.hello"
    dedupe_key = factory.Sequence(lambda n: f"tests.hello:{n}")


class SuppressedAddressFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SuppressedAddress
        django_get_or_create = ("email",)

    email = factory.Sequence(lambda n: f"bounced{n}@example.com")
    reason = "bounce"
