"""How the platform finds a tenant without knowing the business model.

The app that owns tenants registers a resolver in its `AppConfig.ready`; the
runner and the API use it to validate a tenant key and hand the object to the
job's context.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class UnknownTenant(LookupError):
    pass


_resolver: Callable[[str], Any] | None = None


def register_resolver(resolver: Callable[[str], Any]) -> None:
    """`resolver(key)` returns the tenant object or raises LookupError."""
    global _resolver
    _resolver = resolver


def resolve(key: str) -> Any:
    if not key:
        return None
    if _resolver is None:
        raise UnknownTenant(f"unknown tenant {key!r} (no tenant resolver registered)")
    try:
        return _resolver(key)
    except LookupError:
        raise UnknownTenant(f"unknown tenant {key!r}") from None
