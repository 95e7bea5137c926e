"""What the console shows a person: money in major units, summaries as
labelled values, dry-run previews in words, cron in words, times with zone."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from cron_descriptor import Options, get_description
from django.conf import settings

# ISO 4217 currencies without minor units (the rest have two).
ZERO_DECIMAL = {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND"}
THREE_DECIMAL = {"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"}
# Summary keys that are internal plumbing, not news for a person.
HIDDEN_KEYS = {"dry_run"}


def money(amount_minor: int | float, currency: str) -> str:
    """`647313, "EUR"` -> `EUR 6,473.13`: integer minor units in major units."""
    code = (currency or "").upper()
    places = 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2
    value = amount_minor / (10**places)
    return f"{code} {value:,.{places}f}".strip()


def label(key: str) -> str:
    """`would_bill_minor` -> `Would bill`: a label, not an internal name."""
    words = key.removesuffix("_minor").replace("_", " ").strip()
    return (words[:1].upper() + words[1:]) or key


def value_text(key: str, value: Any, siblings: dict[str, Any] | None = None) -> str:
    """One summary value in words; money keys (`*_minor`) in major units."""
    siblings = siblings or {}
    if key.endswith("_minor"):
        if isinstance(value, dict):
            return ", ".join(money(v, c) for c, v in sorted(value.items()) if _is_number(v)) or "-"
        if _is_number(value) and siblings.get("currency"):
            return money(value, str(siblings["currency"]))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _is_number(value):
        return f"{value:,}"
    if value is None or value == "":
        return "-"
    if isinstance(value, dict):
        parts = [f"{label(k)}: {value_text(k, v, value)}" for k, v in list(value.items())[:10]]
        more = len(value) - 10
        return "; ".join(parts) + (f"; and {more:,} more" if more > 0 else "")
    if isinstance(value, list):
        shown = ", ".join(value_text(key, v) for v in value[:10])
        return shown + (f", and {len(value) - 10:,} more" if len(value) > 10 else "")
    return str(value)


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The run summary as (label, value) rows for a table."""
    if not isinstance(summary, dict):
        return [("Summary", str(summary))]
    return [
        (label(k), value_text(k, v, summary)) for k, v in summary.items() if k not in HIDDEN_KEYS
    ]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def preview_sentence(preview: Any, summary: dict[str, Any], counts: dict[str, int]) -> str:
    """What a dry run says a real run will do, in words: the job's own
    `preview(summary)` when it declares one, else its `would_*` numbers."""
    if preview is not None:
        try:
            return str(preview(summary or {}))
        except Exception:  # a preview is a courtesy; the table below still shows it all
            pass
    parts = []
    for key, value in (summary or {}).items():
        if not key.startswith("would_"):
            continue
        if _is_number(value) or (key.endswith("_minor") and isinstance(value, dict)):
            what = key.removeprefix("would_").removesuffix("_minor").replace("_", " ")
            parts.append(f"{what} {value_text(key, value)}")
    if not parts:
        processed = counts.get("processed", 0)
        parts.append(f"processes {processed:,} item{'s' if processed != 1 else ''}")
    return "; ".join(parts)


def cron_in_words(cron: str | None, tz: str | None = None) -> str:
    """`0 9 * * *` -> `At 09:00 (Europe/Berlin)`. Takes the stored form
    (jobs.cron.normalize_cron: seconds last); cron-descriptor reads seconds first."""
    if not cron:
        return ""
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = False
    fields = cron.split()
    if len(fields) == 6:
        fields = [fields[5], *fields[:5]]
    try:
        text = get_description(" ".join(fields), options)
    except Exception:
        return ""
    return f"{text} ({tz or settings.SCHEDULER_TIMEZONE})"


def when(value: datetime | None, tz: str = "UTC") -> str:
    """`2026-12-01 23:59:07 UTC`: seconds and the zone, always."""
    if value is None:
        return "-"
    zone = ZoneInfo(tz)
    return f"{value.astimezone(zone):%Y-%m-%d %H:%M:%S} {tz}"
