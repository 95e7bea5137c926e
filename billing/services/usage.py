"""Billing services: usage."""
