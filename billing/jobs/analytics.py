"""Billing jobs: analytics."""
