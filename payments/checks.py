"""Refuse to run for real with a derived field-encryption key."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def field_encryption_key_set(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    if getattr(settings, "FIELD_ENCRYPTION_KEY_DERIVED", False) and not settings.DEBUG:
        return [
            Error(
                "FIELD_ENCRYPTION_KEY is not set.",
                hint="Tenants' payment keys are encrypted with it. Generate one with "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`, or set DEBUG=true locally.",
                id="payments.E001",
            )
        ]
    return []
