"""Settings for the test suite: the real settings with test-safe defaults."""

import os

os.environ["ENV_FILE"] = ""
os.environ.setdefault("SECRET_KEY", "test-secret-key")
os.environ.setdefault("JOBS_API_TOKEN", "test-api-token")
# DEBUG is off in the suite, as in production: a fixed Fernet key (settings
# refuse to start without one) and no HTTPS redirect (the test client and
# servers speak plain HTTP on loopback).
os.environ.setdefault("FIELD_ENCRYPTION_KEY", "dGVzdC1maWVsZC1lbmNyeXB0aW9uLWtleS0zMmJ5dGU=")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
# The suite sends many API requests a minute with one key; the rate-limit tests
# set their own limits.
os.environ.setdefault("JOBS_API_RATE_LIMIT_PER_MINUTE", "0")
# The metrics tests read /metrics as a scraper would; tests/jobs/test_metrics_access.py
# covers the token and the exporter port.
os.environ.setdefault("METRICS_PUBLIC", "true")
# Tests drive heartbeats by hand; a background thread would race them.
os.environ.setdefault("JOBS_HEARTBEAT_SECONDS", "0")
# No collectstatic before tests: the manifest storage is for production.
os.environ.setdefault(
    "STATICFILES_BACKEND", "django.contrib.staticfiles.storage.StaticFilesStorage"
)

from config.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
