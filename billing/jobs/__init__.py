"""Billing jobs, one module per area; importing this package registers them."""

from billing.jobs import analytics, invoices, usage  # noqa: F401
