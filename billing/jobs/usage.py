"""Billing jobs: usage."""
