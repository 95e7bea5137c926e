"""Settings, all read from the environment (and an optional `.env`).

Embedded defaults run the whole service on one machine with nothing else
installed: SQLite in WAL mode, django-q2's ORM broker and a local-memory
cache. `DATABASE_URL` and `REDIS_URL` switch to PostgreSQL and Redis.
"""

import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# ENV_FILE="" reads no file (the test suite does that, so a local .env can't leak in).
ENV_FILE = os.environ.get("ENV_FILE", str(BASE_DIR / ".env"))
if ENV_FILE:
    environ.Env.read_env(ENV_FILE, overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment (or .env), "
            "or set DEBUG=true for local development."
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "config.apps.BackofficeAdminConfig",  # django.contrib.admin with the 2FA-aware site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_prometheus",
    "django_q",
    "jobs",
    "audit",
    "subscriptions",
    "payments",
    "billing",
    "notifications",
    "maintenance",
]

MIDDLEWARE = [
    "jobs.middleware.RejectMalformedContentLength",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"

# --- Database -------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while qcluster writes; IMMEDIATE
    # transactions plus a busy timeout turn lock contention into waiting
    # instead of "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DATABASES["default"]["TEST"] = {"NAME": env("TEST_DATABASE_NAME", default=None)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Transport security (off with DEBUG; each can be set on its own) ---------
# Behind a TLS-terminating load balancer, name the header it sets (e.g.
# X-Forwarded-Proto): only then is a request with "https" in it treated as secure.
_proxy_ssl_header = env("SECURE_PROXY_SSL_HEADER", default="")
if _proxy_ssl_header:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# Probes and scrapers talk plain HTTP to the instance, not through the balancer.
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp): scripts and styles only from this origin
# (static files, whitenoise included); the few <style> blocks of the project's
# admin templates carry the request's nonce; style attributes (admin widgets,
# status colours, the inline-SVG charts) are allowed, scripts never inline.
from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE  # noqa: E402

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, NONCE],
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# --- Broker and cache ----------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="backoffice"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

SCHEDULER_TIMEZONE = env("SCHEDULER_TIMEZONE", default="UTC")
BACKGROUND_JOBS_ENABLED = env.bool("BACKGROUND_JOBS_ENABLED", default=True)

Q_CLUSTER = {
    "name": env("Q_CLUSTER_PREFIX", default="backoffice"),
    "workers": env.int("Q_WORKERS", default=2),
    # Job timeouts are per job (registry); this is the ceiling.
    "timeout": env.int("Q_TIMEOUT", default=3600),
    "retry": env.int("Q_RETRY", default=3660),
    "max_attempts": 2,
    "save_limit": 1000,
    "catch_up": False,
    "time_zone": SCHEDULER_TIMEZONE,
    "ack_failures": True,
    "label": "Task queue",
    # Needed by django-q2 when a cluster is started with Q_CLUSTER_NAME.
    "ALT_CLUSTERS": {},
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["poll"] = 1

# --- Jobs platform ---------------------------------------------------------
# The bootstrap API key: every scope, no expiry. Per-client keys (admin > API
# keys) are the ones to hand out; see jobs.api_keys.
JOBS_API_TOKEN = env("JOBS_API_TOKEN", default="")
# Requests per minute per API key (a key may set its own); 0: no limit.
JOBS_API_RATE_LIMIT_PER_MINUTE = env.int("JOBS_API_RATE_LIMIT_PER_MINUTE", default=600)
# Route queues to their own clusters, e.g. "critical=critical,low=low"; a
# queue not listed runs on the default cluster.
JOBS_QUEUE_CLUSTERS = env.dict("JOBS_QUEUE_CLUSTERS", default={})
JOBS_HEARTBEAT_SECONDS = env.int("JOBS_HEARTBEAT_SECONDS", default=15)
JOBS_STALE_AFTER_SECONDS = env.int("JOBS_STALE_AFTER_SECONDS", default=120)
# Lines of its own log a run keeps (INFO and up), shown on its page and by the API.
JOBS_RUN_LOG_LINES = env.int("JOBS_RUN_LOG_LINES", default=1000)
JOBS_OVERDUE_GRACE_SECONDS = env.int("JOBS_OVERDUE_GRACE_SECONDS", default=300)
JOBS_CLUSTER_HEARTBEAT_MAX_AGE_SECONDS = env.int(
    "JOBS_CLUSTER_HEARTBEAT_MAX_AGE_SECONDS", default=180
)
# django-q2's sentinel looks for due schedules every 30 s (a minute slot then
# starts ~19 s late on average); each cluster also does every this many seconds
# (one SELECT of due schedules), so slots start within ~1 s and schedules
# finer than 30 s (6-field cron with seconds) fire at every slot. 0: off.
JOBS_SCHEDULER_POLL_SECONDS = env.float("JOBS_SCHEDULER_POLL_SECONDS", default=1)
# Self-care (jobs.alerts, jobs.alert_channels, jobs.notices): links in alerts
# and notices point here; webhook timeouts and delivery retries.
JOBS_ADMIN_BASE_URL = env("JOBS_ADMIN_BASE_URL", default="http://127.0.0.1:8000")
JOBS_WEBHOOK_TIMEOUT_SECONDS = env.float("JOBS_WEBHOOK_TIMEOUT_SECONDS", default=5)
JOBS_ALERT_DELIVERY_MAX_ATTEMPTS = env.int("JOBS_ALERT_DELIVERY_MAX_ATTEMPTS", default=5)
JOBS_ALERT_RETRY_BASE_SECONDS = env.float("JOBS_ALERT_RETRY_BASE_SECONDS", default=30)
JOBS_ALERT_RETRY_MAX_SECONDS = env.float("JOBS_ALERT_RETRY_MAX_SECONDS", default=1800)
JOBS_ALERT_LOOKBACK_MINUTES = env.int("JOBS_ALERT_LOOKBACK_MINUTES", default=10)
# A slot waiting for a dependency looks again after max(base, time waited), at most max.
JOBS_DEPENDENCY_POLL_BASE_SECONDS = env.float("JOBS_DEPENDENCY_POLL_BASE_SECONDS", default=30)
JOBS_DEPENDENCY_POLL_MAX_SECONDS = env.float("JOBS_DEPENDENCY_POLL_MAX_SECONDS", default=600)
# A staff's own schedule's slot later than this is missed (its misfire policy decides).
JOBS_MISFIRE_GRACE_SECONDS = env.int("JOBS_MISFIRE_GRACE_SECONDS", default=60)
# Signs completion-notice webhooks that have no secret of their own (the API's `notify`).
JOBS_NOTICE_WEBHOOK_SECRET = env("JOBS_NOTICE_WEBHOOK_SECRET", default="")
# A fanned-out chunk whose worker died is claimed again after this (renewed
# while its worker lives), so it bounds how long a crash delays the run.
JOBS_CHUNK_LEASE_SECONDS = env.int("JOBS_CHUNK_LEASE_SECONDS", default=300)
# A queued (or interrupted) run no cluster has taken this long after its task
# was sent is sent again: its task was lost (a broker restarted without
# persistence). Runs once per run even with several clusters (jobs.enqueue).
JOBS_QUEUED_LOST_AFTER_SECONDS = env.int("JOBS_QUEUED_LOST_AFTER_SECONDS", default=300)

# /metrics (jobs.metrics_access): a bearer token, or a port of its own
# (django-prometheus's exporter, loopback unless told otherwise), or public.
METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_EXPORT_PORT = env.int("METRICS_EXPORT_PORT", default=0)
METRICS_EXPORT_ADDRESS = env("METRICS_EXPORT_ADDRESS", default="127.0.0.1")
METRICS_PUBLIC = env.bool("METRICS_PUBLIC", default=DEBUG)
if METRICS_EXPORT_PORT:
    PROMETHEUS_METRICS_EXPORT_PORT = METRICS_EXPORT_PORT
    PROMETHEUS_METRICS_EXPORT_ADDRESS = METRICS_EXPORT_ADDRESS

# --- Business settings ----------------------------------------------------------
SUBSCRIPTION_GRACE_PERIOD_DAYS = env.int("SUBSCRIPTION_GRACE_PERIOD_DAYS", default=7)
EXPIRY_SAFETY_LIMIT_PERCENT = env.float("EXPIRY_SAFETY_LIMIT_PERCENT", default=20.0)
# A tenant that would lose fewer subscriptions than this never trips the guard:
# for a tenant of 3, one ordinary expiry is already 33%.
EXPIRY_SAFETY_MIN_EXPIRING = env.int("EXPIRY_SAFETY_MIN_EXPIRING", default=5)

# --- Auth, i18n, static ----------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]
# Login throttling (django-axes): after AXES_FAILURE_LIMIT failed logins for one
# username from one address, that pair is locked out for AXES_COOLOFF_HOURS.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=1.0)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Staff two-factor login (django-otp, TOTP): asked of every staff user who has
# a confirmed device; with ADMIN_REQUIRE_2FA, of every staff user (one without
# a device cannot enter the admin; `manage.py totp_device USER` makes one).
ADMIN_REQUIRE_2FA = env.bool("ADMIN_REQUIRE_2FA", default=False)
OTP_TOTP_ISSUER = env("OTP_TOTP_ISSUER", default="Back-office jobs")
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
MEDIA_URL = "media/"
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "media")
LOGIN_URL = "admin:login"

