"""Billing services: invoices."""
