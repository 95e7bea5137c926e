"""Settings for the test suite: the real settings with test-safe defaults."""

import os

os.environ["ENV_FILE"] = ""
os.environ.setdefault("SECRET_KEY", "test-secret-key")
os.environ.setdefault("JOBS_API_TOKEN", "test-api-token")
# Tests drive heartbeats by hand; a background thread would race them.
os.environ.setdefault("JOBS_HEARTBEAT_SECONDS", "0")
# No collectstatic before tests: the manifest storage is for production.
os.environ.setdefault(
    "STATICFILES_BACKEND", "django.contrib.staticfiles.storage.StaticFilesStorage"
)

from config.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
