"""Billing jobs: invoices."""
