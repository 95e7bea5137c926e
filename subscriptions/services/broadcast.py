"""Broadcasts: one email to the billing contact of each chosen organization
(`notifications.send_bulk`), queued through the outbox."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from notifications.services import EmailDraft, EmailTemplate, queue_bulk
from subscriptions.models import Organization, OrganizationStatus


def queue_to_organizations(
    *,
    template: str,
    kind: str,
    campaign: str,
    organization_keys: Sequence[str] | None = None,
    subject: str = "",
    context: Mapping[str, Any] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Queue one email per organization to its billing contact (all active ones
    when `organization_keys` is None). `campaign` goes into the dedupe key, so
    the same campaign is queued once per organization however often it runs.
    """
    orgs = Organization.objects.all()
    unknown: list[str] = []
    if organization_keys is None:
        orgs = orgs.filter(status=OrganizationStatus.ACTIVE)
    else:
        keys = list(dict.fromkeys(organization_keys))
        orgs = orgs.filter(key__in=keys)
        found = set(orgs.values_list("key", flat=True))
        unknown = [k for k in keys if k not in found]
    rows = list(orgs.exclude(billing_email="").values("id", "key", "name", "billing_email"))
    if dry_run:
        return {"organizations": len(rows), "would_queue": len(rows), "unknown": unknown}
    renderer = EmailTemplate(template)
    extra = dict(context or {})
    drafts = []
    for org in rows:
        rendered = renderer.render(
            {**extra, "organization_name": org["name"], "organization_key": org["key"]}
        )
        drafts.append(
            EmailDraft(
                to=org["billing_email"],
                kind=kind,
                dedupe_key=f"{kind}:{campaign}:org{org['id']}"[:255],
                subject=(subject or rendered.subject)[:255],
                body_text=rendered.body_text,
                body_html=rendered.body_html,
                organization_id=org["id"],
            )
        )
    queued = queue_bulk(emails=drafts)
    return {
        "organizations": len(rows),
        "queued": queued,
        "already_queued": len(rows) - queued,
        "unknown": unknown,
    }
