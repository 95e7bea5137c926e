"""Billing admin, one module per area."""

from billing.admin import analytics, invoices, usage  # noqa: F401
