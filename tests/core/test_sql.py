from datetime import UTC, datetime

import pytest

from core.sql import UtcText
from subscriptions.models import Subscription
from tests.factories import SubscriptionFactory

pytestmark = pytest.mark.django_db


def test_utc_text_formats_a_timestamp_in_the_database_whatever_its_zone():
    end = datetime(2026, 3, 1, 12, 5, 7, 123456, tzinfo=UTC)
    SubscriptionFactory(current_period_end=end)

    row = Subscription.objects.values(
        minute=UtcText("current_period_end"), key=UtcText("current_period_end", seconds=True)
    ).get()

    assert row == {"minute": "2026-03-01 12:05", "key": "2026-03-01T12:05:07"}
