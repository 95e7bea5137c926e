"""Billing admin: usage."""
