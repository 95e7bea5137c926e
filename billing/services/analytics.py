"""Billing services: analytics."""
