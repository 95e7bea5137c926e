"""Forms of the console's "Run now…", confirmation and cancel pages."""

from __future__ import annotations

from typing import Any

from django import forms

from jobs.param_forms import ParamFormMixin
from jobs.registry import JobSpec
from jobs.tenants import UnknownTenant, resolve

REASON_PARAM = "reason"


class StartRunForm(ParamFormMixin, forms.Form):
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
        return cleaned


class ConfirmRunForm(forms.Form):
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


class CancelRunForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why the run is stopped; recorded with who stopped it.",
    )
