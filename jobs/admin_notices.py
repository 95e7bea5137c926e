"""Admin pages of completion notices (per schedule, or per run) and their deliveries."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from jobs.admin_readonly import ReadOnlyAdminMixin
from jobs.admin_views import RunPermissionAdminMixin
from jobs.alert_channels import get_channel
from jobs.alert_models import CompletionNotice, NoticeDelivery


class CompletionNoticeForm(forms.ModelForm):
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Signs the webhook (HMAC-SHA256). Blank keeps the stored one "
        "(or JOBS_NOTICE_WEBHOOK_SECRET when none is stored).",
    )

    class Meta:
        model = CompletionNotice
        fields = ["schedule", "run", "when", "emails", "webhook_url", "secret"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if bool(data.get("schedule")) == bool(data.get("run")):
            raise forms.ValidationError("Choose a schedule (every run) or one run, not both.")
        if not data.get("emails") and not data.get("webhook_url"):
            raise forms.ValidationError("Give email recipients, a webhook, or both.")
        for field, channel in (("emails", "email"), ("webhook_url", "webhook")):
            if data.get(field):
                try:
                    data[field] = get_channel(channel).validate_target(data[field])
                except (LookupError, ValueError) as exc:
                    self.add_error(field, str(exc))
        if not data.get("secret") and self.instance.pk:
            data["secret"] = self.instance.secret
        return data


@admin.register(CompletionNotice)
class CompletionNoticeAdmin(RunPermissionAdminMixin, admin.ModelAdmin):
    form = CompletionNoticeForm
    list_display = ["__str__", "when", "emails", "has_webhook", "created_by", "created_at"]
    list_filter = ["when"]
    raw_id_fields = ["run"]
    list_select_related = ["schedule"]

    @admin.display(description="webhook", boolean=True)
    def has_webhook(self, obj: CompletionNotice) -> bool:
        return bool(obj.webhook_url)

    def save_model(
        self, request: HttpRequest, obj: CompletionNotice, form: Any, change: bool
    ) -> None:
        if not change:
            obj.created_by = request.user.get_username()
        super().save_model(request, obj, form, change)


@admin.register(NoticeDelivery)
class NoticeDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "run_link",
        "channel",
        "status",
        "attempts",
        "response_code",
        "sent_at",
        "error",
    ]
    list_filter = ["status", "channel"]
    show_full_result_count = False
    exclude = ["target"]  # a webhook URL may hold a token

    @admin.display(description="run")
    def run_link(self, obj: NoticeDelivery) -> str:
        url = reverse("admin:jobs_jobrun_change", args=[obj.run_id])
        return format_html('<a href="{}">#{}</a>', url, obj.run_id)
