"""Admin pages of alerts: rules (staff-managed), incidents and the delivery log."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from jobs.admin_readonly import ReadOnlyAdminMixin
from jobs.admin_views import RunPermissionAdminMixin
from jobs.alert_channels import channel_choices, get_channel
from jobs.alert_models import AlertCondition, AlertDelivery, AlertIncident, AlertRule
from jobs.registry import all_jobs

# What each condition needs besides job, channel and target.
NEEDS = {
    AlertCondition.SILENCE_SUCCESS: ("hours",),
    AlertCondition.SILENCE_ZERO: ("figure", "days"),
    AlertCondition.EXCESS_LIMIT: ("figure", "limit"),
    AlertCondition.EXCESS_MEDIAN: ("figure", "factor", "runs"),
}


class AlertRuleForm(forms.ModelForm):
    job = forms.ChoiceField(required=False)
    channel = forms.ChoiceField()
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Webhook: the HMAC-SHA256 signing secret. Blank keeps the stored one.",
    )

    class Meta:
        model = AlertRule
        fields = [
            "name",
            "enabled",
            "job",
            "condition",
            "figure",
            "hours",
            "days",
            "limit",
            "factor",
            "runs",
            "channel",
            "target",
            "secret",
            "cooldown_minutes",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["job"].choices = [("", "every job")] + [(s.name, s.name) for s in all_jobs()]
        self.fields["channel"].choices = channel_choices()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for field in NEEDS.get(data.get("condition"), ()):
            if data.get(field) in (None, ""):
                self.add_error(field, "This condition needs it.")
        if data.get("factor") is not None and data["factor"] <= 0:
            self.add_error("factor", "K must be above 0.")
        channel = data.get("channel")
        if channel and data.get("target"):
            try:
                data["target"] = get_channel(channel).validate_target(data["target"])
            except (LookupError, ValueError) as exc:
                self.add_error("target", str(exc))
        if not data.get("secret"):
            data["secret"] = self.instance.secret if self.instance.pk else ""
        if channel == "webhook" and not data["secret"]:
            self.add_error("secret", "A webhook needs a signing secret.")
        return data


@admin.register(AlertRule)
class AlertRuleAdmin(RunPermissionAdminMixin, admin.ModelAdmin):
    form = AlertRuleForm
    list_display = ["name", "enabled", "job_display", "condition", "channel", "cooldown_minutes"]
    list_filter = ["enabled", "condition", "channel"]
    search_fields = ["name", "job"]

    @admin.display(description="job", ordering="job")
    def job_display(self, obj: AlertRule) -> str:
        return obj.job or "every job"

    def save_model(self, request: HttpRequest, obj: AlertRule, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user.get_username()
        super().save_model(request, obj, form, change)


@admin.register(AlertIncident)
class AlertIncidentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["opened_at", "rule", "key", "state", "notified", "resolved_at", "message"]
    list_filter = ["state", "rule"]
    search_fields = ["key", "message"]
    list_select_related = ["rule"]
    show_full_result_count = False


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The delivery log: what went where, how often it was tried, what came back."""

    list_display = [
        "created_at",
        "incident_link",
        "kind",
        "channel",
        "status",
        "attempts",
        "response_code",
        "sent_at",
        "error",
    ]
    list_filter = ["status", "kind", "channel"]
    list_select_related = ["incident__rule"]
    show_full_result_count = False
    exclude = ["target"]  # a webhook URL may hold a token

    @admin.display(description="incident")
    def incident_link(self, obj: AlertDelivery) -> str:
        url = reverse("admin:jobs_alertincident_change", args=[obj.incident_id])
        return format_html('<a href="{}">{} · {}</a>', url, obj.incident.rule, obj.incident.key)
