"""The audit trail's admin list: filters, prefix search, before/after and pause reasons."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.selectors import recorded_actions
from jobs.schedules import pause, sync_schedules
from tests.factories import AuditTrailFactory

pytestmark = pytest.mark.django_db

URL = "admin:audit_audittrail_changelist"


def test_the_list_shows_before_and_after_and_a_pause_reason(admin_client, register_job):
    @register_job("tests.audit_paused", schedule="0 * * * *")
    def paused(ctx):
        return {}

    sync_schedules()
    pause("tests.audit_paused", actor="alice", reason="provider maintenance")

    html = admin_client.get(reverse(URL)).content.decode()

    assert "provider maintenance" in html
    assert "False → True" in html  # paused: before → after


def test_filters_by_action_and_actor_kind_and_searches_by_prefix(admin_client):
    AuditTrailFactory(actor="user:alice", action="subscription.expired", object_id="41")
    AuditTrailFactory(actor="job:subscriptions.expire#7", action="subscription.suspended")
    AuditTrailFactory(actor="api:billing-bot", action="invoice.issued", object_id="inv-2026-9")

    def shown(**params) -> list[str]:
        response = admin_client.get(reverse(URL), params)
        assert response.status_code == 200
        return sorted(r.action for r in response.context["cl"].result_list)

    assert shown(action="invoice.issued") == ["invoice.issued"]
    assert shown(actor_kind="job:") == ["subscription.suspended"]
    assert shown(q="subscription.") == ["subscription.expired", "subscription.suspended"]
    assert shown(q="user:ali") == ["subscription.expired"]
    assert shown(q="inv-2026") == ["invoice.issued"]
    filters = admin_client.get(reverse(URL)).content.decode()
    assert "?action=invoice.issued" in filters and "Past 7 days" in filters


def test_the_action_filter_offers_every_recorded_action_however_old(admin_client):
    """Its choices come from the action index, not from the newest records only."""
    AuditTrailFactory(action="invoice.voided", at=timezone.now() - timedelta(days=900))
    AuditTrailFactory.create_batch(3, action="subscription.expired")
    AuditTrailFactory(action="api_key.created")

    assert recorded_actions() == ["api_key.created", "invoice.voided", "subscription.expired"]
    filters = admin_client.get(reverse(URL)).content.decode()
    assert "?action=invoice.voided" in filters
