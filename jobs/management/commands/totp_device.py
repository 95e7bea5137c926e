"""Give a staff user a TOTP device and print what their authenticator app needs."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_otp.plugins.otp_totp.models import TOTPDevice


class Command(BaseCommand):
    help = "Create a confirmed TOTP device for USERNAME; prints its otpauth:// URI once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="authenticator", help="device name")

    def handle(self, *args: Any, username: str, name: str, **options: Any) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        if not user.is_staff:
            raise CommandError(f"{username!r} is not staff; two-factor login is for the admin")
        device = TOTPDevice.objects.create(user=user, name=name[:64], confirmed=True)
        self.stdout.write(
            f"TOTP device {device.name!r} for {username}. Add it to an authenticator app "
            f"(the URI holds the secret; it is not shown again):\n{device.config_url}"
        )
