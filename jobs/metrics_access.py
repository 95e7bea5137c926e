"""Who may read `/metrics` (the exposition itself is jobs.metrics).

Job names, tenants' activity and process details are not for the public:

* `METRICS_TOKEN` set: the scraper sends `Authorization: Bearer <token>`
  (Prometheus's `authorization` / `bearer_token_file`); anything else is 401.
* `METRICS_EXPORT_PORT` set: django-prometheus serves the metrics on that port
  (bound to `METRICS_EXPORT_ADDRESS`, loopback by default) and the site's
  `/metrics` is 404, so only what reaches that interface can scrape.
* neither: `/metrics` is 404 unless `METRICS_PUBLIC=true` (the default only
  with DEBUG).
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache

from jobs import metrics


@never_cache
def metrics_endpoint(request: HttpRequest) -> HttpResponse:
    if settings.METRICS_EXPORT_PORT:
        return JsonResponse(
            {"error": "metrics are served on the exporter port (METRICS_EXPORT_PORT)"}, status=404
        )
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
        ):
            response = JsonResponse(
                {"error": "metrics need 'Authorization: Bearer <METRICS_TOKEN>'"}, status=401
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    elif not settings.METRICS_PUBLIC:
        return JsonResponse(
            {"error": "metrics are off: set METRICS_TOKEN (or METRICS_EXPORT_PORT)"}, status=404
        )
    return metrics.metrics_view(request)