# --- Logging: one line per record, with job, run and tenant when known ------------
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"job_context": {"()": "jobs.logging.JobContextFilter"}},
    "formatters": {
        "structured": {
            "format": "%(asctime)s %(levelname)s %(name)s job=%(job)s "
            "run=%(run_id)s tenant=%(tenant)s %(message)s"
        }
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "structured",
            "filters": ["job_context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Email (notifications) ---
# Mail goes through the outbox (notifications.services) and is sent by the
# notifications.send_pending job; this backend is only what that job calls.
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="billing@example.com")
AWS_SES_REGION_NAME = env("AWS_SES_REGION_NAME", default="us-east-1")
AWS_SES_REGION_ENDPOINT = env(
    "AWS_SES_REGION_ENDPOINT", default=f"email.{AWS_SES_REGION_NAME}.amazonaws.com"
)
AWS_SES_REGION_ENDPOINT_URL = env(
    "AWS_SES_REGION_ENDPOINT_URL", default=f"https://{AWS_SES_REGION_ENDPOINT}"
)
# The sender limits the rate itself, across workers; django-ses's per-process
# throttle would only slow it down further.
AWS_SES_AUTO_THROTTLE = None
AWS_SES_RATE_LIMIT_PER_SECOND = env.float("AWS_SES_RATE_LIMIT_PER_SECOND", default=14.0)
EMAIL_SEND_TIMEOUT_SECONDS = env.float("EMAIL_SEND_TIMEOUT_SECONDS", default=10.0)
# No botocore retries: a retried timeout could send twice, and throttling is
# retried by the outbox with backoff (shared with every other worker).
from botocore.config import Config as _BotoConfig  # noqa: E402

AWS_SES_CONFIG = _BotoConfig(
    connect_timeout=EMAIL_SEND_TIMEOUT_SECONDS,
    read_timeout=EMAIL_SEND_TIMEOUT_SECONDS,
    retries={"total_max_attempts": 1, "mode": "standard"},
)
EMAIL_MAX_ATTEMPTS = env.int("EMAIL_MAX_ATTEMPTS", default=5)
EMAIL_BATCH_SIZE = env.int("EMAIL_BATCH_SIZE", default=50)
EMAIL_BATCH_MAX_EMAILS = env.int("EMAIL_BATCH_MAX_EMAILS", default=10_000)
EMAIL_LEASE_SECONDS = env.int("EMAIL_LEASE_SECONDS", default=300)
EMAIL_RETRY_BASE_SECONDS = env.int("EMAIL_RETRY_BASE_SECONDS", default=60)
EMAIL_RETRY_MAX_SECONDS = env.int("EMAIL_RETRY_MAX_SECONDS", default=3600)
EMAIL_SEND_WORKERS = env.int("EMAIL_SEND_WORKERS", default=1)
EMAIL_RATE_LIMIT_KEY = env("EMAIL_RATE_LIMIT_KEY", default="ses-send")
# The limiter's sliding window: a little over a second, so the moment between a
# grant and the request leaving never puts more than the limit in any second.
EMAIL_RATE_WINDOW_SECONDS = env.float("EMAIL_RATE_WINDOW_SECONDS", default=1.02)
# SES bounce/complaint events arrive from SNS at /ses/events/; only these
# topics are trusted (empty: any topic whose SNS signature verifies).
AWS_SNS_EVENT_TRUSTED_TOPIC_ARNS = env.list("AWS_SNS_EVENT_TRUSTED_TOPIC_ARNS", default=[])

# --- Maintenance (retention) ---
# The audit purge deletes records older than this; a job parameter may
# lengthen it, never shorten it.
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=90)
# Measured on PostgreSQL (bench purge_audit_trail): 50,000 ids per DELETE take
# ~60 ms, well under the 250 ms a batch may hold its locks.
AUDIT_PURGE_BATCH_SIZE = env.int("AUDIT_PURGE_BATCH_SIZE", default=50_000)
AUDIT_PURGE_BATCH_DELAY_MS = env.int("AUDIT_PURGE_BATCH_DELAY_MS", default=10)
OUTBOX_RETENTION_DAYS = env.int("OUTBOX_RETENTION_DAYS", default=30)
TASK_RESULT_RETENTION_DAYS = env.int("TASK_RESULT_RETENTION_DAYS", default=30)
API_IDEMPOTENCY_KEY_RETENTION_DAYS = env.int("API_IDEMPOTENCY_KEY_RETENTION_DAYS", default=7)
MAINTENANCE_CLEANUP_BATCH_SIZE = env.int("MAINTENANCE_CLEANUP_BATCH_SIZE", default=5_000)
INVOICE_PDF_PREFIX = env("INVOICE_PDF_PREFIX", default="invoices/")
# Dotted path of a function returning the storage names invoice rows point
# at; unset, the orphaned-PDF cleanup is skipped (see maintenance.cleanup).
INVOICE_REFERENCED_FILES_PROVIDER = env(
    "INVOICE_REFERENCED_FILES_PROVIDER", default="billing.selectors.invoice_pdf_names"
)
INVOICE_PDF_ORPHAN_MIN_AGE_HOURS = env.int("INVOICE_PDF_ORPHAN_MIN_AGE_HOURS", default=24)
MIDDLEWARE = [*MIDDLEWARE, "audit.middleware.RequestIdMiddleware"]

