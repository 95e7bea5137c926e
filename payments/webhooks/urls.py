"""Mounted at "webhooks/stripe/" (config/urls.py)."""

from django.urls import path

from payments.webhooks import views as webhook_views

app_name = "stripe-webhooks"

urlpatterns = [
    path("<str:tenant_key>", webhook_views.stripe_webhook, name="receive"),
]
