"""Admin edits go into the audit trail like every other change.

`AuditedAdminMixin` (before ModelAdmin) writes one AuditTrail record per
save or delete made in the admin: who (`user:<name>`), which object, and each
changed field as [before, after], with the request's id, in the admin's own
transaction.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db.models import Model
from django.forms import ModelForm
from django.http import HttpRequest

from audit.middleware import current_request_id
from audit.services import record_audit


def _plain(value: Any) -> Any:
    """What a JSON audit record can hold."""
    if isinstance(value, Model):
        return value.pk
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _tenant(obj: Model) -> str:
    organization = getattr(obj, "organization", None)
    if organization is not None:
        return str(getattr(organization, "key", "") or "")
    if obj._meta.label_lower == "subscriptions.organization":
        return str(getattr(obj, "key", "") or "")
    return ""


class AuditedAdminMixin:
    def save_model(self, request: HttpRequest, obj: Model, form: ModelForm, change: bool) -> None:
        changes = {
            name: [
                _plain(form.initial.get(name)) if change else None,
                _plain(form.cleaned_data.get(name)),
            ]
            for name in form.changed_data
        }
        super().save_model(request, obj, form, change)  # type: ignore[misc]
        record_audit(
            actor=f"user:{request.user.get_username()}",
            action="admin.change" if change else "admin.add",
            object_type=obj._meta.label_lower,
            object_id=obj.pk,
            changes=changes,
            tenant=_tenant(obj),
            request_id=current_request_id(),
        )

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        record_audit(
            actor=f"user:{request.user.get_username()}",
            action="admin.delete",
            object_type=obj._meta.label_lower,
            object_id=obj.pk,
            changes={},
            tenant=_tenant(obj),
            request_id=current_request_id(),
        )
        super().delete_model(request, obj)  # type: ignore[misc]

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for obj in queryset:
            record_audit(
                actor=f"user:{request.user.get_username()}",
                action="admin.delete",
                object_type=obj._meta.label_lower,
                object_id=obj.pk,
                changes={},
                tenant=_tenant(obj),
                request_id=current_request_id(),
            )
        super().delete_queryset(request, queryset)  # type: ignore[misc]
