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


_searcher: Callable[[str, int], list[tuple[str, str]]] | None = None


def register_search(searcher: Callable[[str, int], list[tuple[str, str]]]) -> None:
    """`searcher(term, limit)` returns up to `limit` (key, label) pairs matching
    `term`, cheaply on a large tenant table (the admin's tenant picker)."""
    global _searcher
    _searcher = searcher


def search(term: str, *, limit: int = 20) -> list[tuple[str, str]]:
    """Tenants whose key or name matches `term`; empty when none is registered."""
    if _searcher is None:
        return []
    return list(_searcher(term.strip()[:100], limit))[:limit]