# --- Payments (Stripe) ---
# Fernet keys for secrets stored in the database (payment provider keys),
# comma-separated: the first encrypts, all decrypt (add a new key first, run
# `manage.py reencrypt_secrets`, then drop the old one).
FIELD_ENCRYPTION_KEY = env.list("FIELD_ENCRYPTION_KEY", default=[])
# Unset, the service refuses to start unless DEBUG, where a key is derived from
# SECRET_KEY (payments.E001 says the same as a system check).
FIELD_ENCRYPTION_KEY_DERIVED = not FIELD_ENCRYPTION_KEY
if FIELD_ENCRYPTION_KEY_DERIVED and not DEBUG:
    # Stop here, not only in a system check: gunicorn runs no checks, and would
    # encrypt tenants' Stripe keys with a key derived from SECRET_KEY.
    raise ImproperlyConfigured(
        "FIELD_ENCRYPTION_KEY is not set. Generate one with `python -c 'from "
        "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`, "
        "or set DEBUG=true for local development."
    )
if FIELD_ENCRYPTION_KEY_DERIVED:
    import base64 as _base64
    import hashlib as _hashlib

    FIELD_ENCRYPTION_KEY = [
        _base64.urlsafe_b64encode(
            _hashlib.sha256(f"field-encryption:{SECRET_KEY}".encode()).digest()
        ).decode()
    ]
