"""Panels on the jobs overview page that business apps contribute.

The platform knows no business app, so an app registers a title and a
function returning a few counts (e.g. the email outbox per status) in its
`AppConfig.ready`, and the overview shows them beside the jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.urls import reverse

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Panel:
    title: str
    counts: Callable[[], dict[str, int]]
    url_name: str | None = None


_PANELS: dict[str, Panel] = {}


def register_panel(
    title: str, counts: Callable[[], dict[str, int]], *, url_name: str | None = None
) -> None:
    """`counts()` should be one cheap query; `url_name` links the panel's title."""
    _PANELS[title] = Panel(title, counts, url_name)


def overview_panels() -> list[dict[str, Any]]:
    """Each panel's counts; a panel that fails shows its error, not a 500."""
    shown = []
    for panel in _PANELS.values():
        url = reverse(panel.url_name) if panel.url_name else None
        entry: dict[str, Any] = {"title": panel.title, "counts": {}, "url": url, "error": ""}
        try:
            entry["counts"] = panel.counts()
        except Exception as exc:
            logger.exception("overview panel %r failed", panel.title)
            entry["error"] = f"{type(exc).__name__}: could not be read"
        shown.append(entry)
    return shown
