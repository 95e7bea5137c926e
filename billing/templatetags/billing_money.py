"""`{{ amount_minor|money:currency }}`: money in major units where a person reads it."""

from __future__ import annotations

from django import template

from billing.services.pdf import format_money

register = template.Library()


@register.filter
def money(amount_minor: int | None, currency: str = "") -> str:
    if amount_minor is None:
        return ""
    return format_money(int(amount_minor), currency or "")
