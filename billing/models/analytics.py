"""Daily per-organization figures, rebuilt for a day by billing.aggregate_daily_analytics."""

from __future__ import annotations

from django.db import models
from django.utils import timezone as django_timezone


class DailyMetrics(models.Model):
    organization = models.ForeignKey(
        "subscriptions.Organization",
        on_delete=models.CASCADE,
        related_name="daily_metrics",
        db_index=False,  # led by dailymetrics_unique_day
    )
    day = models.DateField()
    currency = models.CharField(max_length=3, blank=True, default="")
    revenue_minor = models.BigIntegerField(default=0)
    new_subscriptions = models.IntegerField(default=0)
    churned_subscriptions = models.IntegerField(default=0)
    active_subscriptions = models.IntegerField(default=0)
    mrr_minor = models.BigIntegerField(default=0)
    usage = models.JSONField(default=dict, blank=True, help_text="Totals per metric code.")
    computed_at = models.DateTimeField(default=django_timezone.now)

    class Meta:
        ordering = ["organization", "-day"]
        verbose_name_plural = "daily metrics"
        constraints = [
            models.UniqueConstraint(fields=["organization", "day"], name="dailymetrics_unique_day"),
        ]
        indexes = [models.Index(fields=["day"], name="dailymetrics_day_idx")]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.day}"
