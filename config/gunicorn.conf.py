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
# gunicorn 27's control socket lives in $HOME (read-only in the image, shared
# by every gunicorn of one user): off; SIGTERM/SIGHUP/TTIN/TTOU still work.
control_socket_disable = True
# Load the app before forking: a bad setting fails once, at start, not per worker.
preload_app = True

# LOG_FORMAT=json: gunicorn's own lines (start, workers, stop, access) as JSON
# objects too, like the app's (jobs.logging.JsonFormatter).
if os.environ.get("LOG_FORMAT", "text") == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "jobs.logging.JsonFormatter"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }
