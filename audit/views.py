"""The audit list's admin URL from before it had an app of its own."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponsePermanentRedirect


def old_admin_url(request: HttpRequest, rest: str = "") -> HttpResponsePermanentRedirect:
    """/admin/maintenance/audittrail/... moved to /admin/audit/audittrail/... with
    the model's app; bookmarks and links keep working, query string included."""
    query = request.META.get("QUERY_STRING", "")
    return HttpResponsePermanentRedirect(
        f"/admin/audit/audittrail/{rest}" + (f"?{query}" if query else "")
    )
