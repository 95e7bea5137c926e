"""gunicorn's settings for `bin/web` (bin/entrypoint web), read from the environment.

WEB_CONCURRENCY worker processes (sync workers: the views are short and the
database is the limit) on 0.0.0.0:PORT. SIGTERM is a graceful stop: workers
finish their requests within GUNICORN_GRACEFUL_TIMEOUT seconds, then exit.
"""

import os

bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
# Behind a load balancer that terminates TLS: trust its X-Forwarded-* headers.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG", "false").lower() == "true" else None
errorlog = "-"
# Load the app before forking: a bad setting fails once, at start, not per worker.
preload_app = True
