"""The usage and analytics admin: read-only evidence, editable metrics, the 30-day chart."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from billing.models import (
    AggregationType,
    BillableMetric,
    DailyMetrics,
    PlanMetricPrice,
    UsageAggregate,
    UsageEvent,
)
from tests.factories import OrganizationFactory, PlanFactory, UserFactory

pytestmark = pytest.mark.django_db

END = date(2026, 11, 1)


@pytest.fixture
def data():
    org = OrganizationFactory(key="org_acme")
    metric = BillableMetric.objects.create(
        code="api_calls", name="API calls", aggregation=AggregationType.SUM
    )
    PlanMetricPrice.objects.create(plan=PlanFactory(), metric=metric, unit_price_minor=2)
    at = datetime(2026, 11, 1, 10, tzinfo=UTC)
    UsageEvent.objects.create(
        organization=org, metric="api_calls", quantity=3, occurred_at=at, idempotency_key="k1"
    )
    UsageAggregate.objects.create(
        organization=org, metric="api_calls", hour=at, total=3, event_count=1
    )
    for i in range(5):
        DailyMetrics.objects.create(
            organization=org,
            day=END - timedelta(days=i * 2),
            currency="EUR",
            revenue_minor=1000 * (i + 1),
            new_subscriptions=i,
            churned_subscriptions=1,
            active_subscriptions=10 + i,
            mrr_minor=29_000 + i * 100,
            usage={"api_calls": 100 * i, "storage_gb": 7},
        )
    return org


@pytest.mark.parametrize(
    "model",
    [
        "billing_billablemetric",
        "billing_planmetricprice",
        "billing_usageevent",
        "billing_usageaggregate",
        "billing_usagelatehour",
        "billing_dailymetrics",
    ],
)
def test_admin_lists_and_searches_the_models(admin_client, data, model):
    url = reverse(f"admin:{model}_changelist")

    assert admin_client.get(url).status_code == 200
    assert admin_client.get(url, {"q": "org_acme"}).status_code == 200


def test_events_and_aggregates_are_read_only_and_never_count_the_table(admin_client, data):
    response = admin_client.get(reverse("admin:billing_usageevent_changelist"))

    assert response.context["cl"].show_full_result_count is False
    assert not response.context["has_add_permission"]
    event = UsageEvent.objects.get()
    change = admin_client.post(
        reverse("admin:billing_usageevent_change", args=[event.pk]), {"quantity": 99}
    )
    assert change.status_code == 403
    assert UsageEvent.objects.get().quantity == 3
    filtered = admin_client.get(
        reverse("admin:billing_usageaggregate_changelist"), {"metric": "api_calls"}
    )
    assert filtered.status_code == 200
    assert list(filtered.context["cl"].result_list) == list(UsageAggregate.objects.all())


def test_the_chart_draws_thirty_days_of_one_organization(admin_client, data):
    url = reverse("admin:billing_dailymetrics_chart")

    response = admin_client.get(url, {"organization": "org_acme", "end": END.isoformat()})

    assert response.status_code == 200
    html = response.content.decode()
    # revenue, MRR, active, new/churned, and one per usage metric
    assert html.count('<svg class="billing-chart"') == 6
    assert "Usage: storage_gb" in html
    content = html[html.index('class="billing-chart-form"') :]
    assert "<script" not in content and "//" not in content.split("</table>")[0].replace(
        "http://www.w3.org", ""
    )
    assert len(response.context["series"]) == 30
    assert "2026-11-01 revenue: 10.00" in html
    # by id too, and reachable from the changelist
    assert admin_client.get(url, {"organization": data.pk}).status_code == 200
    changelist = admin_client.get(reverse("admin:billing_dailymetrics_changelist")).content
    assert url.encode() in changelist


def test_the_chart_says_so_when_there_is_nothing_to_draw(admin_client, data):
    url = reverse("admin:billing_dailymetrics_chart")

    assert b"No organization nope" in admin_client.get(url, {"organization": "nope"}).content
    empty = admin_client.get(url, {"organization": "org_acme", "end": "2020-01-01"})
    assert b"No daily figures" in empty.content
    assert admin_client.get(url).status_code == 200


def test_the_chart_needs_the_view_permission(client, data):
    user = UserFactory(is_staff=True)
    client.force_login(user)
    url = reverse("admin:billing_dailymetrics_chart")

    assert client.get(url, {"organization": "org_acme"}).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_dailymetrics"))
    assert client.get(url, {"organization": "org_acme"}).status_code == 200


def test_the_chart_page_offers_an_organization_picker_instead_of_a_blank_page(admin_client, data):
    OrganizationFactory(key="org_zen", name="Zen Labs")

    html = admin_client.get(reverse("admin:billing_dailymetrics_chart")).content.decode()

    picker = html.split('id="organization-picker"')[1]
    assert "?organization=org_acme" in picker and "Zen Labs (org_zen)" in picker
    assert 'list="tenant-choices"' in html and reverse("jobs_tenant_search") in html
    found = admin_client.get(reverse("jobs_tenant_search"), {"q": "Zen"}).json()["results"]
    assert found == [{"key": "org_zen", "label": "Zen Labs (org_zen)"}]
