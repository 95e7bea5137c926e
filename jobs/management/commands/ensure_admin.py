import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Create the admin superuser if it does not exist (ADMIN_USERNAME, "
        "ADMIN_PASSWORD from the environment) and print how to log in."
    )

    def handle(self, *args, **options) -> None:
        username = os.environ.get("ADMIN_USERNAME", "admin")
        password = os.environ.get("ADMIN_PASSWORD", "")
        if not password:
            raise CommandError("ADMIN_PASSWORD is not set (make run writes one to .env)")
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if user is None:
            user_model.objects.create_superuser(username, f"{username}@example.com", password)
            self.stdout.write(f"created admin user: {username} / {password}")
        elif user.check_password(password):
            self.stdout.write(f"admin user: {username} / {password}")
        else:
            self.stdout.write(f"admin user {username} exists (its password was changed)")