STRIPE_API_BASE = env("STRIPE_API_BASE", default="https://api.stripe.com")
STRIPE_TIMEOUT_SECONDS = env.float("STRIPE_TIMEOUT_SECONDS", default=30.0)
# The SDK's own retries (409, 429, 5xx, connection errors), exponential backoff.
STRIPE_MAX_NETWORK_RETRIES = env.int("STRIPE_MAX_NETWORK_RETRIES", default=2)
STRIPE_RETRY_INITIAL_DELAY_SECONDS = env.float("STRIPE_RETRY_INITIAL_DELAY_SECONDS", default=0.5)
STRIPE_RETRY_MAX_DELAY_SECONDS = env.float("STRIPE_RETRY_MAX_DELAY_SECONDS", default=5.0)
# Circuit breaker per tenant: this many failed calls in a row open it for
# STRIPE_BREAKER_RESET_SECONDS, during which calls fail at once.
STRIPE_BREAKER_FAIL_MAX = env.int("STRIPE_BREAKER_FAIL_MAX", default=5)
STRIPE_BREAKER_RESET_SECONDS = env.float("STRIPE_BREAKER_RESET_SECONDS", default=60.0)
# Requests per second per tenant, shared by every worker (Redis when REDIS_URL).
STRIPE_RATE_LIMIT_PER_SECOND = env.float("STRIPE_RATE_LIMIT_PER_SECOND", default=25.0)
STRIPE_RATE_LIMIT_WAIT_SECONDS = env.float("STRIPE_RATE_LIMIT_WAIT_SECONDS", default=30.0)
# POST /webhooks/stripe/<tenant>: how old a signed event's timestamp may be
# (Stripe's SDK default), and the largest body taken.
STRIPE_WEBHOOK_TOLERANCE_SECONDS = env.int("STRIPE_WEBHOOK_TOLERANCE_SECONDS", default=300)
STRIPE_WEBHOOK_MAX_BODY_BYTES = env.int("STRIPE_WEBHOOK_MAX_BODY_BYTES", default=512 * 1024)
SUBSCRIPTION_RENEWAL_DAYS_BEFORE = env.int("SUBSCRIPTION_RENEWAL_DAYS_BEFORE", default=7)
PAYMENTS_RECONCILE_CONCURRENCY = env.int("PAYMENTS_RECONCILE_CONCURRENCY", default=8)
PAYMENTS_RECONCILE_AFTER_MINUTES = env.int("PAYMENTS_RECONCILE_AFTER_MINUTES", default=30)

