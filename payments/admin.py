"""Admin for tenants' payment provider keys (always masked) and payments."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Max
from django.http import HttpRequest

from audit.admin_audit import AuditedAdminMixin
from payments.crypto import encrypt
from payments.models import Payment, PaymentProviderConfig
from payments.services import set_provider_keys


class PaymentProviderConfigForm(forms.ModelForm):
    """Keys are write-only: a blank field keeps the stored (encrypted) value."""

    secret_key = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="sk_live_… or sk_test_…; leave blank to keep the current key.",
    )
    webhook_secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="whsec_…; leave blank to keep the current secret.",
    )

    class Meta:
        model = PaymentProviderConfig
        fields = ("organization", "provider", "publishable_key", "enabled", "requests_per_second")

    def clean_secret_key(self) -> str:
        key = self.cleaned_data["secret_key"]
        if key and not key.startswith(("sk_", "rk_")):
            raise forms.ValidationError(
                "A Stripe secret key starts with sk_ (or rk_ if restricted)."
            )
        return key

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        has_key = bool(data.get("secret_key")) or bool(
            self.instance.pk and self.instance.secret_key_encrypted
        )
        if data.get("enabled") and not has_key:
            self.add_error("secret_key", "Set a secret key before enabling the gateway.")
        if data.get("secret_key"):
            # So the model's "enabled needs a key" constraint validates; the
            # service encrypts and stores it again on save.
            self.instance.secret_key_encrypted = encrypt(data["secret_key"])
        return data


@admin.register(PaymentProviderConfig)
class PaymentProviderConfigAdmin(admin.ModelAdmin):
    form = PaymentProviderConfigForm
    list_display = (
        "organization",
        "provider",
        "masked_secret_key",
        "enabled",
        "last_webhook_received",
        "updated_at",
    )
    list_filter = ("provider", "enabled")
    list_select_related = ("organization",)
    search_fields = ("organization__key", "organization__name")
    raw_id_fields = ("organization",)
    readonly_fields = (
        "masked_secret_key",
        "has_webhook_secret",
        "last_webhook_received",
        "created_at",
        "updated_at",
    )

    def get_queryset(self, request: HttpRequest) -> Any:
        return (
            super()
            .get_queryset(request)
            .annotate(last_webhook=Max("organization__stripe_webhook_events__received_at"))
        )

    @admin.display(description="Last webhook received", ordering="last_webhook")
    def last_webhook_received(self, obj: PaymentProviderConfig) -> Any:
        return getattr(obj, "last_webhook", None) or "—"

    @admin.display(description="Secret key")
    def masked_secret_key(self, obj: PaymentProviderConfig) -> str:
        return obj.masked_secret_key or "—"

    @admin.display(description="Webhook secret set", boolean=True)
    def has_webhook_secret(self, obj: PaymentProviderConfig) -> bool:
        return bool(obj.webhook_secret_encrypted)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = tuple(self.readonly_fields)
        return (*fields, "organization") if obj else fields

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        """Through the service: it encrypts, audits without the secret and drops
        cached clients."""
        data = form.cleaned_data
        saved = set_provider_keys(
            organization=obj.organization,
            actor=f"user:{request.user.get_username()}",
            secret_key=data.get("secret_key") or None,
            webhook_secret=data.get("webhook_secret") or None,
            publishable_key=data.get("publishable_key", ""),
            enabled=data.get("enabled", False),
            requests_per_second=data.get("requests_per_second") or 0,
            provider=data.get("provider") or obj.provider,
        )
        obj.pk = saved.pk
        obj.refresh_from_db()


@admin.register(Payment)
class PaymentAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "organization",
        "subscription",
        "amount_minor",
        "currency",
        "status",
        "provider_reference",
        "attempts",
        "last_checked_at",
        "created_at",
    )
    list_filter = ("status", "currency")
    list_select_related = ("organization",)
    search_fields = ("=id", "=provider_reference", "organization__key")
    raw_id_fields = ("organization", "subscription")
    # Statuses change only through payments.reconcile (audited, with their
    # subscriptions): a hand edit could skip both.
    readonly_fields = (
        "status",
        "provider_reference",
        "attempts",
        "last_checked_at",
        "succeeded_at",
        "failure_reason",
    )
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        """A recorded payment's amount and currency are what the provider charged."""
        fields = tuple(self.readonly_fields)
        return (*fields, "amount_minor", "currency") if obj else fields


from payments.webhooks import admin as webhook_admin  # noqa: E402, F401 - registers the webhook events' admin
