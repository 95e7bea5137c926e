"""Forms of the console's "Run now…", confirmation and cancel pages."""

from __future__ import annotations

from typing import Any

from django import forms

from jobs.notices import clean_notify
from jobs.param_forms import ParamFormMixin
from jobs.registry import JobSpec
from jobs.tenants import UnknownTenant, resolve

REASON_PARAM = "reason"


NOTIFY_FIELDS = ("notify_emails", "notify_webhook")


class NotifyFieldsMixin(forms.Form):
    """A completion notice for the run staff start (jobs.notices), as the API's `notify`."""

    notify_emails = forms.CharField(
        required=False,
        max_length=2000,
        label="Notify by email",
        help_text="Comma-separated addresses: the run's summary and a link when it ends.",
    )
    notify_webhook = forms.CharField(
        required=False,
        max_length=2000,
        label="Notify a webhook",
        help_text="A URL: a signed JSON POST (with a Slack-compatible text) when it ends.",
    )

    def clean_notify(self) -> dict[str, Any] | None:
        emails = (self.cleaned_data.get("notify_emails") or "").strip()
        webhook = (self.cleaned_data.get("notify_webhook") or "").strip()
        if not emails and not webhook:
            return None
        value: dict[str, Any] = {}
        if emails:
            value["emails"] = [e.strip() for e in emails.replace(";", ",").split(",") if e.strip()]
        if webhook:
            value["webhook"] = webhook
        try:
            return clean_notify(value)
        except ValueError as exc:
            self.add_error("notify_webhook" if "webhook" in str(exc) else "notify_emails", str(exc))
            return None


class StartRunForm(NotifyFieldsMixin, ParamFormMixin, forms.Form):
    """Tenant, dry run and the job's own parameters (jobs.param_forms)."""

    tenant = forms.CharField(
        required=False,
        max_length=100,
        label="Organization",
        help_text="Type to search by key or name; empty: all organizations.",
        widget=forms.TextInput(
            attrs={"list": "tenant-choices", "autocomplete": "off", "data-tenant-search": "1"}
        ),
    )
    dry_run = forms.BooleanField(
        required=False,
        label="Dry run",
        help_text="Report what it would do; change nothing, send nothing.",
    )

    def __init__(self, *args: Any, spec: JobSpec, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec = spec
        params = spec.params
        if spec.ask_reason:  # asked on the confirmation page instead
            params = tuple(p for p in params if p.name != REASON_PARAM)
        self.add_param_fields(params)
        # Who and how first, then the job's own parameters; the notice last.
        self.order_fields([f for f in self.fields if f not in NOTIFY_FIELDS])

    def clean_tenant(self) -> str:
        key = self.cleaned_data["tenant"].strip()
        if not key:
            return ""
        if " (" in key and key.endswith(")"):  # a picked "Name (key)" label
            key = key.rsplit(" (", 1)[1][:-1]
        try:
            resolve(key)
        except UnknownTenant as exc:
            raise forms.ValidationError(str(exc)) from None
        return key

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        cleaned["params"] = self.clean_params()
        cleaned["notify"] = self.clean_notify()
        return cleaned


class ConfirmRunForm(NotifyFieldsMixin, forms.Form):
    """The real start after the preview; a reason when the job asks for one."""

    reason = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why: recorded with the run (and handed to the job).",
    )

    def __init__(self, *args: Any, spec: JobSpec, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec = spec
        self.fields["reason"].required = spec.ask_reason

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if self.spec.ask_reason and not reason:
            raise forms.ValidationError("A reason is required to start this job for real.")
        return reason

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        cleaned["notify"] = self.clean_notify()
        return cleaned


class CancelRunForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why the run is stopped; recorded with who stopped it.",
    )
