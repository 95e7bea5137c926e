"""Re-encrypt stored secrets with the first FIELD_ENCRYPTION_KEY (key rotation)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from payments.services import reencrypt_secrets


class Command(BaseCommand):
    help = (
        "Encrypt every tenant's payment provider secrets again with the first key of "
        "FIELD_ENCRYPTION_KEY. Rotate: put the new key first, run this, drop the old key."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        count = reencrypt_secrets()
        self.stdout.write(f"re-encrypted the secrets of {count} payment provider config(s)")