# --- Billing (usage, invoices, analytics) ---
# Usage and analytics
# Raw usage events are kept this long (maintenance.cleanup deletes older ones
# once their hour's aggregate includes them). Must cover the longest invoice
# period plus its lateness: unique counts are counted from events.
USAGE_EVENT_RETENTION_DAYS = env.int("USAGE_EVENT_RETENTION_DAYS", default=90)
# Most hours one billing.aggregate_usage backfill (from_hour..to_hour) may cover.
USAGE_BACKFILL_MAX_HOURS = env.int("USAGE_BACKFILL_MAX_HOURS", default=744)
# Hours with late events (received after they were aggregated) an hourly run rebuilds.
USAGE_LATE_HOURS_PER_RUN = env.int("USAGE_LATE_HOURS_PER_RUN", default=24)
# POST /api/usage/events: most events per batch, largest body, and how far in the
# future (clock skew) an event's occurred_at may be.
USAGE_API_MAX_EVENTS = env.int("USAGE_API_MAX_EVENTS", default=1_000)
USAGE_API_MAX_BODY_BYTES = env.int("USAGE_API_MAX_BODY_BYTES", default=2 * 1024 * 1024)
USAGE_EVENT_FUTURE_SKEW_SECONDS = env.int("USAGE_EVENT_FUTURE_SKEW_SECONDS", default=300)
# How long billing.aggregate_daily_analytics caches each organization's day.
ANALYTICS_CACHE_SECONDS = env.int("ANALYTICS_CACHE_SECONDS", default=86_400)
# Most days one billing.aggregate_daily_analytics backfill may cover.
ANALYTICS_BACKFILL_MAX_DAYS = env.int("ANALYTICS_BACKFILL_MAX_DAYS", default=92)
# Invoices
# Feature flags of billing.generate_monthly_invoices' outside steps.
INVOICE_ENABLE_STRIPE = env.bool("INVOICE_ENABLE_STRIPE", default=True)
INVOICE_ENABLE_EMAIL = env.bool("INVOICE_ENABLE_EMAIL", default=True)
INVOICE_S3_BUCKET = env("INVOICE_S3_BUCKET", default="")
# Setting the bucket turns S3 on; the flag can turn it off again (or demand it).
INVOICE_ENABLE_S3 = env.bool("INVOICE_ENABLE_S3", default=bool(INVOICE_S3_BUCKET))
INVOICE_S3_REGION = env("INVOICE_S3_REGION", default="us-east-1")
AWS_S3_ENDPOINT_URL = env("AWS_S3_ENDPOINT_URL", default=None)
# Organizations per fanned-out chunk: one weasyprint document is rendered per
# chunk and split into per-invoice PDFs (see bench invoice_pdf).
INVOICE_CHUNK_SIZE = env.int("INVOICE_CHUNK_SIZE", default=50)
# Tax on the subtotal, in basis points (2000 = 20%), rounded half up: the
# default of organizations without a rate of their own, and its name.
INVOICE_TAX_RATE_BPS = env.int("INVOICE_TAX_RATE_BPS", default=0)
if not 0 <= INVOICE_TAX_RATE_BPS <= 10_000:
    raise ImproperlyConfigured("INVOICE_TAX_RATE_BPS is between 0 and 10000 (100%).")
INVOICE_TAX_NAME = env("INVOICE_TAX_NAME", default="VAT")
# The seller block of every invoice and credit note (INVOICE_ISSUER_* are the
# older names, still read). With INVOICE_SELLER_COUNTRY set, a buyer with a tax
# id in another country is invoiced without tax, with a reverse-charge note.
INVOICE_SELLER_NAME = env(
    "INVOICE_SELLER_NAME", default=env("INVOICE_ISSUER_NAME", default="Back-office SaaS Ltd")
)
INVOICE_SELLER_ADDRESS = env(
    "INVOICE_SELLER_ADDRESS", default=env("INVOICE_ISSUER_ADDRESS", default="")
).replace("\\n", "\n")
INVOICE_SELLER_TAX_ID = env("INVOICE_SELLER_TAX_ID", default="")
INVOICE_SELLER_EMAIL = env("INVOICE_SELLER_EMAIL", default="")
INVOICE_SELLER_COUNTRY = env("INVOICE_SELLER_COUNTRY", default="").upper()
INVOICE_SELLER_LOGO = env("INVOICE_SELLER_LOGO", default="")  # a PNG/SVG path, optional
# Days from the issue date to the due date.
INVOICE_PAYMENT_TERMS_DAYS = env.int("INVOICE_PAYMENT_TERMS_DAYS", default=14)
# 0: the monthly run finalizes at once. Above 0 it makes drafts, which
# billing.finalize_invoices finalizes this many hours after the period ends.
INVOICE_GRACE_HOURS = env.int("INVOICE_GRACE_HOURS", default=0)
if INVOICE_GRACE_HOURS < 0:
    raise ImproperlyConfigured("INVOICE_GRACE_HOURS cannot be negative.")
# Email the run's summary to NOTIFY_EMAIL when the invoice run ends.
NOTIFY_ON_COMPLETION = env.bool("NOTIFY_ON_COMPLETION", default=False)
NOTIFY_EMAIL = env("NOTIFY_EMAIL", default="")
# Invoice PDFs go to the "invoices" storage: MEDIA_ROOT, or S3 (django-storages)
# when INVOICE_ENABLE_S3 (which then needs INVOICE_S3_BUCKET).
if INVOICE_ENABLE_S3 and not INVOICE_S3_BUCKET:
    raise ImproperlyConfigured("INVOICE_ENABLE_S3 is on but INVOICE_S3_BUCKET is not set.")
