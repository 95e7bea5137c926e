"""Billing writes, one module per area."""
