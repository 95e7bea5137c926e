"""Billing admin: analytics."""