if INVOICE_ENABLE_S3:
    _INVOICE_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": INVOICE_S3_BUCKET,
            "region_name": INVOICE_S3_REGION,
            "endpoint_url": AWS_S3_ENDPOINT_URL,
            "default_acl": None,
            "file_overwrite": True,
            "querystring_auth": True,
        },
    }
else:
    _INVOICE_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"allow_overwrite": True},  # a redone PDF replaces its file
    }
# weasyprint logs every rendering step at INFO.
LOGGING["loggers"].update({"weasyprint": {"level": "WARNING"}, "fontTools": {"level": "WARNING"}})
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "invoices": _INVOICE_STORAGE,
}

# --- Production runtime (web server, static files, shutdown, logs, history) ---
# whitenoise serves `collectstatic`'s output from the WSGI app itself (gunicorn
# in production): hashed names with far-future cache headers, gzip/brotli
# copies. In DEBUG it serves straight from the apps' static dirs.
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    "whitenoise.middleware.WhiteNoiseMiddleware",
)
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "static")
STORAGES["staticfiles"] = {
    "BACKEND": env(
        "STATICFILES_BACKEND", default="whitenoise.storage.CompressedManifestStaticFilesStorage"
    )
}

# SIGTERM/SIGINT to qcluster: workers take no new task, running jobs get this
# long (less 5 s) to finish, then are interrupted (run `interrupted`, continued
# by the next cluster from its checkpoint); every process is gone by then.
Q_SHUTDOWN_GRACE_SECONDS = env.float("Q_SHUTDOWN_GRACE_SECONDS", default=30)

# Logs: LOG_FORMAT=text (default) is the key=value line above; json writes one
# JSON object per line (timestamp, level, logger, message, job, run_id,
# tenant, request_id, traceback) for a log platform to index.
LOG_FORMAT = env("LOG_FORMAT", default="text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}")
LOGGING["filters"]["request_id"] = {"()": "audit.middleware.RequestIdLogFilter"}
LOGGING["formatters"]["json"] = {"()": "jobs.logging.JsonFormatter"}
LOGGING["handlers"]["console"]["filters"].append("request_id")
LOGGING["handlers"]["console"]["formatter"] = "json" if LOG_FORMAT == "json" else "structured"

# Run history (jobs.retention, run by maintenance.cleanup): succeeded runs are
# kept this many days, failed and partial ones longer, skipped ones (a busy
# job's paused or overlapping slots) briefly; each job's last success always.
JOBS_RUN_RETENTION_DAYS = env.int("JOBS_RUN_RETENTION_DAYS", default=90)
JOBS_FAILED_RUN_RETENTION_DAYS = env.int("JOBS_FAILED_RUN_RETENTION_DAYS", default=365)
JOBS_SKIPPED_RUN_RETENTION_DAYS = env.int("JOBS_SKIPPED_RUN_RETENTION_DAYS", default=7)

# The cache and the broker live in different Redis databases, so flushing one
# (a broker restarted empty, a cache cleared) never empties the other.
# CACHE_REDIS_URL defaults to REDIS_URL's database + 1 (mod 16).
from urllib.parse import urlsplit as _urlsplit  # noqa: E402
from urllib.parse import urlunsplit as _urlunsplit  # noqa: E402


def _next_redis_db(url: str) -> str:
    parts = _urlsplit(url)
    db = int(parts.path.strip("/") or 0)
    return _urlunsplit(parts._replace(path=f"/{(db + 1) % 16}"))


CACHE_REDIS_URL = env("CACHE_REDIS_URL", default="") or (
    _next_redis_db(REDIS_URL) if REDIS_URL else ""
)
if CACHE_REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_REDIS_URL,
            "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="backoffice"),
        }
    }
